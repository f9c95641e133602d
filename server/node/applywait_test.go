package node

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Lock changes wait for their result without a goroutine each: while
// sessions keep proposing, no goroutine is ever seen blocked on a raft
// future for a proposal (as each one was when a goroutine per proposal
// waited on the future for the proposer).
func TestProposalsNeedNoWaiterGoroutine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := Open(testConfig(Config{DataDir: t.TempDir(), RaftLog: &bytes.Buffer{}, Logger: slog.New(slog.DiscardHandler)}))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if err := n.AwaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		proposals int
	)
	for range 4 {
		s, err := n.OpenSession(ctx, 0, "waiter-test")
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			c := Caller{ClientID: s.ClientID, Secret: s.Secret}
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c.Seq++
				c.AckedBelow = c.Seq
				g, err := n.Acquire(ctx, c, true, 0)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				proposals++
				mu.Unlock()
				if g.Granted {
					c.Seq++
					c.AckedBelow = c.Seq
					if _, err := n.Release(ctx, c, g.Token, false, nil, nil); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	buf := make([]byte, 1<<20)
	var waiter string
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline) && waiter == ""; time.Sleep(2 * time.Millisecond) {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "raft.(*deferError).Error") && strings.Contains(g, "dlm/server/node.(*Node).") {
				waiter = g
				break
			}
		}
	}
	close(stop)
	wg.Wait()
	if proposals < 10 {
		t.Fatalf("only %d proposals in 1.5s: the test saw too little", proposals)
	}
	if waiter != "" {
		t.Fatalf("a goroutine waits on a raft future for a proposal:\n%s", waiter)
	}
}
