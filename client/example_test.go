package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/dlm/dlm/client"
)

// WithLock runs a critical section: the appends reach the files together
// when the function returns nil, and not at all when it returns an error or
// the lock is lost first.
func ExampleClient_WithLock() {
	ctx := context.Background()
	c, err := client.New(ctx, client.ParseEndpoints("127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072"),
		client.WithName("example"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)

	err = c.WithLock(ctx, func(ctx context.Context, lk *client.Lock) error {
		if err := lk.Append(ctx, "file_1", []byte("debit 10\n")); err != nil {
			return err
		}
		return lk.Append(ctx, "file_2", []byte("credit 10\n"))
	})
	if errors.Is(err, client.ErrLockExpired) {
		// The lease ran out before the release: nothing was written. Try
		// the whole section again.
		log.Print("lock lost, retry the section")
	}
}

// Acquire with a deadline stops waiting in the queue when the deadline
// passes, and leaves the queue.
func ExampleClient_Acquire() {
	ctx := context.Background()
	c, err := client.New(ctx, []string{"http://127.0.0.1:7070"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)

	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lk, err := c.Acquire(actx)
	if errors.Is(err, context.DeadlineExceeded) {
		log.Print("the lock stayed busy for 10s")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("holding token", lk.Token())
	if err := lk.Append(lk.Context(), "file_7", []byte("hello\n")); err != nil {
		_ = lk.Abort(ctx)
		log.Fatal(err)
	}
	if err := lk.Release(ctx); err != nil {
		log.Fatal(err)
	}
}

// A Lock reports its loss on a channel, for work that must stop at once
// when another client may have taken over.
func ExampleLock_Lost() {
	ctx := context.Background()
	c, err := client.New(ctx, []string{"http://127.0.0.1:7070"}, client.WithLease(2*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	lk, err := c.Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	select {
	case <-lk.Lost():
		log.Print("lost: ", context.Cause(lk.Context()))
	case <-time.After(time.Second):
		_ = lk.Release(ctx)
	}
}

// Errors carry the service's reason: errors.Is matches the sentinel,
// errors.As gives the code.
func ExampleError() {
	ctx := context.Background()
	r, err := client.NewReader([]string{"http://127.0.0.1:7070"})
	if err != nil {
		log.Fatal(err)
	}
	_, err = r.ReadFile(ctx, "file_100")
	var e *client.Error
	if errors.Is(err, client.ErrFileNotFound) && errors.As(err, &e) {
		fmt.Println(e.Code, e.Reason)
	}
}

// Named locks guard anything their users agree on; each has its own queue
// and fencing tokens. Timeout bounds the wait and leaves the queue when it
// runs out.
func ExampleLockName() {
	ctx := context.Background()
	c, err := client.New(ctx, []string{"http://127.0.0.1:7070"}, client.WithName("nightly-report"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)

	lk, err := c.Acquire(ctx, client.LockName("reports/nightly"), client.Timeout(30*time.Second))
	if errors.Is(err, client.ErrNotAvailable) {
		log.Print("another process is building the report")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer lk.Release(ctx)
	// Send lk.Token() with every write to the systems the lock guards, so
	// that they can refuse a stale holder (see package fence).
	fmt.Println("building the report under token", lk.Token())
}

// Shared holders run together; a writer waits for them, and readers that
// come after a waiting writer wait for it.
func ExampleShared() {
	ctx := context.Background()
	c, err := client.New(ctx, []string{"http://127.0.0.1:7070"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	err = c.WithLock(ctx, func(ctx context.Context, lk *client.Lock) error {
		// Read the configuration that writers change under the exclusive lock.
		return nil
	}, client.LockName("config"), client.Shared())
	if err != nil {
		log.Fatal(err)
	}
}

// CheckToken tells a service that dlm does not own whether a holder's token
// is still current.
func ExampleReader_CheckToken() {
	ctx := context.Background()
	r, err := client.NewReader([]string{"http://127.0.0.1:7070"})
	if err != nil {
		log.Fatal(err)
	}
	resp, err := r.CheckToken(ctx, "reports/nightly", 1234)
	switch {
	case errors.Is(err, client.ErrLockUnknown):
		fmt.Println("nobody holds the lock: refuse the write")
	case err != nil:
		log.Fatal(err)
	case !resp.GetCurrent():
		fmt.Println("stale token: refuse the write; the latest is", resp.GetLatestToken())
	}
}
