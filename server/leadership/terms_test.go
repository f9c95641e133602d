package leadership

import (
	"context"
	"testing"
	"time"

	"github.com/dlm/dlm/server/lockstate"
)

// A follower keeps no leases: it promises none and times none.
func TestFollowerPromisesNoLease(t *testing.T) {
	clk := newFakeClock()
	c := New(clk)
	c.Applied(lockstate.Result{ClientID: 1, LeaseMs: 1000})
	if c.Renew(1, time.Second) {
		t.Fatal("a follower promised a lease")
	}
	if left := c.Left(1); left != 0 {
		t.Fatalf("a follower shows %v of lease", left)
	}
	clk.Advance(time.Hour)
	if ids := due(c); len(ids) != 0 {
		t.Fatalf("a follower would expire %v", ids)
	}
	if term, _ := c.Current(); term != nil {
		t.Fatal("a new core leads")
	}
}

// A new term gives every session a full lease from its start, however
// little the last term had left, and nothing of the last term survives its
// end.
func TestNewTermGivesFullFreshLeases(t *testing.T) {
	c, clk := leading(t, session(1, time.Second), session(2, 2*time.Second))
	first, changed := c.Current()
	clk.Advance(900 * time.Millisecond)
	c.Renew(2, 10*time.Second)
	if !c.End() {
		t.Fatal("End found no term")
	}
	select {
	case <-first.Lost():
	default:
		t.Fatal("the ended term is not lost")
	}
	select {
	case <-changed:
	default:
		t.Fatal("the end of a term signalled no change")
	}
	if term, _ := c.Current(); term != nil {
		t.Fatal("a term is current after End")
	}
	if c.Left(1) != 0 || c.Left(2) != 0 || c.Renew(1, time.Second) {
		t.Fatal("leases outlived their term")
	}
	clk.Advance(time.Hour)
	if ids := due(c); len(ids) != 0 {
		t.Fatalf("an ended term would expire %v", ids)
	}
	if c.End() {
		t.Fatal("End ended a term twice")
	}

	second := c.Begin([]lockstate.SessionInfo{session(1, time.Second), session(2, 2*time.Second)}, nil)
	if second == first {
		t.Fatal("a new term is the old one")
	}
	if l1, l2 := c.Left(1), c.Left(2); l1 != time.Second || l2 != 2*time.Second {
		t.Fatalf("the new term's leases are %v and %v; want full leases of 1s and 2s", l1, l2)
	}
	select {
	case <-second.Lost():
		t.Fatal("the new term is lost at its start")
	default:
	}
}

// Beginning a term over a current one ends the current one first: two
// terms are never current at once.
func TestBeginEndsTheCurrentTerm(t *testing.T) {
	c, _ := leading(t, session(1, time.Second))
	first, _ := c.Current()
	c.Begin(nil, nil)
	select {
	case <-first.Lost():
	default:
		t.Fatal("a term survived the start of the next")
	}
	if c.Left(1) != 0 {
		t.Fatal("a session the new term does not know has a lease")
	}
}

// A spared session gets no lease once the term is over: the next leader
// times it.
func TestSparedAfterTermEndsGetsNoLease(t *testing.T) {
	c, clk := leading(t, session(1, time.Second))
	clk.Advance(time.Second)
	due(c)
	c.End()
	c.Spared(1)
	if c.Left(1) != 0 || c.Renew(1, time.Second) {
		t.Fatal("a deposed leader revived a lease")
	}
}

// AwaitTerm returns the term once one begins.
func TestAwaitTerm(t *testing.T) {
	c := New(newFakeClock())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan *Term, 1)
	go func() {
		term, err := c.AwaitTerm(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- term
	}()
	want := c.Begin(nil, nil)
	if term := <-got; term != want {
		t.Fatalf("AwaitTerm returned %p; want the begun term %p", term, want)
	}
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	c.End()
	if _, err := c.AwaitTerm(short); err == nil {
		t.Fatal("AwaitTerm returned without a term")
	}
}
