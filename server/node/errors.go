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
	Msg       string
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

// reasonError turns a recorded outcome's reason into an error, or nil.
func reasonError(r dlmv1.ErrorReason) error {
	if r == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return nil
	}
	return &Error{Reason: r, Msg: messages[r]}
}

var messages = map[dlmv1.ErrorReason]string{
	dlmv1.ErrorReason_ERROR_REASON_LOCK_EXPIRED:          "the fencing token is not the current grant: the lock was released, revoked or granted anew",
	dlmv1.ErrorReason_ERROR_REASON_NOT_HOLDER:            "the session does not hold the lock",
	dlmv1.ErrorReason_ERROR_REASON_FILE_NOT_FOUND:        "no such file: files are file_0 to file_99",
	dlmv1.ErrorReason_ERROR_REASON_INVALID_FILE_NAME:     "malformed file name: files are file_0 to file_99",
	dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED:       "the session expired or was closed: open a new one",
	dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN:       "no such session",
	dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET:            "the secret does not match the session",
	dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_MISSING:      "the request has no sequence number (seq must be > 0)",
	dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_ACKNOWLEDGED: "the sequence number is below the session's acknowledged mark",
	dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_REUSED:       "the sequence number was already used by this session for a request of another method; use a new one",
	dlmv1.ErrorReason_ERROR_REASON_DATA_EMPTY:            "the append carries no data",
	dlmv1.ErrorReason_ERROR_REASON_SECTION_TOO_LARGE:     "the critical section would exceed its size limit",
	dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS:     "too many unacknowledged requests in this session",
	dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT:      "malformed request",
	dlmv1.ErrorReason_ERROR_REASON_DISK_FULL:             "the server's data disk is below its free-space minimum: nothing changed; free space and retry",
	dlmv1.ErrorReason_ERROR_REASON_FILE_TOO_LARGE:        "the append would make the file larger than the server's per-file limit",
	dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS:     "the cluster has as many open sessions as its limit (--max-sessions): nothing changed",
	dlmv1.ErrorReason_ERROR_REASON_INIT_RATE_LIMITED:     "this address opens sessions too fast (--init-rate): nothing changed; retry later",
	dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT:         "this node's storage is faulty and it does not serve: try another node",
}
