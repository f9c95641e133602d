package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/servertest"
)

func initProc(t *testing.T, c dlmv1connect.LockServiceClient) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{Name: "cap"}))
	return err
}

// dlm serve's --max-sessions and --init-rate/--init-burst reach the service.
func TestServeSessionLimits(t *testing.T) {
	t.Run("max-sessions", func(t *testing.T) {
		srv := startServer(t, "127.0.0.1:0", t.TempDir(), "--max-sessions", "3")
		for _, p := range []struct {
			name string
			opts []connect.ClientOption
		}{{"connect", nil}, {"grpc", []connect.ClientOption{connect.WithGRPC()}}} {
			c := dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), srv.URL(), p.opts...)
			if p.name == "connect" {
				for i := range 3 {
					if err := initProc(t, c); err != nil {
						t.Fatalf("open %d of 3: %v", i+1, err)
					}
				}
			}
			err := initProc(t, c)
			if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-sessions") {
				t.Fatalf("%s: a 4th open with --max-sessions 3: %v; want ResourceExhausted naming --max-sessions", p.name, err)
			}
		}
	})
	t.Run("init-rate", func(t *testing.T) {
		srv := startServer(t, "127.0.0.1:0", t.TempDir(), "--init-rate", "0.1", "--init-burst", "2")
		c := dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), srv.URL())
		for i := range 2 {
			if err := initProc(t, c); err != nil {
				t.Fatalf("open %d of the burst of 2: %v", i+1, err)
			}
		}
		err := initProc(t, c)
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "retry in") {
			t.Fatalf("a 3rd open with --init-burst 2: %v; want ResourceExhausted with a retry hint", err)
		}
	})
	t.Run("bad flags", func(t *testing.T) {
		for _, args := range [][]string{{"--max-sessions", "-1"}, {"--init-rate", "-1"}, {"--init-burst", "0"}, {"--init-rate", "NaN"}} {
			_, _, err := cliRun(t, "", append([]string{"serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0"}, args...)...)
			if err == nil {
				t.Errorf("serve %v started", args)
			}
		}
	})
}

// dlm serve's --max-locks and --lock-delay reach the state machine: a
// second live named lock is refused naming the flag, and a holder's expiry
// leaves its lock delayed for the server's lock-delay (its acquire named
// none), after which the lock is granted no more and leaves no state.
func TestServeLockFlags(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", t.TempDir(), "--max-locks", "1", "--lock-delay", "1s", "--min-lease", "200ms")
	c := dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{Name: "silent", LeaseMs: 300}))
	if err != nil {
		t.Fatal(err)
	}
	acquire := func(seq uint64, lock string) error {
		_, err := c.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: s.Msg.GetClientId(), Secret: s.Msg.GetSecret(), Seq: seq, Lock: &lock}))
		return err
	}
	if err := acquire(1, "a"); err != nil {
		t.Fatal(err)
	}
	if err := acquire(2, "b"); connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-locks") {
		t.Fatalf("a second named lock with --max-locks 1: %v; want ResourceExhausted naming --max-locks", err)
	}
	// Long polls see each change of the lock state: the expiry, then,
	// the delay later, its end.
	a := "a"
	delayed := false
	var known uint64
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := c.Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{Lock: &a, KnownStateIndex: known, WaitMs: 5000}))
		if err != nil {
			t.Fatal(err)
		}
		known = st.Msg.GetStateIndex()
		if l := st.Msg.GetLock(); l.GetDelayed() {
			if l.GetDelayMs() != 1000 {
				t.Fatalf("delayed lock %v; want delay_ms 1000 from --lock-delay", l)
			}
			delayed = true
		} else if delayed && st.Msg.GetLockCount() == 1 {
			return // the delay ended and the lock left no state
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: delayed seen %v, lock %v", delayed, st.Msg.GetLock())
		}
	}
}
