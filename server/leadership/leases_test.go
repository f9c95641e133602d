package leadership

import (
	"slices"
	"testing"
	"time"

	"github.com/dlm/dlm/server/lockstate"
)

// due is what the expiry loop would expire at the fake clock's now.
func due(c *Core) []uint64 {
	ids, _ := c.leases.due(c.clock.Now())
	return ids
}

func leading(t *testing.T, sessions ...lockstate.SessionInfo) (*Core, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	c := New(clk)
	c.Begin(sessions, nil)
	return c, clk
}

func session(id uint64, lease time.Duration) lockstate.SessionInfo {
	return lockstate.SessionInfo{ClientID: id, LeaseMs: uint32(lease.Milliseconds())}
}

// A lease runs out at its deadline, to the millisecond, and not before.
func TestLeaseExpiresAtItsDeadline(t *testing.T) {
	c, clk := leading(t, session(1, time.Second))
	clk.Advance(999 * time.Millisecond)
	if ids := due(c); len(ids) != 0 {
		t.Fatalf("sessions %v expired 1ms before their deadline", ids)
	}
	if left := c.Left(1); left != time.Millisecond {
		t.Fatalf("lease left %v; want 1ms", left)
	}
	clk.Advance(time.Millisecond)
	if ids := due(c); !slices.Equal(ids, []uint64{1}) {
		t.Fatalf("due at the deadline: %v; want [1]", ids)
	}
	if ids := due(c); len(ids) != 0 {
		t.Fatalf("session expired twice: %v", ids)
	}
}

// Renewing moves the deadline to length from the renewal.
func TestRenewMovesTheDeadline(t *testing.T) {
	c, clk := leading(t, session(1, time.Second))
	clk.Advance(600 * time.Millisecond)
	if !c.Renew(1, time.Second) {
		t.Fatal("a leader refused to renew a live lease")
	}
	if left := c.Left(1); left != time.Second {
		t.Fatalf("lease left after renewal %v; want 1s", left)
	}
	clk.Advance(600 * time.Millisecond) // past the old deadline
	if ids := due(c); len(ids) != 0 {
		t.Fatalf("sessions %v expired at a deadline their renewal replaced", ids)
	}
	clk.Advance(400 * time.Millisecond)
	if ids := due(c); !slices.Equal(ids, []uint64{1}) {
		t.Fatalf("due at the renewed deadline: %v; want [1]", ids)
	}
}

// Leases run out in deadline order, whatever the order they were opened or
// renewed in, and a new session's lease starts when it is applied.
func TestLeasesExpireInDeadlineOrder(t *testing.T) {
	c, clk := leading(t, session(1, 5*time.Second), session(2, 3*time.Second))
	clk.Advance(time.Second)
	c.Applied(lockstate.Result{ClientID: 3, LeaseMs: 1000}) // deadline 2s
	c.Renew(2, 500*time.Millisecond)                        // deadline 1.5s
	clk.Advance(10 * time.Second)
	if ids := due(c); !slices.Equal(ids, []uint64{2, 3, 1}) {
		t.Fatalf("expired in order %v; want [2 3 1]", ids)
	}
}

// A session whose expiry is being proposed gets no lease promise until the
// expiry is known not to have happened; then it gets a full one.
func TestExpiringSessionIsNotRenewed(t *testing.T) {
	c, clk := leading(t, session(1, time.Second))
	clk.Advance(time.Second)
	if ids := due(c); !slices.Equal(ids, []uint64{1}) {
		t.Fatalf("due: %v; want [1]", ids)
	}
	if c.Renew(1, time.Second) {
		t.Fatal("a session being expired was promised a lease")
	}
	if left := c.Left(1); left != 0 {
		t.Fatalf("a session being expired has %v left", left)
	}
	c.Spared(1)
	if left := c.Left(1); left != time.Second {
		t.Fatalf("a spared session has %v left; want a full 1s", left)
	}
	if !c.Renew(1, time.Second) {
		t.Fatal("a spared session could not be renewed")
	}
	c.Applied(lockstate.Result{Ended: []uint64{1}})
	clk.Advance(time.Hour)
	if ids := due(c); len(ids) != 0 || c.Left(1) != 0 {
		t.Fatalf("an ended session still has a lease (due %v)", ids)
	}
}

// The expiry loop sleeps until the earliest deadline, wakes for a lease
// that becomes the earliest, and expires it when the clock reaches it.
func TestExpiryLoopFollowsTheEarliestDeadline(t *testing.T) {
	c, clk := leading(t, session(1, time.Hour))
	start := clk.Now()
	fired := make(chan uint64, 4)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.RunExpiry(stop, func(id uint64) { fired <- id })
	}()
	defer func() { close(stop); <-done }()
	clk.awaitArmed(t, start.Add(time.Hour))
	c.Applied(lockstate.Result{ClientID: 2, LeaseMs: 100})
	c.Applied(lockstate.Result{ClientID: 3, LeaseMs: 300})
	c.Renew(3, 2*time.Hour)
	clk.awaitArmed(t, start.Add(100*time.Millisecond))
	if len(fired) != 0 {
		t.Fatalf("session %d expired before any deadline", <-fired)
	}
	clk.Advance(100 * time.Millisecond)
	select {
	case id := <-fired:
		if id != 2 {
			t.Fatalf("expired session %d; want 2", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the loop slept through a due lease")
	}
	// Next: session 1's deadline (an hour from the start), then 3's.
	clk.awaitArmed(t, start.Add(time.Hour))
	clk.Advance(time.Hour)
	select {
	case id := <-fired:
		if id != 1 {
			t.Fatalf("expired session %d; want 1", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the loop slept through a due lease")
	}
}

// idleExamined runs the expiry loop on the real clock over count sessions
// with leases far in the future and returns how many leases it examined in
// one idle second.
func idleExamined(t *testing.T, count int) uint64 {
	t.Helper()
	c := New(SystemClock())
	sessions := make([]lockstate.SessionInfo, count)
	for i := range sessions {
		sessions[i] = session(uint64(i+1), 10*time.Minute)
	}
	c.Begin(sessions, nil)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.RunExpiry(stop, func(id uint64) { t.Errorf("session %d expired; its lease had 10 minutes left", id) })
	}()
	// Keepalives renew leases all the time on a busy leader: a renewal that
	// moves a deadline later must not wake the loop.
	for i := range min(count, 1000) {
		c.Renew(uint64(i+1), 10*time.Minute)
	}
	start := c.Examined()
	time.Sleep(time.Second) // the idle second being measured
	n := c.Examined() - start
	close(stop)
	<-done
	return n
}

// An idle leader's expiry loop costs the same with 10,000 sessions as with
// 10: it sleeps until the earliest deadline instead of scanning the table
// (the scan it replaces examined every lease 20 times a second: 200,000
// here).
func TestIdleLeaseCostIsFlat(t *testing.T) {
	small, big := idleExamined(t, 10), idleExamined(t, 10_000)
	t.Logf("leases examined in an idle second: %d with 10 sessions, %d with 10,000", small, big)
	if big > 10 || small > 10 {
		t.Fatalf("an idle second examined %d leases with 10,000 sessions and %d with 10; want at most 10 each", big, small)
	}
}

// BenchmarkLeaseRenew is the cost of a keepalive's renewal among 10,000
// leases (a heap fix), and BenchmarkLeaseIdleWake the cost of one wake of
// the expiry loop with nothing due: neither grows with the table but
// logarithmically.
func BenchmarkLeaseRenew(b *testing.B) {
	ls := newLeases()
	sessions := make([]lockstate.SessionInfo, 10_000)
	for i := range sessions {
		sessions[i] = lockstate.SessionInfo{ClientID: uint64(i + 1), LeaseMs: 600_000}
	}
	now := time.Now()
	ls.reset(now, sessions)
	b.ResetTimer()
	for i := range b.N {
		ls.renew(now.Add(time.Duration(i)), uint64(i%10_000+1), 10*time.Minute)
	}
}

func BenchmarkLeaseIdleWake(b *testing.B) {
	ls := newLeases()
	sessions := make([]lockstate.SessionInfo, 10_000)
	for i := range sessions {
		sessions[i] = lockstate.SessionInfo{ClientID: uint64(i + 1), LeaseMs: 600_000}
	}
	now := time.Now()
	ls.reset(now, sessions)
	b.ResetTimer()
	for range b.N {
		if ids, _ := ls.due(now); len(ids) > 0 {
			b.Fatal("a lease was due")
		}
	}
}
