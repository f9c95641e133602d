package node

import (
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// A session whose table of unacknowledged outcomes is full can change
// nothing until one of its requests acknowledges them. A client whose
// acknowledgement is stuck (it lost track of a request) never gets out: if
// its keepalives still renewed the lease, a lock it holds would never pass
// on. So the leader renews no lease of a saturated session, neither on a
// keepalive nor on any other call: the lease runs out, the session expires,
// its critical section is dropped and the lock goes to the next waiter. A
// request whose acknowledgement frees room before then carries on as usual.

// saturatedError refuses a keepalive of a saturated session.
func saturatedError() error {
	return fail(dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS,
		"too many unacknowledged requests in this session (%d): its lease is not renewed until a request acknowledges them (acked_below), so it expires and a lock it holds passes on",
		lockstate.DefaultLimits().MaxOutstanding)
}
