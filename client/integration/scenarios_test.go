package integration_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/faultinject"
	"github.com/dlm/dlm/server/servertest"
)

// The acceptance scenarios of groups A (network faults), B (client stalls)
// and C (server restarts) against a real in-process server, with faults
// injected between client and server. Each runs through the Connect and the
// gRPC protocol.

// waitLimit bounds every wait in these tests, so a regression fails rather
// than hangs.
const waitLimit = 30 * time.Second

var protocols = []struct {
	name string
	opts []client.Option
}{
	{"connect", nil},
	{"grpc", []client.Option{client.WithGRPC()}},
}

// peer is one client process: its own session and its own network.
type peer struct {
	*client.Client
	net *faultinject.Transport
}

func h2cTransport(t *testing.T) *http.Transport {
	t.Helper()
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func newPeer(t *testing.T, srv *servertest.Server, opts ...client.Option) *peer {
	t.Helper()
	ft := &faultinject.Transport{Base: h2cTransport(t)}
	all := append([]client.Option{
		client.WithHTTPClient(&http.Client{Transport: ft}),
		client.WithAttemptTimeout(time.Second),
	}, opts...)
	return &peer{Client: dial(t, []string{srv.URL}, all...), net: ft}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	recv(t, ch, what)
}

type acquired struct {
	lk  *client.Lock
	err error
}

// acquireAsync starts a blocking Acquire.
func acquireAsync(t *testing.T, c *peer) <-chan acquired {
	t.Helper()
	ch := make(chan acquired, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		lk, err := c.Acquire(ctx)
		ch <- acquired{lk, err}
	}()
	return ch
}

func mustAcquire(t *testing.T, c *peer) *client.Lock {
	t.Helper()
	a := recv(t, acquireAsync(t, c), "Acquire")
	if a.err != nil {
		t.Fatalf("Acquire: %v", a.err)
	}
	return a.lk
}

func mustAppend(t *testing.T, lk *client.Lock, file, data string) {
	t.Helper()
	if err := lk.Append(t.Context(), file, []byte(data)); err != nil {
		t.Fatalf("Append(%s, %q): %v", file, data, err)
	}
}

func mustRelease(t *testing.T, lk *client.Lock) {
	t.Helper()
	if err := lk.Release(t.Context()); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

func wantFile(t *testing.T, c *peer, file, want string) {
	t.Helper()
	got, err := c.ReadFile(t.Context(), file)
	if err != nil {
		t.Fatalf("ReadFile(%s): %v", file, err)
	}
	if string(got) != want {
		t.Errorf("%s holds %q, want %q", file, got, want)
	}
}

func notLost(t *testing.T, lk *client.Lock) {
	t.Helper()
	select {
	case <-lk.Lost():
		t.Fatalf("lock %d was lost: %v", lk.Token(), context.Cause(lk.Context()))
	default:
	}
}

func forEachProtocol(t *testing.T, run func(t *testing.T, opts []client.Option)) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) { run(t, p.opts) })
	}
}

// A1: C1's append is delayed past its lease; the lock passes to C2. C1 gets
// LOCK_EXPIRED and 'A' reaches no file.
func TestA1DelayedAppend(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, opts []client.Option) {
		srv := servertest.Start(t, nil)
		c1 := newPeer(t, srv, append(opts, client.WithLease(400*time.Millisecond), client.WithAttemptTimeout(200*time.Millisecond))...)
		c2 := newPeer(t, srv, opts...)
		lk1 := mustAcquire(t, c1)

		// C1's network stalls: its keepalives and its append are stuck.
		gate := make(chan struct{})
		c1.net.Inject("KeepAlive", 0, faultinject.Hold(gate))
		c1.net.Inject("AppendFile", 0, faultinject.Hold(gate))
		appended := make(chan error, 1)
		go func() { appended <- lk1.Append(context.Background(), "file_1", []byte("A")) }()
		await(t, c1.net.Started("AppendFile", 1), "C1's append to leave")

		lk2 := mustAcquire(t, c2) // granted once C1's lease has run out
		close(gate)
		if err := recv(t, appended, "C1's append"); !errors.Is(err, client.ErrLockExpired) {
			t.Fatalf("C1's delayed append = %v, want ErrLockExpired", err)
		}
		c1.net.Wait()
		mustAppend(t, lk2, "file_1", "B")
		mustRelease(t, lk2)
		wantFile(t, c2, "file_1", "B")
	})
}

// A2: C1's acquire request is lost; C2 acquires, appends 'B', releases;
// C1's retry acquires and appends 'A'.
func TestA2LostAcquireRequest(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, opts []client.Option) {
		srv := servertest.Start(t, nil)
		c1 := newPeer(t, srv, opts...)
		c2 := newPeer(t, srv, opts...)
		gate := make(chan struct{})
		c1.net.Inject("LockAcquire", 1, faultinject.DropRequest)
		c1.net.Inject("LockAcquire", 2, faultinject.Hold(gate))
		ch1 := acquireAsync(t, c1)
		await(t, c1.net.Started("LockAcquire", 2), "C1's retry")

		lk2 := mustAcquire(t, c2)
		mustAppend(t, lk2, "file_2", "B")
		mustRelease(t, lk2)
		close(gate)

		a := recv(t, ch1, "C1's acquire")
		if a.err != nil {
			t.Fatalf("C1's acquire: %v", a.err)
		}
		mustAppend(t, a.lk, "file_2", "A")
		mustRelease(t, a.lk)
		wantFile(t, c1, "file_2", "BA")
	})
}

// A3: C1 is granted the lock but the answer is lost; C2 queues; C1's retry
// learns it holds the lock, appends 'A' and releases; C2 appends 'B'.
func TestA3LostAcquireResponse(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, opts []client.Option) {
		srv := servertest.Start(t, nil)
		c1 := newPeer(t, srv, opts...)
		c2 := newPeer(t, srv, append(opts, client.WithPollWait(100*time.Millisecond))...)
		gate := make(chan struct{})
		c1.net.Inject("LockAcquire", 1, faultinject.DropResponse)
		c1.net.Inject("LockAcquire", 2, faultinject.Hold(gate))
		ch1 := acquireAsync(t, c1)
		await(t, c1.net.Started("LockAcquire", 2), "C1's retry")

		ch2 := acquireAsync(t, c2)
		// C2's first poll ends without a grant: it waits in the queue.
		await(t, c2.net.Finished("LockAcquire", 1), "C2 to queue")
		close(gate)

		a := recv(t, ch1, "C1's acquire")
		if a.err != nil {
			t.Fatalf("C1's acquire: %v", a.err)
		}
		mustAppend(t, a.lk, "file_3", "A")
		mustRelease(t, a.lk)
		b := recv(t, ch2, "C2's acquire")
		if b.err != nil {
			t.Fatalf("C2's acquire: %v", b.err)
		}
		if b.lk.Token() <= a.lk.Token() {
			t.Errorf("C2's token %d is not above C1's %d", b.lk.Token(), a.lk.Token())
		}
		mustAppend(t, b.lk, "file_3", "B")
		mustRelease(t, b.lk)
		wantFile(t, c1, "file_3", "AB")
		if n := c1.net.Calls("LockAcquire"); n != 2 {
			t.Errorf("C1 sent %d acquire requests, want 2", n)
		}
	})
}

// A4: C1's release is delayed and retried; the lock goes to C2; the late
// duplicate arrives while C2 holds it and is ignored; C2 appends 'B' twice
// and releases; C1 re-acquires and appends 'A'.
func TestA4DuplicatedRelease(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, opts []client.Option) {
		srv := servertest.Start(t, nil)
		c1 := newPeer(t, srv, append(opts, client.WithAttemptTimeout(300*time.Millisecond))...)
		c2 := newPeer(t, srv, opts...)
		lk1 := mustAcquire(t, c1)
		mustAppend(t, lk1, "file_4", "A")

		gate := make(chan struct{})
		c1.net.Inject("LockRelease", 1, faultinject.Hold(gate))
		ch2 := acquireAsync(t, c2)
		mustRelease(t, lk1) // the first copy is stuck; the retry releases

		b := recv(t, ch2, "C2's acquire")
		if b.err != nil {
			t.Fatalf("C2's acquire: %v", b.err)
		}
		mustAppend(t, b.lk, "file_4", "B")
		close(gate)
		await(t, c1.net.Finished("LockRelease", 1), "the late release to be answered")
		mustAppend(t, b.lk, "file_4", "B")
		notLost(t, b.lk)
		mustRelease(t, b.lk)

		lk1 = mustAcquire(t, c1)
		mustAppend(t, lk1, "file_4", "A")
		mustRelease(t, lk1)
		wantFile(t, c1, "file_4", "ABBA")
	})
}

// A5: C1 appends '1'; its append('A') request is lost, retried, the answer
// is lost, retried again; C1 releases; C2 appends 'B'.
func TestA5LostAppendRequestsAndResponses(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, opts []client.Option) {
		srv := servertest.Start(t, nil)
		c1 := newPeer(t, srv, opts...)
		c2 := newPeer(t, srv, opts...)
		lk1 := mustAcquire(t, c1)
		mustAppend(t, lk1, "file_5", "1")
		c1.net.Inject("AppendFile", 2, faultinject.DropRequest)
		c1.net.Inject("AppendFile", 3, faultinject.DropResponse)
		mustAppend(t, lk1, "file_5", "A")
		if n := c1.net.Calls("AppendFile"); n != 4 {
			t.Errorf("C1 sent %d append requests, want 4", n)
		}
		mustRelease(t, lk1)
		err := c2.WithLock(t.Context(), func(ctx context.Context, lk *client.Lock) error {
			return lk.Append(ctx, "file_5", []byte("B"))
		})
		if err != nil {
			t.Fatalf("C2: %v", err)
		}
		wantFile(t, c2, "file_5", "1AB")
	})
}

// stallScenario is B1 and B2: C1 acquires (and in B2 appends 'A'), then
// stalls past its lease; C2 gets the lock and appends 'B'; C1 wakes and its
// append fails with LOCK_EXPIRED; C2 appends 'B' again and releases; C1
// re-acquires and appends 'A' twice.
func stallScenario(t *testing.T, opts []client.Option, writeFirst bool) {
	srv := servertest.Start(t, nil)
	c1 := newPeer(t, srv, append(opts, client.WithLease(400*time.Millisecond))...)
	c2 := newPeer(t, srv, opts...)
	lk1 := mustAcquire(t, c1)
	if writeFirst {
		mustAppend(t, lk1, "file_6", "A")
	}
	// The stall: nothing C1 sends arrives until it wakes.
	wake := make(chan struct{})
	c1.net.Inject("KeepAlive", 0, faultinject.Hold(wake))

	lk2 := mustAcquire(t, c2)
	mustAppend(t, lk2, "file_6", "B")
	await(t, lk1.Lost(), "C1 to notice it lost the lock")
	close(wake)
	if err := lk1.Append(t.Context(), "file_6", []byte("A")); !errors.Is(err, client.ErrLockExpired) {
		t.Fatalf("C1's append after waking = %v, want ErrLockExpired", err)
	}
	mustAppend(t, lk2, "file_6", "B")
	mustRelease(t, lk2)

	old := c1.ClientID()
	lk1 = mustAcquire(t, c1)
	if c1.ClientID() == old {
		t.Errorf("C1 still uses session %d, which expired", old)
	}
	mustAppend(t, lk1, "file_6", "A")
	mustAppend(t, lk1, "file_6", "A")
	mustRelease(t, lk1)
	c1.net.Wait()
	wantFile(t, c1, "file_6", "BBAA")
}

func TestB1StallBeforeWriting(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, opts []client.Option) { stallScenario(t, opts, false) })
}

func TestB2StallAfterWriting(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, opts []client.Option) { stallScenario(t, opts, true) })
}

// C1: C1 appends 'A' twice and releases; the server goes down; C1's acquire
// retries until the server is back; C1 appends '1'.
func TestC1RestartWithTheLockFree(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, opts []client.Option) {
		srv := servertest.Start(t, nil)
		c1 := newPeer(t, srv, opts...)
		err := c1.WithLock(t.Context(), func(ctx context.Context, lk *client.Lock) error {
			if err := lk.Append(ctx, "file_7", []byte("A")); err != nil {
				return err
			}
			return lk.Append(ctx, "file_7", []byte("A"))
		})
		if err != nil {
			t.Fatal(err)
		}
		srv.Close()
		n := c1.net.Calls("LockAcquire")
		ch := acquireAsync(t, c1)
		await(t, c1.net.Started("LockAcquire", n+2), "C1 to retry its acquire")
		srv.Restart()
		a := recv(t, ch, "C1's acquire")
		if a.err != nil {
			t.Fatalf("acquire across the restart: %v", a.err)
		}
		mustAppend(t, a.lk, "file_7", "1")
		mustRelease(t, a.lk)
		wantFile(t, c1, "file_7", "AA1")
	})
}

// C2: C1 appends 'A' and releases; C2 holds the lock and appended 'B'; the
// server restarts; C2's next append retries and succeeds under its old
// grant; C2 releases; C1 re-acquires and appends 'A'.
func TestC2RestartWithTheLockHeld(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, opts []client.Option) {
		srv := servertest.Start(t, nil)
		c1 := newPeer(t, srv, append(opts, client.WithPollWait(100*time.Millisecond))...)
		c2 := newPeer(t, srv, opts...)
		lk1 := mustAcquire(t, c1)
		mustAppend(t, lk1, "file_8", "A")
		mustRelease(t, lk1)
		lk2 := mustAcquire(t, c2)
		mustAppend(t, lk2, "file_8", "B")
		ch1 := acquireAsync(t, c1)
		await(t, c1.net.Finished("LockAcquire", 2), "C1 to queue")

		srv.Close()
		n := c2.net.Calls("AppendFile")
		appended := make(chan error, 1)
		go func() { appended <- lk2.Append(context.Background(), "file_8", []byte("B")) }()
		await(t, c2.net.Started("AppendFile", n+2), "C2 to retry its append")
		srv.Restart()
		if err := recv(t, appended, "C2's append"); err != nil {
			t.Fatalf("C2's append across the restart: %v", err)
		}
		notLost(t, lk2)
		mustRelease(t, lk2)

		a := recv(t, ch1, "C1's acquire")
		if a.err != nil {
			t.Fatalf("C1's acquire: %v", a.err)
		}
		mustAppend(t, a.lk, "file_8", "A")
		mustRelease(t, a.lk)
		wantFile(t, c1, "file_8", "ABBA")
	})
}

// A keepalive answered while a release is in flight sees no grant: that is
// the release taking effect, not a lost lock.
func TestReleaseInFlightIsNotALoss(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newPeer(t, srv, client.WithLease(300*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	lk, err := c.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The first release is applied but its answer is lost; the retry waits
	// long enough for several keepalives (every 100ms) to report token 0.
	c.net.Inject("LockRelease", 1, faultinject.DropResponse)
	c.net.Inject("LockRelease", 2, faultinject.Delay(500*time.Millisecond))
	if err := lk.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	select {
	case <-lk.Lost():
		t.Fatalf("a released lock was reported lost: %v", context.Cause(lk.Context()))
	default:
	}
}
