package leadership

import (
	"context"
	"testing"
	"time"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// cancelled is a context already done: Next with it reports what has
// already happened, or Cancelled, and never blocks.
func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// lockLog applies commands to a real lock state machine and hands every
// result to the core, as the FSM does on a node.
type lockLog struct {
	t     *testing.T
	m     *lockstate.Machine
	c     *Core
	index uint64
	seq   map[uint64]uint64
}

func newLockLog(t *testing.T, c *Core) *lockLog {
	m := lockstate.New(lockstate.Limits{Files: 1, MaxOutstanding: 16, MaxEnded: 16})
	return &lockLog{t: t, m: m, c: c, seq: make(map[uint64]uint64)}
}

func (l *lockLog) apply(cmd *raftlogv1.Command) lockstate.Result {
	l.index++
	res := l.m.Apply(l.index, cmd)
	l.c.Applied(res)
	return res
}

func (l *lockLog) open() uint64 {
	res := l.apply(&raftlogv1.Command{Op: &raftlogv1.Command_OpenSession{OpenSession: &raftlogv1.OpenSession{Secret: "s", LeaseMs: 10_000}}})
	return res.ClientID
}

func (l *lockLog) caller(id uint64) *raftlogv1.Caller {
	l.seq[id]++
	return &raftlogv1.Caller{ClientId: id, Secret: "s", Seq: l.seq[id]}
}

func (l *lockLog) acquire(id uint64) {
	l.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Acquire{Acquire: &raftlogv1.Acquire{Caller: l.caller(id)}}})
}

func (l *lockLog) release(id uint64) {
	l.t.Helper()
	token := l.m.HeldToken(id)
	if token == 0 {
		l.t.Fatalf("session %d holds no lock to release", id)
	}
	l.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Release{Release: &raftlogv1.Release{Caller: l.caller(id), Token: token}}})
}

func expect(t *testing.T, w *Wait, want Event, what string) {
	t.Helper()
	if got := w.Next(cancelled(), nil); got != want {
		t.Fatalf("%s: %v; want %v", what, got, want)
	}
}

// Waiters are woken in the queue's order, one grant at a time: a release
// wakes the next waiter in line and no one else.
func TestGrantsWakeWaitersInQueueOrder(t *testing.T) {
	c, _ := leading(t)
	term, _ := c.Current()
	l := newLockLog(t, c)
	a, b, d := l.open(), l.open(), l.open()
	l.acquire(a)
	wb := c.Watch(term, b, time.Minute)
	wd := c.Watch(term, d, time.Minute)
	defer wb.Close()
	defer wd.Close()
	l.acquire(b)
	l.acquire(d)
	expect(t, wb, Cancelled, "b, queued first, before any release")
	expect(t, wd, Cancelled, "d, queued second, before any release")
	l.release(a)
	expect(t, wd, Cancelled, "d, second in line, after the first release")
	expect(t, wb, Woken, "b, first in line, after the first release")
	if l.m.HeldToken(b) == 0 {
		t.Fatal("the woken waiter does not hold the lock")
	}
	expect(t, wb, Cancelled, "b, woken once, again")
	l.release(b)
	expect(t, wd, Woken, "d after the second release")
}

// A waiter watches from Watch on, so a grant applied between the watch and
// Next (while the caller reads the state) is not missed.
func TestWatchCatchesAnEventBeforeNext(t *testing.T) {
	c, _ := leading(t)
	term, _ := c.Current()
	w := c.Watch(term, 7, time.Minute)
	defer w.Close()
	c.Applied(lockstate.Result{Grants: []lockstate.Grant{{ClientID: 7, Token: 3}}})
	expect(t, w, Woken, "a grant applied between Watch and Next")
}

// Every wait on a session is woken by its event, and a session's end wakes
// its waiters.
func TestSessionEventWakesAllItsWaiters(t *testing.T) {
	c, _ := leading(t)
	term, _ := c.Current()
	w1, w2, other := c.Watch(term, 7, time.Minute), c.Watch(term, 7, time.Minute), c.Watch(term, 8, time.Minute)
	defer w1.Close()
	defer w2.Close()
	defer other.Close()
	c.Applied(lockstate.Result{Ended: []uint64{7}})
	expect(t, w1, Woken, "the first wait on an ended session")
	expect(t, w2, Woken, "the second wait on an ended session")
	expect(t, other, Cancelled, "a wait on another session")
}

// The end of a term wakes its waiters with Lost, and a blocked Next returns
// at once.
func TestTermEndWakesWaiters(t *testing.T) {
	c, _ := leading(t)
	term, _ := c.Current()
	w := c.Watch(term, 7, time.Minute)
	defer w.Close()
	got := make(chan Event, 1)
	go func() { got <- w.Next(context.Background(), nil) }()
	c.End()
	select {
	case e := <-got:
		if e != Lost {
			t.Fatalf("a waiter of an ended term got %v; want lost", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the end of the term did not wake its waiter")
	}
	stop := make(chan struct{})
	close(stop)
	w2 := c.Watch(c.Begin(nil, nil), 8, time.Minute)
	defer w2.Close()
	if e := w2.Next(context.Background(), stop); e != Stopped {
		t.Fatalf("a waiter of a stopping node got %v; want stopped", e)
	}
}

// A wait lasts its limit on the clock, to the millisecond, counted from
// its first Next; an event at the same moment wins over the limit.
func TestWaitLimit(t *testing.T) {
	c, clk := leading(t)
	term, _ := c.Current()
	w := c.Watch(term, 7, 5*time.Second)
	defer w.Close()
	expect(t, w, Cancelled, "a fresh wait")
	clk.Advance(5*time.Second - time.Millisecond)
	expect(t, w, Cancelled, "a wait 1ms before its limit")
	got := make(chan Event, 1)
	go func() { got <- w.Next(context.Background(), nil) }()
	clk.Advance(time.Millisecond)
	select {
	case e := <-got:
		if e != TimedOut {
			t.Fatalf("at its limit a wait got %v; want timed out", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a wait outlived its limit")
	}

	w2 := c.Watch(term, 8, time.Second)
	defer w2.Close()
	expect(t, w2, Cancelled, "a fresh wait")
	clk.Advance(time.Second)
	c.Applied(lockstate.Result{Grants: []lockstate.Grant{{ClientID: 8, Token: 9}}})
	expect(t, w2, Woken, "a grant at the limit")
	expect(t, w2, TimedOut, "the limit after the grant was read")
}
