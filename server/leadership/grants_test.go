package leadership

import (
	"testing"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// A no_wait acquire's grant goes to the listener of its session, once, and
// only for the seq recorded; a full listener drops grants instead of
// blocking the apply.
func TestGrantsReachTheSessionsListener(t *testing.T) {
	clock := newFakeClock()
	c := New(clock)
	c.Begin(nil, nil)
	log := newLockLog(t, c)
	holder, a, b := log.open(), log.open(), log.open()
	log.acquire(holder)
	la, lb := c.NewListener(4), c.NewListener(1)
	c.Listen(la, a)
	c.Listen(lb, b)
	c.NoWait(a, log.seq[a]+1)
	log.acquire(a)
	// b waits with a parked call: no listener hears of its grant.
	log.acquire(b)
	log.release(holder)
	select {
	case g := <-la.C():
		if g.ClientID != a || g.Seq != log.seq[a] || g.Token == 0 {
			t.Fatalf("grant %+v, want session %d seq %d", g, a, log.seq[a])
		}
	default:
		t.Fatal("no grant reached a's listener")
	}
	log.release(a)
	select {
	case g := <-lb.C():
		t.Fatalf("b's listener heard %+v, but b did not ask with no_wait", g)
	default:
	}
	if l, n := c.Listening(); l != 2 || n != 0 {
		t.Fatalf("listening %d, no_waits %d; want 2 and 0", l, n)
	}
	// A session that moves to another stream is heard there only.
	c.Listen(lb, a)
	c.Unlisten(la)
	if l, _ := c.Listening(); l != 2 {
		t.Fatalf("after a moved, listening %d, want 2", l)
	}
	c.Unlisten(lb)
	if l, _ := c.Listening(); l != 0 {
		t.Fatalf("after both streams ended, listening %d", l)
	}
	// The end of a term forgets everything.
	c.Listen(la, a)
	c.NoWait(b, 99)
	c.End()
	if l, n := c.Listening(); l != 0 || n != 0 {
		t.Fatalf("after the term, listening %d, no_waits %d", l, n)
	}
}

func TestFullListenerDropsGrants(t *testing.T) {
	c := New(newFakeClock())
	c.Begin(nil, nil)
	log := newLockLog(t, c)
	holder := log.open()
	log.acquire(holder)
	l := c.NewListener(1)
	var ids []uint64
	for range 3 {
		id := log.open()
		ids = append(ids, id)
		c.Listen(l, id)
		c.NoWait(id, log.seq[id]+1)
		log.acquire(id)
	}
	log.release(holder)
	log.release(ids[0])
	log.release(ids[1])
	if got := len(l.C()); got != 1 {
		t.Fatalf("queue holds %d grants, want 1", got)
	}
	if l.Dropped() != 2 {
		t.Fatalf("dropped %d, want 2", l.Dropped())
	}
}

// A session waits for several locks at once, each under its own seq: the
// grant of each reaches its listener with the lock and mode, once; an
// acquire answered at once is forgotten; the table stays bounded.
func TestGrantsOfSeveralLocksPerSession(t *testing.T) {
	c := New(newFakeClock())
	c.Begin(nil, nil)
	const a = 1
	l := c.NewListener(8)
	c.Listen(l, a)
	c.NoWait(a, 5)
	c.NoWait(a, 6)
	c.NoWait(a, 7)
	c.Answered(a, 7)
	if _, n := c.Listening(); n != 2 {
		t.Fatalf("no_waits %d, want 2", n)
	}
	c.Applied(lockstate.Result{Grants: []lockstate.Grant{
		{ClientID: a, Seq: 6, Token: 40, Lock: "jobs", Mode: dlmv1.LockMode_LOCK_MODE_SHARED},
		{ClientID: a, Seq: 7, Token: 41, Lock: "other"},
	}})
	c.Applied(lockstate.Result{Grants: []lockstate.Grant{{ClientID: a, Seq: 5, Token: 42, Lock: ""}}})
	c.Applied(lockstate.Result{Grants: []lockstate.Grant{{ClientID: a, Seq: 6, Token: 43, Lock: "jobs"}}})
	want := []Granted{
		{ClientID: a, Seq: 6, Token: 40, Lock: "jobs", Mode: dlmv1.LockMode_LOCK_MODE_SHARED},
		{ClientID: a, Seq: 5, Token: 42},
	}
	for _, w := range want {
		select {
		case g := <-l.C():
			if g != w {
				t.Fatalf("grant %+v, want %+v", g, w)
			}
		default:
			t.Fatalf("no grant; want %+v", w)
		}
	}
	if len(l.C()) != 0 {
		t.Fatalf("%d more grants; each seq is reported once, and an answered one never", len(l.C()))
	}
	for seq := range uint64(MaxNoWaits + 10) {
		c.NoWait(a, 100+seq)
	}
	if _, n := c.Listening(); n != MaxNoWaits {
		t.Fatalf("no_waits %d, want the bound %d", n, MaxNoWaits)
	}
}
