package node

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// An idle leader: idle with thousands of sessions, the lease
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
	start := n.lead.Examined()
	time.Sleep(time.Second) // the idle second being measured
	examined := n.lead.Examined() - start
	t.Logf("leases examined in an idle second with %d sessions: %d", count, examined)
	if examined > 10 {
		t.Fatalf("an idle second examined %d leases with %d sessions; want at most 10", examined, count)
	}
}
