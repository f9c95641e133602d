package client

import (
	"time"

	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// What each reason means is written once, as options on the proto's
// ErrorReason values (proto/dlm/v1/reason.proto); the server and the
// TypeScript client read the same options. This file turns them into the
// client's tables once, at start-up.

var (
	// reasonRetry is each reason's retry class.
	reasonRetry = make(map[dlmv1.ErrorReason]dlmv1.RetryClass)
	// reasonSentinels is each reason's sentinel error, named by the
	// reason's client_error.
	reasonSentinels = make(map[dlmv1.ErrorReason]error)
	// policy paces repeated requests.
	policy = readPolicy()

	backoffBase  = time.Duration(policy.GetBackoffBaseMs()) * time.Millisecond
	backoffMax   = time.Duration(policy.GetBackoffMaxMs()) * time.Millisecond
	refusedFor   = time.Duration(policy.GetRefusedForMs()) * time.Millisecond
	maxRedirects = int(policy.GetMaxRedirects())
)

// sentinelNames gives each sentinel the name that client_error uses for it.
var sentinelNames = map[string]error{
	"LockExpired":          ErrLockExpired,
	"NotHolder":            ErrNotHolder,
	"FileNotFound":         ErrFileNotFound,
	"InvalidFileName":      ErrInvalidFileName,
	"SessionExpired":       ErrSessionExpired,
	"SessionUnknown":       ErrSessionUnknown,
	"BadSecret":            ErrBadSecret,
	"Unavailable":          ErrUnavailable,
	"DataEmpty":            ErrDataEmpty,
	"DataTooLarge":         ErrDataTooLarge,
	"SectionTooLarge":      ErrSectionTooLarge,
	"SequenceAcknowledged": ErrSequenceAcknowledged,
	"TooManyRequests":      ErrTooManyRequests,
	"DiskFull":             ErrDiskFull,
	"FileTooLarge":         ErrFileTooLarge,
	"TooManySessions":      ErrTooManySessions,
	"InitRateLimited":      ErrInitRateLimited,
	"SectionIncomplete":    ErrSectionIncomplete,
	"InvalidArgument":      ErrInvalidArgument,
	"MemberConflict":       ErrMemberConflict,
	"MemberUnknown":        ErrMemberUnknown,
	"NotExclusive":         ErrNotExclusive,
	"LockUnknown":          ErrLockUnknown,
	"TooManyLocks":         ErrTooManyLocks,
	"LockModeMismatch":     ErrLockModeMismatch,
}

func init() {
	vals := dlmv1.ErrorReason(0).Descriptor().Values()
	for i := range vals.Len() {
		v := vals.Get(i)
		spec, _ := proto.GetExtension(v.Options(), dlmv1.E_ReasonSpec).(*dlmv1.ReasonSpec)
		if spec == nil {
			continue
		}
		r := dlmv1.ErrorReason(v.Number())
		reasonRetry[r] = spec.GetRetry()
		if s, ok := sentinelNames[spec.GetClientError()]; ok {
			reasonSentinels[r] = s
		}
	}
}

func readPolicy() *dlmv1.RetryPolicy {
	p, _ := proto.GetExtension(dlmv1.ErrorReason(0).Descriptor().Options(), dlmv1.E_RetryPolicy).(*dlmv1.RetryPolicy)
	return p
}
