package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// The service refuses the keepalives of a session that cannot make
// progress (its outcome table is full): the lease will run out, so the
// holder learns at once that its lock is lost, with the reason.
func TestKeepAliveRefusedForTooManyRequestsLosesTheLock(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick(client.WithLease(3*time.Second))...)
	lk, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f.setFailAlways("KeepAlive", reasonErr(connect.CodeResourceExhausted, dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS, ""))
	select {
	case <-lk.Lost():
	case <-time.After(2 * time.Second):
		t.Fatal("the lock was not reported lost before its lease could run out")
	}
	cause := context.Cause(lk.Context())
	if !errors.Is(cause, client.ErrLockExpired) || !errors.Is(cause, client.ErrTooManyRequests) {
		t.Errorf("context cause = %v, want ErrLockExpired and ErrTooManyRequests", cause)
	}
}
