package service

import (
	"context"

	"connectrpc.com/grpchealth"

	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// faultReporter is a backend that can find its storage faulty.
type faultReporter interface {
	StorageFault() string
}

// health answers NOT_SERVING while the backend reports a storage fault, so
// that a load balancer or orchestrator takes the node out of rotation.
type health struct {
	static grpchealth.Checker
	faults faultReporter
}

func healthChecker(svc *Service) grpchealth.Checker {
	h := &health{static: grpchealth.NewStaticChecker(dlmv1connect.LockServiceName)}
	h.faults, _ = svc.b.(faultReporter)
	return h
}

func (h *health) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	res, err := h.static.Check(ctx, req)
	if err != nil || h.faults == nil {
		return res, err
	}
	if h.faults.StorageFault() != "" {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return res, err
}
