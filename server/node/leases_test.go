package node

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/dlm/dlm/server/lockstate"
)

// idleExamined runs the expiry loop over count sessions with leases far in
// the future and returns how many leases it examined in one idle second.
func idleExamined(t *testing.T, count int) uint64 {
	t.Helper()
	ls := newLeases()
	sessions := make([]lockstate.SessionInfo, count)
	for i := range sessions {
		sessions[i] = lockstate.SessionInfo{ClientID: uint64(i + 1), LeaseMs: 600_000}
	}
	ls.reset(time.Now(), sessions)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ls.run(stop, func(id uint64) { t.Errorf("session %d expired; its lease had 10 minutes left", id) })
	}()
	// Keepalives renew leases all the time on a busy leader: a renewal that
	// moves a deadline later must not wake the loop.
	for i := range min(count, 1000) {
		ls.renew(time.Now(), uint64(i+1), 10*time.Minute)
	}
	start := ls.examined.Load()
	time.Sleep(time.Second) // the idle second being measured
	n := ls.examined.Load() - start
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

// A lease that ends before every other one wakes the sleeping loop, and a
// renewed one is not expired at its old deadline.
func TestLeaseLoopWakesForEarlierDeadline(t *testing.T) {
	ls := newLeases()
	ls.reset(time.Now(), []lockstate.SessionInfo{{ClientID: 1, LeaseMs: 3_600_000}})
	var mu sync.Mutex
	var expired []uint64
	fired := make(chan uint64, 4)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ls.run(stop, func(id uint64) {
			mu.Lock()
			expired = append(expired, id)
			mu.Unlock()
			fired <- id
		})
	}()
	defer func() { close(stop); <-done }()
	now := time.Now()
	ls.opened(now, 2, 100*time.Millisecond)
	ls.opened(now, 3, 300*time.Millisecond)
	ls.renew(now, 3, time.Hour)
	select {
	case id := <-fired:
		if id != 2 {
			t.Fatalf("expired session %d first; want 2", id)
		}
		if took := time.Since(now); took > 5*time.Second {
			t.Fatalf("a 100ms lease expired after %v", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a 100ms lease did not expire within 10s: the loop slept through it")
	}
	// Session 3 was renewed for an hour: nothing more is due for a while.
	select {
	case id := <-fired:
		t.Fatalf("session %d expired; only session 2 was due", id)
	case <-time.After(500 * time.Millisecond):
	}
	if ls.left(time.Now(), 2) != 0 || ls.renew(time.Now(), 2, time.Second) {
		t.Fatal("an expiring session was renewed")
	}
	ls.spared(time.Now(), 2)
	if ls.left(time.Now(), 2) == 0 {
		t.Fatal("a spared session has no lease")
	}
}

// The same on a real leader: idle with thousands of sessions, the lease
// loop examines almost nothing.
func TestIdleLeaderLeaseCost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := Open(testConfig(Config{DataDir: t.TempDir(), RaftLog: &bytes.Buffer{}, Logger: slog.New(slog.DiscardHandler)}))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if err := n.AwaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	const count = 3000
	var wg sync.WaitGroup
	work := make(chan int, count)
	for i := range count {
		work <- i
	}
	close(work)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				if _, err := n.OpenSession(ctx, time.Minute, "idle"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	start := n.leases.examined.Load()
	time.Sleep(time.Second) // the idle second being measured
	examined := n.leases.examined.Load() - start
	t.Logf("leases examined in an idle second with %d sessions: %d", count, examined)
	if examined > 10 {
		t.Fatalf("an idle second examined %d leases with %d sessions; want at most 10", examined, count)
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
