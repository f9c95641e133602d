package leadership

import (
	"slices"
	"testing"
	"time"

	"github.com/dlm/dlm/server/lockstate"
)

func dueDelays(c *Core) []lockstate.Delay {
	list, _ := c.delays.due(c.clock.Now())
	return list
}

// A lock-delay that an applied expiry started ends DelayMs later on the
// leader's clock, to the millisecond: the loop calls end then, not before.
func TestLockDelayEndsAfterItsLength(t *testing.T) {
	c, clk := leading(t)
	stop := make(chan struct{})
	ended := make(chan lockstate.Delay, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.RunDelays(stop, func(d lockstate.Delay) { ended <- d })
	}()
	defer func() { close(stop); <-done }()
	d := lockstate.Delay{Lock: "jobs", Token: 7, DelayMs: 2000}
	start := clk.Now()
	c.Applied(lockstate.Result{DelayStarted: []lockstate.Delay{d}})
	clk.awaitArmed(t, start.Add(2*time.Second))
	clk.Advance(1999 * time.Millisecond)
	select {
	case got := <-ended:
		t.Fatalf("delay %+v ended 1ms early", got)
	default:
	}
	clk.Advance(time.Millisecond)
	select {
	case got := <-ended:
		if got != d {
			t.Fatalf("ended %+v, want %+v", got, d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the delay did not end at its deadline")
	}
	// Its end is being proposed: it is not ended twice meanwhile.
	clk.Advance(time.Hour)
	if list := dueDelays(c); len(list) != 0 {
		t.Fatalf("due again while its end is proposed: %v", list)
	}
	c.DelayEnded(d)
	if c.Delays() != 0 {
		t.Fatalf("%d delays timed after the end applied", c.Delays())
	}
}

// A new leader does not know when an earlier one started a delay: it times
// every delay of the state in full from the start of its term, so a
// failover makes a delay longer, never shorter.
func TestNewLeaderTimesEachDelayInFull(t *testing.T) {
	clk := newFakeClock()
	c := New(clk)
	a := lockstate.Delay{Lock: "a", Token: 3, DelayMs: 1000}
	b := lockstate.Delay{Lock: "", Token: 9, DelayMs: 3000}
	// A follower times nothing.
	c.Applied(lockstate.Result{DelayStarted: []lockstate.Delay{a}})
	if c.Delays() != 0 {
		t.Fatalf("a follower times %d delays", c.Delays())
	}
	clk.Advance(10 * time.Second)
	c.Begin(nil, []lockstate.Delay{a, b})
	clk.Advance(999 * time.Millisecond)
	if list := dueDelays(c); len(list) != 0 {
		t.Fatalf("due 1ms before a full delay from the term's start: %v", list)
	}
	clk.Advance(time.Millisecond)
	if list := dueDelays(c); !slices.Equal(list, []lockstate.Delay{a}) {
		t.Fatalf("due at 1s: %v, want only %v", list, a)
	}
	clk.Advance(2 * time.Second)
	if list := dueDelays(c); !slices.Equal(list, []lockstate.Delay{b}) {
		t.Fatalf("due at 3s: %v, want %v", list, b)
	}
	// Learning of a delay again never shortens it.
	c.Begin(nil, []lockstate.Delay{a})
	clk.Advance(500 * time.Millisecond)
	c.Applied(lockstate.Result{DelayStarted: []lockstate.Delay{{Lock: "a", Token: 3, DelayMs: 100}}})
	clk.Advance(499 * time.Millisecond)
	if list := dueDelays(c); len(list) != 0 {
		t.Fatalf("a shorter restart cut the delay short: %v", list)
	}
	clk.Advance(time.Millisecond)
	if list := dueDelays(c); len(list) != 1 {
		t.Fatalf("due at 1s: %v", list)
	}
}

// An end that did not commit is proposed again after the retry wait; the
// end of the term forgets every delay (the next leader times them).
func TestLockDelayRetriesAndTermEnd(t *testing.T) {
	c, clk := leading(t)
	d := lockstate.Delay{Lock: "x", Token: 4, DelayMs: 100}
	c.Applied(lockstate.Result{DelayStarted: []lockstate.Delay{d}})
	clk.Advance(100 * time.Millisecond)
	if list := dueDelays(c); len(list) != 1 {
		t.Fatalf("due = %v", list)
	}
	c.RetryDelay(d, time.Second)
	clk.Advance(999 * time.Millisecond)
	if list := dueDelays(c); len(list) != 0 {
		t.Fatalf("retried before its wait: %v", list)
	}
	clk.Advance(time.Millisecond)
	if list := dueDelays(c); len(list) != 1 {
		t.Fatalf("not retried after its wait: %v", list)
	}
	c.RetryDelay(d, time.Second)
	c.End()
	if c.Delays() != 0 {
		t.Fatalf("%d delays timed after the term", c.Delays())
	}
	c.RetryDelay(d, time.Second)
	c.Applied(lockstate.Result{DelayStarted: []lockstate.Delay{d}})
	if c.Delays() != 0 {
		t.Fatalf("%d delays timed with no term", c.Delays())
	}
}
