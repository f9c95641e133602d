package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// Sentinel errors. Service errors match them through (*Error).Is, so callers
// test errors.Is(err, client.ErrLockExpired) without reading messages.
var (
	// ErrLockExpired means the grant is no longer current: the lock was
	// released, revoked after the lease ran out, or granted anew. Nothing of
	// the critical section reached the files; acquire the lock again.
	ErrLockExpired = errors.New("dlm: lock expired")
	// ErrNotHolder means the session does not hold the lock.
	ErrNotHolder = errors.New("dlm: not the lock holder")
	// ErrFileNotFound means no file has the name.
	ErrFileNotFound = errors.New("dlm: file not found")
	// ErrInvalidFileName means the name is not of the form file_N.
	ErrInvalidFileName = errors.New("dlm: invalid file name")
	// ErrSessionExpired means the session's lease ran out or it was closed.
	ErrSessionExpired = errors.New("dlm: session expired")
	// ErrSessionUnknown means the service never opened the session.
	ErrSessionUnknown = errors.New("dlm: session unknown")
	// ErrBadSecret means the session secret did not match.
	ErrBadSecret = errors.New("dlm: bad session secret")
	// ErrNotAvailable means TryAcquire found the lock held by another
	// session.
	ErrNotAvailable = errors.New("dlm: lock not available")
	// ErrUnavailable means the service could not be reached, or could not
	// commit, within the retry budget. The error also wraps the last cause.
	ErrUnavailable = errors.New("dlm: service unavailable")
	// ErrDataEmpty means an append carried no data.
	ErrDataEmpty = errors.New("dlm: empty append")
	// ErrDataTooLarge means an append exceeded the per-append limit.
	ErrDataTooLarge = errors.New("dlm: append too large")
	// ErrSectionTooLarge means the critical section would exceed its size
	// limit; release or abort it and start another.
	ErrSectionTooLarge = errors.New("dlm: critical section too large")
	// ErrSequenceAcknowledged means a request's sequence number was below
	// the acknowledged mark, so the service no longer knows its answer.
	ErrSequenceAcknowledged = errors.New("dlm: request already acknowledged")
	// ErrTooManyRequests means the session has too many unacknowledged
	// requests.
	ErrTooManyRequests = errors.New("dlm: too many unacknowledged requests")
	// ErrDiskFull means the leader's data volume is below its free-space
	// minimum: nothing changed; retry once an operator has freed space.
	ErrDiskFull = errors.New("dlm: server disk full")
	// ErrFileTooLarge means the append would take its file past the
	// service's per-file size limit. Nothing changed.
	ErrFileTooLarge = errors.New("dlm: file too large")
	// ErrTooManySessions means the cluster has as many open sessions as its
	// limit (--max-sessions). Nothing changed. It is not retried: waiting
	// helps only once other sessions close or expire.
	ErrTooManySessions = errors.New("dlm: too many sessions")
	// ErrInitRateLimited means this client address opened sessions faster
	// than the server allows (--init-rate). Nothing changed; the message says
	// when to retry. It is not retried automatically, so a loop that opens
	// sessions slows down instead of hammering the server.
	ErrInitRateLimited = errors.New("dlm: opening sessions too fast")
	// ErrSectionIncomplete means the leader holds fewer staged appends for
	// the grant than the client sent (the leader changed inside the critical
	// section). Nothing changed. The client re-sends the section itself;
	// callers see it only when that is impossible.
	ErrSectionIncomplete = errors.New("dlm: critical section incomplete at the leader")
	// ErrReleaseInDoubt means a Release or Abort of the lock failed with
	// its outcome unknown (ErrUnavailable) and may have committed: Append
	// and Stage are refused, since the repeat must be the same request.
	// Repeat the Release (or Abort, which finishes it) first.
	ErrReleaseInDoubt = errors.New("dlm: a release of the lock may have committed already")
	// ErrInvalidArgument means the service refused a malformed request.
	ErrInvalidArgument = errors.New("dlm: invalid argument")
	// ErrNotAuthorized means the service refused the call's credential:
	// none or an unknown token (code Unauthenticated), or a token whose
	// role may not make the call (PermissionDenied). See WithToken.
	ErrNotAuthorized = errors.New("dlm: not authorized")
	// ErrMemberConflict means a membership change was refused: the id or
	// the Raft address is another member's. Nothing changed.
	ErrMemberConflict = errors.New("dlm: member conflict")
	// ErrMemberUnknown means a membership change named no member.
	ErrMemberUnknown = errors.New("dlm: member unknown")
	// ErrNotExclusive means the session holds the default lock in shared
	// mode, and only an exclusive holder may append. Nothing changed.
	ErrNotExclusive = errors.New("dlm: appends need the default lock held exclusively")
	// ErrLockUnknown means no live lock has the name: it is neither held,
	// nor waited for, nor in its lock-delay, so no token for it is current.
	ErrLockUnknown = errors.New("dlm: lock unknown")
	// ErrTooManyLocks means the service has as many live locks as its
	// limit, or the session holds or waits for as many as a session may.
	// Nothing changed.
	ErrTooManyLocks = errors.New("dlm: too many locks")
	// ErrLockModeMismatch means the session holds or waits for the lock in
	// the other mode; release it first. Nothing changed.
	ErrLockModeMismatch = errors.New("dlm: lock held or waited for in the other mode")
	// ErrClosed means the Client was closed.
	ErrClosed = errors.New("dlm: client closed")
)

// Error is an error answered by the service (or by the RPC layer on its
// way). errors.As gives the code and reason; errors.Is matches the sentinel
// of the reason.
type Error struct {
	// Code is the Connect code of the answer.
	Code connect.Code
	// Reason is the service's reason, from the error's ErrorDetail;
	// ERROR_REASON_UNSPECIFIED when the answer carried none.
	Reason dlmv1.ErrorReason
	// LeaderURL is the leader's base URL that came with NOT_LEADER.
	LeaderURL string
	// StagedAppends and StagedBytes came with SECTION_INCOMPLETE: what the
	// leader holds of the critical section (re-send from StagedAppends+1).
	StagedAppends uint32
	StagedBytes   uint64
	// Err is the underlying *connect.Error.
	Err error
}

// Error names the reason (or the code) and the service's message.
func (e *Error) Error() string {
	var msg string
	if ce := new(connect.Error); errors.As(e.Err, &ce) {
		msg = ce.Message()
	} else if e.Err != nil {
		msg = e.Err.Error()
	}
	var head string
	if s, ok := reasonSentinels[e.Reason]; ok {
		head = s.Error()
	} else {
		head = "dlm: " + e.Code.String()
	}
	if msg == "" {
		return head
	}
	return head + ": " + msg
}

// Unwrap returns the underlying *connect.Error.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel error of e's reason.
func (e *Error) Is(target error) bool {
	if target == ErrNotAuthorized {
		return e.Reason == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED &&
			(e.Code == connect.CodeUnauthenticated || e.Code == connect.CodePermissionDenied)
	}
	s, ok := reasonSentinels[e.Reason]
	return ok && s == target
}

// AsError interprets the error of a call made without this package (the
// generated LockServiceClient, another proxy) the way a Client does: its
// code, its reason and the leader it names. errors.Is matches it against
// the sentinels. It returns nil for nil.
func AsError(err error) *Error { return newError(err) }

// newError interprets a failed RPC. It returns nil for nil.
func newError(err error) *Error {
	if err == nil {
		return nil
	}
	if e := new(Error); errors.As(err, &e) {
		return e
	}
	e := &Error{Code: connect.CodeOf(err), Err: err}
	ce := new(connect.Error)
	if !errors.As(err, &ce) {
		return e
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if ed, ok := v.(*dlmv1.ErrorDetail); ok {
			e.Reason = ed.GetReason()
			e.LeaderURL = ed.GetLeaderUrl()
			e.StagedAppends, e.StagedBytes = ed.GetStagedAppends(), ed.GetStagedBytes()
			break
		}
	}
	return e
}

// reasonOf returns the service reason carried by err, if any.
func reasonOf(err error) dlmv1.ErrorReason {
	if err == nil {
		return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	if e := new(Error); errors.As(err, &e) {
		return e.Reason
	}
	return newError(err).Reason
}

// retryable reports whether a failed attempt may be repeated: the service
// gave no definite answer. Every request carries its sequence number, so a
// repeat is harmless even when the first attempt did reach the service.
// Retryable reports whether a Client repeats a call that failed with e
// (the same request, at the same or the next server) rather than return
// it: the retry class of its reason, in the proto, or else its code.
func (e *Error) Retryable() bool { return retryable(e) }

func retryable(err error) bool {
	if err == nil {
		return false
	}
	if tlsRefused(err) {
		return false
	}
	e := newError(err)
	if class, ok := reasonRetry[e.Reason]; ok {
		// The service answered with a reason this client knows: its retry
		// class (in the proto) decides. A reason newer than the client
		// falls back on the code below.
		return class == dlmv1.RetryClass_RETRY_CLASS_FOLLOW_LEADER || class == dlmv1.RetryClass_RETRY_CLASS_RETRY_SAME_REQUEST
	}
	if connect.IsWireError(e.Err) {
		// A proxy, or the RPC layer, answered. Only "try again" answers
		// are not final; everything else, even an unexpected code, is.
		switch e.Code {
		case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
			return true
		}
		return false
	}
	// Raised on this side: the connection was refused or reset, the stream
	// was reset, the attempt timed out, the answer was cut off. None of
	// these is an answer from the service.
	switch e.Code {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeCanceled,
		connect.CodeUnknown, connect.CodeInternal, connect.CodeResourceExhausted:
		return true
	}
	return false
}

// tlsRefused reports a TLS handshake that failed on trust: this side does
// not trust the server's certificate, or the server refused this side's.
// Those are settings to fix (a CA, a client certificate), not faults that
// retrying outlasts.
func tlsRefused(err error) bool {
	var (
		verify *tls.CertificateVerificationError
		op     *net.OpError
	)
	if errors.As(err, &verify) {
		return true
	}
	// The server's alert (bad certificate, certificate required) arrives
	// as a "remote error".
	return errors.As(err, &op) && op.Op == "remote error"
}

// retryError is returned when retries run out: either the retry budget
// (it matches ErrUnavailable) or the caller's context (it matches the
// context's error). It also wraps the last failure.
type retryError struct {
	op       string
	attempts int
	stop     error // ErrUnavailable, or the caller's context error
	last     error
}

func (e *retryError) Error() string {
	var b strings.Builder
	if e.stop == ErrUnavailable {
		fmt.Fprintf(&b, "%v: %s failed after %d attempts", ErrUnavailable, e.op, e.attempts)
	} else {
		fmt.Fprintf(&b, "dlm: %s: %v after %d attempts", e.op, e.stop, e.attempts)
	}
	if e.last != nil {
		fmt.Fprintf(&b, ": %v", e.last)
	}
	return b.String()
}

func (e *retryError) Unwrap() []error {
	if e.last == nil {
		return []error{e.stop}
	}
	return []error{e.stop, e.last}
}
