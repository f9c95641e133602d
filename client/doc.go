// Package client is the Go client library of dlm, the distributed lock
// manager that guards a set of append-only files.
//
// A Client is one session with the service. It keeps the session alive in
// the background, numbers every request so that retries are executed at
// most once, retries lost requests and unavailable servers with backoff
// within a bounded time, and follows the leader of a replicated cluster.
//
//	c, err := client.New(ctx, []string{"http://127.0.0.1:7070"})
//	...
//	defer c.Close(ctx)
//	err = c.WithLock(ctx, func(ctx context.Context, lk *client.Lock) error {
//		return lk.Append(ctx, "file_1", []byte("A"))
//	})
//
// Appends made under a Lock are staged by the server and reach the files
// only when the Lock is released: a critical section is all or nothing.
// When the lease runs out first (a stalled process, a long network
// partition), the server takes the lock away and discards the section; the
// Lock then reports it through Lost and its Context, and every later call
// under it fails with ErrLockExpired.
//
// Without options Acquire, TryAcquire and WithLock take the default lock,
// which guards the files, exclusively. LockName takes a named lock instead
// (it guards whatever its users agree on, and cannot append), Shared takes
// it in shared mode, Timeout bounds the wait and LockDelay sets the grant's
// lock-delay. One Client may hold several locks at once, each at most once;
// every Lock knows its Name, Mode and Token and reports its own loss. dlm
// does not detect deadlocks: take locks in one agreed order, or use
// TryAcquire or Timeout. A service that dlm does not own checks a holder's
// token with CheckToken (see package fence); ListLocks and LockHistory show
// the live locks and the last grants.
//
// Errors from the service are *Error values that match the package's
// sentinel errors with errors.Is, such as ErrLockExpired or ErrFileNotFound.
// When the service cannot be reached within the retry budget, calls fail
// with an error matching ErrUnavailable that wraps the last cause.
package client
