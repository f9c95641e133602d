package node

import (
	"fmt"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// Error is a failure with a reason a client can act on.
type Error struct {
	Reason dlmv1.ErrorReason
	// LeaderURL names the leader with ERROR_REASON_NOT_LEADER, when known.
	LeaderURL string
	// Staged is, with ERROR_REASON_SECTION_INCOMPLETE, what the leader holds
	// staged for the grant: the client re-sends from place Appends+1.
	Staged Section
	Msg    string
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return "node: " + e.Msg
	}
	return "node: " + e.Reason.String()
}

func fail(r dlmv1.ErrorReason, format string, args ...any) *Error {
	return &Error{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// reasonError turns a recorded outcome's reason into an error, or nil. It
// carries no message: the service sends the reason's default one, written
// once in the proto (reason_spec in proto/dlm/v1/reason.proto).
func reasonError(r dlmv1.ErrorReason) error {
	if r == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return nil
	}
	return &Error{Reason: r}
}
