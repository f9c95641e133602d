package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// wireError builds an error as the client receives it from the service.
func wireError(t *testing.T, code connect.Code, reason dlmv1.ErrorReason, leader string) error {
	t.Helper()
	err := connect.NewWireError(code, errors.New("from the server"))
	d, derr := connect.NewErrorDetail(&dlmv1.ErrorDetail{Reason: reason, LeaderUrl: leader})
	if derr != nil {
		t.Fatal(derr)
	}
	err.AddDetail(d)
	return err
}

func TestErrorMapsReasonsToSentinels(t *testing.T) {
	for reason, want := range reasonSentinels {
		err := newError(wireError(t, connect.CodeFailedPrecondition, reason, ""))
		if !errors.Is(err, want) {
			t.Errorf("%v: errors.Is(%v) = false", reason, want)
		}
		for _, other := range []error{ErrLockExpired, ErrFileNotFound, ErrNotAvailable} {
			if other != want && errors.Is(err, other) {
				t.Errorf("%v matches %v too", reason, other)
			}
		}
		if !strings.HasPrefix(err.Error(), "dlm: ") {
			t.Errorf("%v: message %q lacks the dlm: prefix", reason, err)
		}
	}
}

func TestErrorCarriesCodeReasonAndCause(t *testing.T) {
	wrapped := fmt.Errorf("append: %w", newError(wireError(t, connect.CodeUnavailable, dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, "http://127.0.0.1:7071")))
	var e *Error
	if !errors.As(wrapped, &e) {
		t.Fatal("errors.As(*Error) = false")
	}
	if e.Code != connect.CodeUnavailable || e.Reason != dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER || e.LeaderURL != "http://127.0.0.1:7071" {
		t.Errorf("got code %v reason %v leader %q", e.Code, e.Reason, e.LeaderURL)
	}
	var ce *connect.Error
	if !errors.As(wrapped, &ce) || ce.Message() != "from the server" {
		t.Errorf("the connect error is not reachable: %v", ce)
	}
	if got := e.Error(); got != "dlm: service unavailable: from the server" {
		t.Errorf("Error() = %q", got)
	}
}

func TestErrorWithoutDetail(t *testing.T) {
	e := newError(connect.NewWireError(connect.CodeInternal, errors.New("boom")))
	if e.Reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED || e.Code != connect.CodeInternal {
		t.Errorf("got %v %v", e.Code, e.Reason)
	}
	if got := e.Error(); got != "dlm: internal: boom" {
		t.Errorf("Error() = %q", got)
	}
	for _, s := range reasonSentinels {
		if errors.Is(e, s) {
			t.Errorf("an error without reason matches %v", s)
		}
	}
}

func TestRetryable(t *testing.T) {
	reason := func(code connect.Code, r dlmv1.ErrorReason) error { return wireError(t, code, r, "") }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"not leader", reason(connect.CodeUnavailable, dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER), true},
		{"no majority", reason(connect.CodeUnavailable, dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE), true},
		{"proxy 503", connect.NewWireError(connect.CodeUnavailable, errors.New("HTTP status 503")), true},
		{"server deadline", connect.NewWireError(connect.CodeDeadlineExceeded, errors.New("late")), true},
		{"connection refused", connect.NewError(connect.CodeUnavailable, errors.New("dial tcp: connect: connection refused")), true},
		{"attempt timeout", connect.NewError(connect.CodeDeadlineExceeded, context.DeadlineExceeded), true},
		{"stream reset", connect.NewError(connect.CodeInternal, errors.New("stream error: INTERNAL_ERROR; received from peer")), true},
		{"answer cut off", connect.NewError(connect.CodeUnknown, io.ErrUnexpectedEOF), true},
		{"plain error", errors.New("no code"), true},
		{"lock expired", reason(connect.CodeAborted, dlmv1.ErrorReason_ERROR_REASON_LOCK_EXPIRED), false},
		{"not holder", reason(connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_NOT_HOLDER), false},
		{"file not found", reason(connect.CodeNotFound, dlmv1.ErrorReason_ERROR_REASON_FILE_NOT_FOUND), false},
		{"bad file name", reason(connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_INVALID_FILE_NAME), false},
		{"bad secret", reason(connect.CodeUnauthenticated, dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET), false},
		{"section too large", reason(connect.CodeResourceExhausted, dlmv1.ErrorReason_ERROR_REASON_SECTION_TOO_LARGE), false},
		{"server internal", connect.NewWireError(connect.CodeInternal, errors.New("bug")), false},
		{"unimplemented", connect.NewWireError(connect.CodeUnimplemented, errors.New("404")), false},
		{"nil", nil, false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("%s: retryable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRetryErrorMatchesStopAndCause(t *testing.T) {
	last := newError(wireError(t, connect.CodeUnavailable, dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, ""))
	budget := &retryError{op: "AppendFile", attempts: 7, stop: ErrUnavailable, last: last}
	if !errors.Is(budget, ErrUnavailable) || errors.Is(budget, context.DeadlineExceeded) {
		t.Errorf("budget error %v: wrong matches", budget)
	}
	if e := new(Error); !errors.As(budget, &e) || e.Reason != dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE {
		t.Errorf("the last cause is not reachable from %v", budget)
	}
	if got := budget.Error(); !strings.Contains(got, "AppendFile failed after 7 attempts") {
		t.Errorf("Error() = %q", got)
	}
	caller := &retryError{op: "LockAcquire", attempts: 2, stop: context.DeadlineExceeded, last: last}
	if !errors.Is(caller, context.DeadlineExceeded) {
		t.Errorf("caller error %v does not match context.DeadlineExceeded", caller)
	}
}

// TestEveryReasonHasASentinel checks that the client_error the proto names
// for each reason is a sentinel of this package, and that the retry policy
// was read.
func TestEveryReasonHasASentinel(t *testing.T) {
	vals := dlmv1.ErrorReason(0).Descriptor().Values()
	for i := 1; i < vals.Len(); i++ {
		r := dlmv1.ErrorReason(vals.Get(i).Number())
		if reasonSentinels[r] == nil || reasonRetry[r] == dlmv1.RetryClass_RETRY_CLASS_UNSPECIFIED {
			t.Errorf("%v: sentinel %v, retry class %v", r, reasonSentinels[r], reasonRetry[r])
		}
	}
	if backoffBase <= 0 || backoffMax < backoffBase || refusedFor <= 0 || maxRedirects <= 0 {
		t.Errorf("retry policy: base %v max %v refusedFor %v redirects %d", backoffBase, backoffMax, refusedFor, maxRedirects)
	}
}
