package service

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// CheckToken answers whether a token is a lock's current grant.
func (s *Service) CheckToken(context.Context, *connect.Request[dlmv1.CheckTokenRequest]) (*connect.Response[dlmv1.CheckTokenResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("CheckToken is not built yet"))
}

// ListLocks lists the live locks.
func (s *Service) ListLocks(context.Context, *connect.Request[dlmv1.ListLocksRequest]) (*connect.Response[dlmv1.ListLocksResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("ListLocks is not built yet"))
}

// LockHistory returns the remembered grants.
func (s *Service) LockHistory(context.Context, *connect.Request[dlmv1.LockHistoryRequest]) (*connect.Response[dlmv1.LockHistoryResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("LockHistory is not built yet"))
}
