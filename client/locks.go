package client

import (
	"context"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// maxListPages bounds how many pages ListLocks asks for, so that a service
// whose page tokens never end cannot keep it busy: the live locks are
// capped (10000 by default), which takes a hundred pages of 1000.
const maxListPages = 1000

// CheckToken asks whether token is the current grant of the lock name (""
// for the default lock): Chubby's CheckSequencer, for a service that dlm
// does not own to refuse a stale holder's writes (see package fence). The
// leader answers after confirming its leadership, so the answer is
// linearizable. A lock that is not live fails with ErrLockUnknown: no token
// of it is current.
func (c *Reader) CheckToken(ctx context.Context, name string, token uint64) (*dlmv1.CheckTokenResponse, error) {
	var resp *dlmv1.CheckTokenResponse
	err := c.r.do(ctx, "CheckToken", 0, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		r, err := api.CheckToken(ctx, connect.NewRequest(&dlmv1.CheckTokenRequest{Lock: lockField(name), Token: token}))
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	return resp, err
}

// ListLocks returns every live lock (held, waited for, or in its
// lock-delay) in name order, the default lock first, asking for them page
// by page. With consistent set the leader answers each page after
// confirming its leadership. Each lock lists at most 100 waiters;
// QueueLength counts them all.
func (c *Reader) ListLocks(ctx context.Context, consistent bool) ([]*dlmv1.LockStatus, error) {
	var locks []*dlmv1.LockStatus
	req := &dlmv1.ListLocksRequest{PageSize: 1000, Consistent: consistent}
	for range maxListPages {
		resp, err := c.ListLocksPage(ctx, req)
		if err != nil {
			return nil, err
		}
		locks = append(locks, resp.GetLocks()...)
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	return locks, nil
}

// ListLocksPage asks for one page of the live locks.
func (c *Reader) ListLocksPage(ctx context.Context, req *dlmv1.ListLocksRequest) (*dlmv1.ListLocksResponse, error) {
	var resp *dlmv1.ListLocksResponse
	err := c.r.do(ctx, "ListLocks", 0, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		r, err := api.ListLocks(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	return resp, err
}

// LockHistory returns the last grants the service remembers, oldest first:
// who held which lock when, and how each grant ended. Set req.Lock for one
// lock's grants (leave it unset for every lock) and req.Limit for the newest
// few; a nil req asks for all.
func (c *Reader) LockHistory(ctx context.Context, req *dlmv1.LockHistoryRequest) (*dlmv1.LockHistoryResponse, error) {
	if req == nil {
		req = &dlmv1.LockHistoryRequest{}
	}
	var resp *dlmv1.LockHistoryResponse
	err := c.r.do(ctx, "LockHistory", 0, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		r, err := api.LockHistory(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	return resp, err
}
