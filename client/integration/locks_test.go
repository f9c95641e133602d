package integration_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/faultinject"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

func acquire(t *testing.T, c *client.Client, opts ...client.LockOption) *client.Lock {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	lk, err := c.Acquire(ctx, opts...)
	if err != nil {
		t.Fatalf("Acquire %v: %v", opts, err)
	}
	return lk
}

func release(t *testing.T, lk *client.Lock) {
	t.Helper()
	if err := lk.Release(t.Context()); err != nil {
		t.Fatalf("Release of %q token %d: %v", lk.Name(), lk.Token(), err)
	}
}

// lockStatus is the named lock as Status describes it.
func lockStatus(t *testing.T, c *client.Client, name string) *dlmv1.LockStatus {
	t.Helper()
	st, err := c.StatusPage(t.Context(), &dlmv1.StatusRequest{Lock: &name, Consistent: true})
	if err != nil {
		t.Fatalf("Status of lock %q: %v", name, err)
	}
	return st.GetLock()
}

// Each named lock has its own holder and queue; one session may hold
// several; tokens grow across all of them.
func TestNamedLocksAreIndependent(t *testing.T) {
	srv := servertest.Start(t, nil)
	c1 := dial(t, []string{srv.URL}, client.WithName("one"))
	c2 := dial(t, []string{srv.URL}, client.WithName("two"))

	a := acquire(t, c1, client.LockName("a"))
	b := acquire(t, c1, client.LockName("b"))
	def := acquire(t, c1)
	if a.Name() != "a" || b.Name() != "b" || def.Name() != "" {
		t.Fatalf("names %q %q %q", a.Name(), b.Name(), def.Name())
	}
	if !(a.Token() < b.Token() && b.Token() < def.Token()) {
		t.Fatalf("tokens %d, %d, %d do not grow", a.Token(), b.Token(), def.Token())
	}
	if _, err := c1.Acquire(t.Context(), client.LockName("a")); err == nil {
		t.Fatal("a second Acquire of a held lock by the same client succeeded")
	}
	for _, name := range []string{"a", "b"} {
		if _, err := c2.TryAcquire(t.Context(), client.LockName(name)); !errors.Is(err, client.ErrNotAvailable) {
			t.Fatalf("TryAcquire of held lock %q = %v, want ErrNotAvailable", name, err)
		}
	}
	c := acquire(t, c2, client.LockName("c"))
	if err := a.Append(t.Context(), "file_1", []byte("x")); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("Append under a named lock = %v, want ErrInvalidArgument", err)
	}
	release(t, a)
	a2 := acquire(t, c2, client.LockName("a"))
	if a2.Token() <= c.Token() {
		t.Fatalf("token %d after %d", a2.Token(), c.Token())
	}
	// b and the default lock stayed held through all this.
	if got := lockStatus(t, c2, "b").GetToken(); got != b.Token() {
		t.Fatalf("lock b's token = %d, want %d", got, b.Token())
	}
	if err := def.Append(t.Context(), "file_1", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	release(t, def)
	release(t, b)
	release(t, a2)
	release(t, c)
	locks, err := c1.ListLocks(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 1 || locks[0].GetName() != "" {
		t.Fatalf("live locks after every release: %v, want only the default lock", locks)
	}
}

// Shared holders hold together, each with its own token; an exclusive
// request waits for them all.
func TestSharedHoldersHoldTogether(t *testing.T) {
	srv := servertest.Start(t, nil)
	c1 := dial(t, []string{srv.URL})
	c2 := dial(t, []string{srv.URL})
	c3 := dial(t, []string{srv.URL})
	r1 := acquire(t, c1, client.LockName("r"), client.Shared())
	r2 := acquire(t, c2, client.LockName("r"), client.Shared())
	if r1.Mode() != dlmv1.LockMode_LOCK_MODE_SHARED || r1.Token() == r2.Token() {
		t.Fatalf("shared grants: mode %v, tokens %d and %d", r1.Mode(), r1.Token(), r2.Token())
	}
	if _, err := c3.TryAcquire(t.Context(), client.LockName("r")); !errors.Is(err, client.ErrNotAvailable) {
		t.Fatalf("exclusive TryAcquire under readers = %v, want ErrNotAvailable", err)
	}
	st := lockStatus(t, c3, "r")
	if len(st.GetHolders()) != 2 || st.GetMode() != dlmv1.LockMode_LOCK_MODE_SHARED {
		t.Fatalf("status of r: %v", st)
	}
	// A shared holder of the default lock cannot append.
	d := acquire(t, c3, client.Shared())
	if err := d.Append(t.Context(), "file_2", []byte("x")); !errors.Is(err, client.ErrNotExclusive) {
		t.Fatalf("Append under a shared default lock = %v, want ErrNotExclusive", err)
	}
	release(t, d)
	release(t, r1)
	release(t, r2)
	w := acquire(t, c3, client.LockName("r"))
	release(t, w)
}

// FIFO across modes: a reader that arrives behind a waiting writer waits
// for it, so writers never starve.
func TestWriterQueuedBeforeReaderGoesFirst(t *testing.T) {
	srv := servertest.Start(t, nil)
	reader1 := dial(t, []string{srv.URL})
	writer := dial(t, []string{srv.URL})
	reader2 := dial(t, []string{srv.URL})
	r1 := acquire(t, reader1, client.LockName("q"), client.Shared())

	order := make(chan string, 2)
	grants := make(chan *client.Lock, 2)
	go func() {
		lk, err := writer.Acquire(t.Context(), client.LockName("q"))
		if err != nil {
			t.Error(err)
			order <- "writer failed"
			return
		}
		order <- "writer"
		grants <- lk
	}()
	eventually(t, "the writer queued", func() bool { return lockStatus(t, reader1, "q").GetQueueLength() == 1 })
	// The lock is held shared, yet a new reader may not join: a writer waits.
	if _, err := reader2.TryAcquire(t.Context(), client.LockName("q"), client.Shared()); !errors.Is(err, client.ErrNotAvailable) {
		t.Fatalf("a reader behind a waiting writer: TryAcquire = %v, want ErrNotAvailable", err)
	}
	go func() {
		lk, err := reader2.Acquire(t.Context(), client.LockName("q"), client.Shared())
		if err != nil {
			t.Error(err)
			order <- "reader failed"
			return
		}
		order <- "reader"
		grants <- lk
	}()
	eventually(t, "the reader queued", func() bool { return lockStatus(t, reader1, "q").GetQueueLength() == 2 })
	release(t, r1)
	if first := recv(t, order, "the first grant"); first != "writer" {
		t.Fatalf("first granted: %s, want the writer", first)
	}
	w := <-grants
	select {
	case who := <-order:
		t.Fatalf("%s granted while the writer holds the lock", who)
	default:
	}
	release(t, w)
	if second := recv(t, order, "the second grant"); second != "reader" {
		t.Fatalf("second granted: %s", second)
	}
	release(t, <-grants)
}

// TryAcquire does not queue; Timeout gives the place in the queue up when
// it runs out, so a later release leaves the lock free.
func TestTryAndTimeout(t *testing.T) {
	srv := servertest.Start(t, nil)
	holder := dial(t, []string{srv.URL})
	other := dial(t, []string{srv.URL})
	lk := acquire(t, holder, client.LockName("t"))
	if _, err := other.TryAcquire(t.Context(), client.LockName("t")); !errors.Is(err, client.ErrNotAvailable) {
		t.Fatalf("TryAcquire = %v, want ErrNotAvailable", err)
	}
	if n := lockStatus(t, holder, "t").GetQueueLength(); n != 0 {
		t.Fatalf("TryAcquire queued: queue length %d", n)
	}
	start := time.Now()
	_, err := other.Acquire(t.Context(), client.LockName("t"), client.Timeout(300*time.Millisecond))
	if !errors.Is(err, client.ErrNotAvailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with Timeout = %v, want ErrNotAvailable and DeadlineExceeded", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("gave up after %v, before the timeout", took)
	}
	if n := lockStatus(t, holder, "t").GetQueueLength(); n != 0 {
		t.Fatalf("the timed-out waiter is still queued: queue length %d", n)
	}
	release(t, lk)
	if st := lockStatus(t, holder, "t"); len(st.GetHolders()) != 0 || st.GetHolder() != 0 {
		t.Fatalf("the lock went to the waiter that gave up: %v", st)
	}
	// The timed-out client can take it now.
	release(t, acquire(t, other, client.LockName("t"), client.Timeout(time.Minute)))
}

// A session that stops renewing loses every lock it holds: each Lock
// reports its own loss, and another client gets the named lock.
func TestNamedLockLossIsDetected(t *testing.T) {
	srv := servertest.Start(t, &node.Config{MinLease: 100 * time.Millisecond})
	// No Pulse stream (it would stay open through later faults): the
	// renewals go as KeepAlive calls, which the test can make fail.
	ft := &faultinject.Transport{Base: h2cTransport(t)}
	ft.Inject("Pulse", 0, faultinject.DropRequest)
	stalled := dial(t, []string{srv.URL}, client.WithHTTPClient(&http.Client{Transport: ft}),
		client.WithAttemptTimeout(time.Second), client.WithLease(400*time.Millisecond))
	lk := acquire(t, stalled, client.LockName("lease"))
	def := acquire(t, stalled)
	// The session's renewals get lost from now on.
	ft.Inject("KeepAlive", 0, faultinject.DropRequest)
	other := dial(t, []string{srv.URL})
	got := acquire(t, other, client.LockName("lease"))
	if got.Token() <= lk.Token() {
		t.Fatalf("new grant %d after %d", got.Token(), lk.Token())
	}
	for _, l := range []*client.Lock{lk, def} {
		select {
		case <-l.Lost():
		case <-time.After(waitLimit):
			t.Fatalf("lock %q was not reported lost", l.Name())
		}
		if err := context.Cause(l.Context()); !errors.Is(err, client.ErrLockExpired) {
			t.Fatalf("lock %q: cause %v, want ErrLockExpired", l.Name(), err)
		}
	}
	release(t, got)
}

// CheckToken says whether a token is the current grant of its lock.
func TestCheckTokenCurrentAndStale(t *testing.T) {
	srv := servertest.Start(t, nil)
	r, err := client.NewReader([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	c1 := dial(t, []string{srv.URL})
	c2 := dial(t, []string{srv.URL})
	lk := acquire(t, c1, client.LockName("ct"))
	resp, err := r.CheckToken(t.Context(), "ct", lk.Token())
	if err != nil || !resp.GetCurrent() || resp.GetLatestToken() != lk.Token() {
		t.Fatalf("CheckToken of the holder's token = %v, %v", resp, err)
	}
	release(t, lk)
	if _, err := r.CheckToken(t.Context(), "ct", lk.Token()); !errors.Is(err, client.ErrLockUnknown) {
		t.Fatalf("CheckToken of a released lock = %v, want ErrLockUnknown", err)
	}
	lk2 := acquire(t, c2, client.LockName("ct"))
	resp, err = r.CheckToken(t.Context(), "ct", lk.Token())
	if err != nil || resp.GetCurrent() || resp.GetLatestToken() != lk2.Token() {
		t.Fatalf("CheckToken of the old token = %v, %v; want not current, latest %d", resp, err, lk2.Token())
	}
	// The default lock, by its unset name.
	def := acquire(t, c1)
	if resp, err := c2.CheckToken(t.Context(), "", def.Token()); err != nil || !resp.GetCurrent() {
		t.Fatalf("CheckToken of the default lock = %v, %v", resp, err)
	}
	release(t, def)
	release(t, lk2)
	hist, err := r.LockHistory(t.Context(), &dlmv1.LockHistoryRequest{Lock: ptr("ct")})
	if err != nil {
		t.Fatal(err)
	}
	if evs := hist.GetEvents(); len(evs) != 2 || evs[0].GetToken() != lk.Token() || evs[1].GetToken() != lk2.Token() ||
		evs[0].GetEnd() != dlmv1.LockEnd_LOCK_END_RELEASED {
		t.Fatalf("history of ct: %v", evs)
	}
}

func ptr[T any](v T) *T { return &v }

// A grant's LockDelay override holds the lock ungranted after its holder's
// lease runs out, for the holder's writes in flight to drain.
func TestLockDelayOverride(t *testing.T) {
	srv := servertest.Start(t, &node.Config{MinLease: 100 * time.Millisecond})
	ft := &faultinject.Transport{Base: h2cTransport(t)}
	ft.Inject("Pulse", 0, faultinject.DropRequest)
	stalled := dial(t, []string{srv.URL}, client.WithHTTPClient(&http.Client{Transport: ft}),
		client.WithAttemptTimeout(time.Second), client.WithLease(300*time.Millisecond))
	lk := acquire(t, stalled, client.LockName("delayed"), client.LockDelay(1500*time.Millisecond))
	ft.Inject("KeepAlive", 0, faultinject.DropRequest)
	watcher := dial(t, []string{srv.URL})
	eventually(t, "the lock-delay", func() bool {
		st := lockStatus(t, watcher, "delayed")
		return st.GetDelayed() && st.GetDelayMs() == 1500
	})
	if _, err := watcher.TryAcquire(t.Context(), client.LockName("delayed")); !errors.Is(err, client.ErrNotAvailable) {
		t.Fatalf("TryAcquire during the lock-delay = %v, want ErrNotAvailable", err)
	}
	got := acquire(t, watcher, client.LockName("delayed"))
	if got.Token() <= lk.Token() {
		t.Fatalf("token %d after %d", got.Token(), lk.Token())
	}
	release(t, got)
	if _, err := watcher.Acquire(t.Context(), client.LockName("x"), client.LockDelay(2*time.Minute)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("a lock-delay over a minute = %v, want ErrInvalidArgument", err)
	}
}
