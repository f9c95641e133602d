package client

import (
	"context"
	"errors"
	"testing"
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

func TestLockOptionsRefuseBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []LockOption
	}{
		{"empty name", []LockOption{LockName("")}},
		{"negative delay", []LockOption{LockDelay(-time.Second)}},
		{"delay over a minute", []LockOption{LockDelay(61 * time.Second)}},
		{"negative timeout", []LockOption{Timeout(-time.Second)}},
	} {
		if _, err := readLockOptions(tc.opts); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", tc.name, err)
		}
	}
	o, err := readLockOptions([]LockOption{LockName("jobs"), Shared(), LockDelay(1500 * time.Millisecond), Timeout(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if o.name != "jobs" || o.mode() != dlmv1.LockMode_LOCK_MODE_SHARED || !o.hasDelay || o.delay != 1500*time.Millisecond || o.timeout != time.Second {
		t.Fatalf("options = %+v", o)
	}
	if d, _ := readLockOptions(nil); d.name != "" || d.mode() != dlmv1.LockMode_LOCK_MODE_EXCLUSIVE || lockField(d.name) != nil {
		t.Fatalf("default options = %+v, want the default lock, exclusive, name unset", d)
	}
}

func TestWaitTimeoutMatchesBothStyles(t *testing.T) {
	err := error(&waitTimeoutError{name: "jobs", d: time.Second})
	if !errors.Is(err, ErrNotAvailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v matches neither ErrNotAvailable nor context.DeadlineExceeded", err)
	}
}

// A server that predates named locks reports the default lock's grant only
// in token: it must count as held, or every Lock would be reported lost.
func TestHeldLocksFromAnOlderServer(t *testing.T) {
	if h := heldLocks(7, nil); len(h) != 1 || h[0].GetLock() != "" || h[0].GetToken() != 7 {
		t.Fatalf("heldLocks(7, nil) = %v", h)
	}
	both := []*dlmv1.HeldLock{{Lock: "", Token: 7}, {Lock: "a", Token: 9}}
	if h := heldLocks(7, both); len(h) != 2 {
		t.Fatalf("heldLocks duplicated the default lock: %v", h)
	}
	if h := heldLocks(0, nil); len(h) != 0 {
		t.Fatalf("heldLocks(0, nil) = %v", h)
	}
}

// Files are guarded by the default lock held exclusively: the client says
// so before asking the service.
func TestAppendRefusedUnderNamedOrSharedLock(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	named := &Lock{name: "jobs", mode: dlmv1.LockMode_LOCK_MODE_EXCLUSIVE, token: 3, ctx: ctx, cancel: cancel}
	if err := named.Stage("file_1", []byte("x")); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Stage under a named lock = %v, want ErrInvalidArgument", err)
	}
	if err := named.Append(ctx, "file_1", []byte("x")); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Append under a named lock = %v, want ErrInvalidArgument", err)
	}
	shared := &Lock{mode: dlmv1.LockMode_LOCK_MODE_SHARED, token: 4, ctx: ctx, cancel: cancel}
	if err := shared.Stage("file_1", []byte("x")); !errors.Is(err, ErrNotExclusive) {
		t.Errorf("Stage under a shared lock = %v, want ErrNotExclusive", err)
	}
}
