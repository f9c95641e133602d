package service

import (
	"context"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
	"github.com/dlm/dlm/server/node"
)

// CheckToken answers whether a token is a lock's current grant.
func (s *Service) CheckToken(ctx context.Context, req *connect.Request[dlmv1.CheckTokenRequest]) (*connect.Response[dlmv1.CheckTokenResponse], error) {
	tc, err := s.b.CheckToken(ctx, req.Msg.Lock, req.Msg.GetToken())
	if err != nil {
		return nil, toConnect(err)
	}
	res := &dlmv1.CheckTokenResponse{Current: tc.Current, LatestToken: tc.LatestToken, StateIndex: tc.StateIndex}
	if tc.Current {
		res.Mode = modeOf(tc.Mode)
	}
	return connect.NewResponse(res), nil
}

// ListLocks lists the live locks.
func (s *Service) ListLocks(ctx context.Context, req *connect.Request[dlmv1.ListLocksRequest]) (*connect.Response[dlmv1.ListLocksResponse], error) {
	m := req.Msg
	page, err := s.b.ListLocks(ctx, node.LocksQuery{PageSize: int(m.GetPageSize()), PageToken: m.GetPageToken(), Consistent: m.GetConsistent()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &dlmv1.ListLocksResponse{NextPageToken: page.NextPageToken, LockCount: page.LockCount, StateIndex: page.StateIndex}
	for _, l := range page.Locks {
		res.Locks = append(res.Locks, lockStatus(l))
	}
	return connect.NewResponse(res), nil
}

// LockHistory returns the remembered grants.
func (s *Service) LockHistory(_ context.Context, req *connect.Request[dlmv1.LockHistoryRequest]) (*connect.Response[dlmv1.LockHistoryResponse], error) {
	h, err := s.b.LockHistory(req.Msg.Lock, int(req.Msg.GetLimit()))
	if err != nil {
		return nil, toConnect(err)
	}
	res := &dlmv1.LockHistoryResponse{Capacity: lockstate.HistoryCapacity, StateIndex: h.StateIndex, Events: make([]*dlmv1.LockEvent, len(h.Events))}
	for i, e := range h.Events {
		res.Events[i] = &dlmv1.LockEvent{
			Lock: e.Lock, Token: e.Token, ClientId: e.ClientID, HolderName: e.HolderName, Mode: modeOf(e.Mode),
			GrantedUnixMs: e.GrantedUnixMs, EndedUnixMs: e.EndedUnixMs, End: e.End,
		}
	}
	return connect.NewResponse(res), nil
}
