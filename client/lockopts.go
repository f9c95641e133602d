package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// LockOption says which lock Acquire, TryAcquire and WithLock take, and
// how. Without any, they take the default lock (the one that guards the
// files) exclusively, as they always have.
type LockOption func(*lockOptions)

type lockOptions struct {
	name     string
	named    bool
	shared   bool
	delay    time.Duration
	hasDelay bool
	timeout  time.Duration
}

// LockName takes the named lock name instead of the default lock. A named
// lock guards whatever its users agree on (a job, a table, a host); it has
// its own queue, holder and fencing tokens, and files cannot be appended
// under it. Names are printable UTF-8 of at most 256 bytes. A session may
// hold several locks at once: take them in one agreed order, or with
// TryAcquire or Timeout, since dlm does not detect deadlocks (as etcd and
// Chubby do not).
func LockName(name string) LockOption {
	return func(o *lockOptions) { o.name, o.named = name, true }
}

// Shared takes the lock in shared (read) mode: any number of shared holders
// at once, and no exclusive holder. Waiters of both modes are served in
// arrival order, so a shared request behind a waiting exclusive one waits.
// Each shared holder gets its own fencing token. A shared holder of the
// default lock cannot append.
func Shared() LockOption {
	return func(o *lockOptions) { o.shared = true }
}

// LockDelay sets this grant's lock-delay instead of the server's
// --lock-delay: if the session's lease runs out while it holds the grant,
// the lock stays ungranted for d (at most a minute, whole milliseconds), so
// that a stalled holder's writes in flight to other systems drain before the
// next holder starts. A clean release or Close starts no delay.
func LockDelay(d time.Duration) LockOption {
	return func(o *lockOptions) { o.delay, o.hasDelay = d, true }
}

// Timeout bounds the wait in the queue: when the lock is not granted within
// d, Acquire leaves the queue and fails with an error that matches both
// ErrNotAvailable and context.DeadlineExceeded. It bounds the wait only, not
// the requests' retries; a ctx deadline still applies too.
func Timeout(d time.Duration) LockOption {
	return func(o *lockOptions) { o.timeout = d }
}

func readLockOptions(opts []LockOption) (lockOptions, error) {
	var o lockOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.named && o.name == "" {
		return o, fmt.Errorf("%w: the lock name is empty: leave LockName out for the default lock", ErrInvalidArgument)
	}
	if o.hasDelay && (o.delay < 0 || o.delay > maxLockDelay) {
		return o, fmt.Errorf("%w: the lock-delay must be between 0 and %v, not %v", ErrInvalidArgument, maxLockDelay, o.delay)
	}
	if o.timeout < 0 {
		return o, fmt.Errorf("%w: negative timeout %v", ErrInvalidArgument, o.timeout)
	}
	return o, nil
}

// maxLockDelay is the service's limit on a grant's lock-delay.
const maxLockDelay = 60 * time.Second

func (o lockOptions) mode() dlmv1.LockMode {
	if o.shared {
		return dlmv1.LockMode_LOCK_MODE_SHARED
	}
	return dlmv1.LockMode_LOCK_MODE_EXCLUSIVE
}

// wireMode is the mode as sent: unset for exclusive, so that a request for
// the default lock is the same as before modes existed.
func (o lockOptions) wireMode() dlmv1.LockMode {
	if o.shared {
		return dlmv1.LockMode_LOCK_MODE_SHARED
	}
	return dlmv1.LockMode_LOCK_MODE_UNSPECIFIED
}

// lockField is the name as the API carries it: unset for the default lock.
func lockField(name string) *string {
	if name == "" {
		return nil
	}
	return &name
}

// errWaitTimeout is the cause of an acquire that waited as long as Timeout
// allows.
var errWaitTimeout = errors.New("dlm: the lock was not granted in time")

// waitTimeoutError matches ErrNotAvailable (the lock stayed busy) and
// context.DeadlineExceeded (a wait ran out), as callers of either style
// expect.
type waitTimeoutError struct {
	name string
	d    time.Duration
}

func (e *waitTimeoutError) Error() string {
	return fmt.Sprintf("dlm: %s was not granted within %v", describeLock(e.name), e.d)
}

func (e *waitTimeoutError) Unwrap() []error {
	return []error{ErrNotAvailable, errWaitTimeout, context.DeadlineExceeded}
}

// describeLock names a lock for people.
func describeLock(name string) string {
	if name == "" {
		return "the default lock"
	}
	return fmt.Sprintf("lock %q", name)
}
