package robustness

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/server/lockstate"
)

// An append abandoned mid-retry when the lock is lost must not wedge the
// session: the client carries on for more requests than the service keeps
// unacknowledged outcomes of (1024), in ordinary lock cycles, without
// TOO_MANY_REQUESTS, and another client keeps getting the lock between its
// cycles. (Without a client that resolves or gives up the abandoned
// request's sequence number, about the 1024th request after it is refused
// and the session, kept alive by its keepalives, holds the lock for good.)
func TestAbandoningClientCarriesOn(t *testing.T) {
	bin := binary(t, false)
	ctx := context.Background()
	start := time.Now()
	c, err := startCluster(ctx, bin, t.TempDir(), 3, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	t.Logf("cluster started in %v", time.Since(start).Round(time.Millisecond))
	defer func() { t.Logf("took %v", time.Since(start).Round(time.Millisecond)) }()
	h := newHistory()
	var files []string
	for i := range 8 {
		files = append(files, lockstate.FileName(i))
	}
	rd, err := client.NewReader(c.urls())
	if err != nil {
		t.Fatal(err)
	}
	_, a, err := newAbandoner(ctx, 1, h, c, rand.New(rand.NewPCG(1, 1)), files, rd)
	if err != nil {
		t.Fatal(err)
	}
	a.every = 0 // only the early abandonment
	defer a.c.Close(ctx)
	other, err := client.New(ctx, c.urls(), client.WithLease(2*time.Second), client.WithName("other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)

	cycle := func(n int) error {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, _, _, err := a.acquire(actx); err != nil {
			return err
		}
		for i := 1; i <= n; i++ {
			if res, err := a.append(ctx, files[i%len(files)], recordData(1, a.sections, i)); res != ok {
				a.abort(ctx)
				return err
			}
		}
		_, err := a.release(ctx)
		return err
	}
	if err := cycle(1); err != nil {
		t.Fatal(err)
	}
	// The second section's first append is abandoned when the lock is lost.
	if err := cycle(1); err == nil {
		t.Fatal("the abandoned append succeeded")
	}
	if h.faultCounts()["abandon-append-lock-lost"] != 1 {
		t.Fatalf("the lock was not lost during the abandoned append, so this run tests nothing: %v", h.faults)
	}
	session := a.c.ClientID()
	deadline := time.Now().Add(90 * time.Second)
	for k := 0; a.watch.sentIn(a.c.ClientID()) < 1100 && k < 100 && time.Now().Before(deadline); k++ {
		if err := cycle(50); errors.Is(err, client.ErrLockExpired) && !errors.Is(err, client.ErrSessionExpired) {
			// A busy machine may delay keepalive answers for a lease: the
			// session lives on, and so does the test.
			t.Logf("cycle %d: %v", k, err)
		} else if err != nil {
			t.Errorf("cycle %d (request %d of session %d): %v", k, a.watch.sentIn(a.c.ClientID()), a.c.ClientID(), err)
			break
		}
		// Others keep getting the lock.
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		lk, err := other.Acquire(actx)
		cancel()
		if err != nil {
			t.Errorf("after cycle %d another client could not take the lock: %v", k, err)
			break
		}
		if err := lk.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if a.c.ClientID() != session {
		t.Fatalf("the session changed (%d -> %d), so this run tests nothing", session, a.c.ClientID())
	}
	if n := a.watch.sentIn(session); n < 1100 {
		t.Errorf("only %d requests in session %d", n, session)
	}
	if v := append(h.violations, a.watch.check(1)...); len(v) > 0 {
		t.Errorf("violations:\n  %s", strings.Join(v, "\n  "))
	}
	st, err := rd.Status(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetLock().GetHolder() == session {
		t.Errorf("session %d still holds the lock (token %d)", session, st.GetLock().GetToken())
	}
}
