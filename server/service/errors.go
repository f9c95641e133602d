package service

import (
	"errors"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
)

// codes maps each reason to its Connect code. Aborted is what connect's docs
// give for a failed sequencer (fencing) check; Unavailable means "back off
// and retry", which clients do only for that code.
var codes = map[dlmv1.ErrorReason]connect.Code{
	dlmv1.ErrorReason_ERROR_REASON_LOCK_EXPIRED:          connect.CodeAborted,
	dlmv1.ErrorReason_ERROR_REASON_NOT_HOLDER:            connect.CodeFailedPrecondition,
	dlmv1.ErrorReason_ERROR_REASON_FILE_NOT_FOUND:        connect.CodeNotFound,
	dlmv1.ErrorReason_ERROR_REASON_INVALID_FILE_NAME:     connect.CodeInvalidArgument,
	dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED:       connect.CodeFailedPrecondition,
	dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN:       connect.CodeNotFound,
	dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET:            connect.CodeUnauthenticated,
	dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER:            connect.CodeUnavailable,
	dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE:           connect.CodeUnavailable,
	dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_MISSING:      connect.CodeInvalidArgument,
	dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_ACKNOWLEDGED: connect.CodeFailedPrecondition,
	dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_REUSED:       connect.CodeInvalidArgument,
	dlmv1.ErrorReason_ERROR_REASON_DATA_EMPTY:            connect.CodeInvalidArgument,
	dlmv1.ErrorReason_ERROR_REASON_DATA_TOO_LARGE:        connect.CodeInvalidArgument,
	dlmv1.ErrorReason_ERROR_REASON_SECTION_TOO_LARGE:     connect.CodeResourceExhausted,
	dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS:     connect.CodeResourceExhausted,
	dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT:      connect.CodeInvalidArgument,
	dlmv1.ErrorReason_ERROR_REASON_DISK_FULL:             connect.CodeResourceExhausted,
	dlmv1.ErrorReason_ERROR_REASON_FILE_TOO_LARGE:        connect.CodeResourceExhausted,
	dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS:     connect.CodeResourceExhausted,
	dlmv1.ErrorReason_ERROR_REASON_INIT_RATE_LIMITED:     connect.CodeResourceExhausted,
	dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT:         connect.CodeUnavailable,
	dlmv1.ErrorReason_ERROR_REASON_MEMBER_CONFLICT:       connect.CodeAlreadyExists,
	dlmv1.ErrorReason_ERROR_REASON_MEMBER_UNKNOWN:        connect.CodeNotFound,
}

// toConnect is the one place where domain errors become Connect errors.
func toConnect(err error) error {
	var ne *node.Error
	if !errors.As(err, &ne) {
		return connect.NewError(connect.CodeInternal, err)
	}
	code, ok := codes[ne.Reason]
	if !ok {
		code = connect.CodeInternal
	}
	msg := ne.Msg
	if msg == "" {
		msg = ne.Reason.String()
	}
	cerr := connect.NewError(code, errors.New(msg))
	if d, derr := connect.NewErrorDetail(&dlmv1.ErrorDetail{Reason: ne.Reason, LeaderUrl: ne.LeaderURL}); derr == nil {
		cerr.AddDetail(d)
	}
	return cerr
}
