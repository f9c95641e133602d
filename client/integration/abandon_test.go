package integration_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/faultinject"
	"github.com/dlm/dlm/server/servertest"
)

// cyclesPastTheCap WithLock cycles make 1200 requests (acquire, append,
// release), more than the service keeps unacknowledged outcomes for one
// session (1024): a request number the client leaves unresolved holds the
// acknowledgement back, and the session is refused with TOO_MANY_REQUESTS
// (at cycle 342 without the fix) well before the last cycle.
const cyclesPastTheCap = 400

// cycles runs n WithLock cycles that each append one byte to file, failing
// at the first error.
func cycles(t *testing.T, c *peer, file string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*waitLimit)
	defer cancel()
	for i := range n {
		err := c.WithLock(ctx, func(ctx context.Context, lk *client.Lock) error {
			return lk.Append(ctx, file, []byte("x"))
		})
		if err != nil {
			t.Fatalf("cycle %d of %d: %v", i+1, n, err)
		}
	}
}

// otherGetsTheLock checks that a second client is granted the lock in
// time: the first one does not keep it.
func otherGetsTheLock(t *testing.T, c *peer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	lk, err := c.Acquire(ctx)
	if err != nil {
		t.Fatalf("another client's Acquire: %v", err)
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatalf("another client's Release: %v", err)
	}
}

// Issue 8, item 2: an Append still retrying when the lock is declared lost
// (the server is down past the lease) is abandoned with its outcome
// unknown. The restarted server gives the session a fresh lease, so the
// session lives on; its abandoned request number must not hold its
// acknowledgement back, or after ~1024 more requests every change is
// refused with TOO_MANY_REQUESTS while keepalives keep the lock held.
func TestAbandonedAppendDoesNotWedgeTheSession(t *testing.T) {
	srv := servertest.Start(t, nil)
	// The lease is short enough for the outage to outlast it, and long
	// enough that the cycles on a busy machine never lose the lock.
	c1 := newPeer(t, srv, client.WithLease(2*time.Second))
	c2 := newPeer(t, srv)
	id := c1.ClientID()

	var held *client.Lock
	err := c1.WithLock(t.Context(), func(ctx context.Context, lk *client.Lock) error {
		held = lk
		mustAppend(t, lk, "file_10", "A")
		srv.Close()
		// Retries until the keepalive declares the lock lost, which
		// cancels ctx.
		return lk.Append(ctx, "file_10", []byte("lost"))
	})
	if err == nil {
		t.Fatal("the append across the outage succeeded")
	}
	select {
	case <-held.Lost():
	default:
		t.Fatalf("WithLock returned %v, but the lock is not lost", err)
	}
	srv.Restart()

	cycles(t, c1, "file_10", cyclesPastTheCap)
	if got := c1.ClientID(); got != id {
		t.Fatalf("the session changed (%d, then %d): the scenario needs the session to survive", id, got)
	}
	otherGetsTheLock(t, c2)
	wantFile(t, c1, "file_10", strings.Repeat("x", cyclesPastTheCap))
}

// A Release inside WithLock whose retries run out leaves its outcome
// unknown, and nobody can repeat it once WithLock returns. The client must
// give the grant and its request number up: later cycles must neither be
// refused as "already holds the lock" nor wedge the session.
func TestWithLockReleaseOutOfRetries(t *testing.T) {
	srv := servertest.Start(t, nil)
	c1 := newPeer(t, srv, client.WithRetryBudget(time.Second), client.WithAttemptTimeout(200*time.Millisecond))
	c2 := newPeer(t, srv)

	err := c1.WithLock(t.Context(), func(ctx context.Context, lk *client.Lock) error {
		if err := lk.Append(ctx, "file_11", []byte("maybe")); err != nil {
			return err
		}
		c1.net.Inject("LockRelease", 0, faultinject.DropRequest)
		return nil
	})
	if !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("WithLock with every release dropped = %v, want ErrUnavailable", err)
	}
	c1.net.Clear()

	cycles(t, c1, "file_11", cyclesPastTheCap)
	otherGetsTheLock(t, c2)
	// The dropped release never reached the service, so its section was
	// discarded when the grant was given up.
	wantFile(t, c1, "file_11", strings.Repeat("x", cyclesPastTheCap))
}
