package service

import (
	"context"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/lockstate"
	"github.com/dlm/dlm/server/node"
)

// Backend is what the service needs of a node.
type Backend interface {
	OpenSession(ctx context.Context, lease time.Duration, name string) (node.Session, error)
	KeepAlive(id uint64, secret string) (node.Renewal, error)
	AcquireLock(ctx context.Context, c node.Caller, w node.Want, try bool, wait time.Duration) (node.Grant, error)
	AcquireLockNoWait(ctx context.Context, c node.Caller, w node.Want) (node.Grant, error)
	OpenPulse() (*node.Pulse, error)
	ReleaseLock(ctx context.Context, c node.Caller, lock *string, token uint64, abort bool, counts *node.Section, appends []lockstate.Write) (node.Section, error)
	Append(ctx context.Context, c node.Caller, token uint64, file string, data []byte, position uint32) (node.Section, error)
	Close(ctx context.Context, c node.Caller) error
	ReadFile(ctx context.Context, name string, offset, limit int64) ([]byte, int64, int64, error)
	Status(ctx context.Context, q node.StatusQuery) (node.Status, error)
	CheckToken(ctx context.Context, lock *string, token uint64) (node.TokenCheck, error)
	ListLocks(ctx context.Context, q node.LocksQuery) (node.LocksPage, error)
	LockHistory(lock *string, limit int) (node.History, error)
}

var _ Backend = (*node.Node)(nil)

// Service implements the LockService handler over a Backend.
type Service struct {
	b     Backend
	inits *initLimiter
	// pulses counts the open Pulse streams, at most maxPulses.
	pulses    atomic.Int64
	maxPulses int64
}

// Option configures a Service.
type Option func(*Service)

// WithInitRate limits how fast each client address opens sessions.
func WithInitRate(r InitRate) Option {
	return func(s *Service) { s.inits = newInitLimiter(r) }
}

var _ dlmv1connect.LockServiceHandler = (*Service)(nil)

// New returns the service for b.
func New(b Backend, opts ...Option) *Service {
	s := &Service{b: b, maxPulses: DefaultMaxPulseStreams}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Init opens a session.
func (s *Service) Init(ctx context.Context, req *connect.Request[dlmv1.InitRequest]) (*connect.Response[dlmv1.InitResponse], error) {
	if s.inits != nil {
		if ok, wait := s.inits.allow(req.Peer().Addr); !ok {
			return nil, toConnect(rateLimited(wait))
		}
	}
	ses, err := s.b.OpenSession(ctx, time.Duration(req.Msg.GetLeaseMs())*time.Millisecond, req.Msg.GetName())
	if err != nil {
		if s.inits != nil {
			// Only sessions opened count against the address.
			s.inits.refund(req.Peer().Addr)
		}
		return nil, toConnect(err)
	}
	return connect.NewResponse(&dlmv1.InitResponse{
		ClientId: ses.ClientID, Secret: ses.Secret, LeaseMs: uint32(ses.Lease.Milliseconds()),
	}), nil
}

// KeepAlive renews a session's lease.
func (s *Service) KeepAlive(_ context.Context, req *connect.Request[dlmv1.KeepAliveRequest]) (*connect.Response[dlmv1.KeepAliveResponse], error) {
	r, err := s.b.KeepAlive(req.Msg.GetClientId(), req.Msg.GetSecret())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&dlmv1.KeepAliveResponse{LeaseMs: uint32(r.Lease.Milliseconds()), Token: r.Token, Held: heldLocks(r.Held)}), nil
}

// LockAcquire grants the lock or waits in the queue.
func (s *Service) LockAcquire(ctx context.Context, req *connect.Request[dlmv1.LockAcquireRequest]) (*connect.Response[dlmv1.LockAcquireResponse], error) {
	m := req.Msg
	c := caller(m.GetClientId(), m.GetSecret(), m.GetSeq(), m.GetAckedBelow())
	var (
		g   node.Grant
		err error
	)
	w := node.Want{Lock: m.Lock, Mode: m.GetMode(), DelayMs: m.LockDelayMs}
	if m.GetNoWait() && !m.GetTry() {
		g, err = s.b.AcquireLockNoWait(ctx, c, w)
	} else {
		g, err = s.b.AcquireLock(ctx, c, w, m.GetTry(), time.Duration(m.GetWaitMs())*time.Millisecond)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&dlmv1.LockAcquireResponse{
		Granted: g.Granted, Token: g.Token, Queued: g.Queued, QueuePosition: uint32(g.Position),
		Lock: g.Lock, Mode: g.Mode,
	}), nil
}

// LockRelease ends a critical section.
func (s *Service) LockRelease(ctx context.Context, req *connect.Request[dlmv1.LockReleaseRequest]) (*connect.Response[dlmv1.LockReleaseResponse], error) {
	m := req.Msg
	var counts *node.Section
	if m.SectionAppends != nil || m.SectionBytes != nil {
		counts = &node.Section{Appends: m.GetSectionAppends(), Bytes: m.GetSectionBytes()}
	}
	var appends []lockstate.Write
	for _, a := range m.GetAppends() {
		appends = append(appends, lockstate.Write{File: a.GetFile(), Data: a.GetData()})
	}
	o, err := s.b.ReleaseLock(ctx, caller(m.GetClientId(), m.GetSecret(), m.GetSeq(), m.GetAckedBelow()), m.Lock, m.GetToken(), m.GetAbort(), counts, appends)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&dlmv1.LockReleaseResponse{CommittedAppends: o.Appends, CommittedBytes: o.Bytes}), nil
}

// AppendFile stages an append.
func (s *Service) AppendFile(ctx context.Context, req *connect.Request[dlmv1.AppendFileRequest]) (*connect.Response[dlmv1.AppendFileResponse], error) {
	m := req.Msg
	if m.Lock != nil {
		return nil, toConnect(&node.Error{Reason: dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_DEFAULT_LOCK,
			Msg: "the append names a lock: files are guarded by the default lock, so leave the lock unset; nothing changed"})
	}
	o, err := s.b.Append(ctx, caller(m.GetClientId(), m.GetSecret(), m.GetSeq(), m.GetAckedBelow()), m.GetToken(), m.GetFile(), m.GetData(), m.GetPosition())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&dlmv1.AppendFileResponse{StagedAppends: o.Appends, StagedBytes: o.Bytes}), nil
}

// Close ends a session.
func (s *Service) Close(ctx context.Context, req *connect.Request[dlmv1.CloseRequest]) (*connect.Response[dlmv1.CloseResponse], error) {
	m := req.Msg
	if err := s.b.Close(ctx, caller(m.GetClientId(), m.GetSecret(), m.GetSeq(), m.GetAckedBelow())); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&dlmv1.CloseResponse{Status: "disconnected"}), nil
}

// ReadFile returns committed bytes of a file.
func (s *Service) ReadFile(ctx context.Context, req *connect.Request[dlmv1.ReadFileRequest]) (*connect.Response[dlmv1.ReadFileResponse], error) {
	data, off, size, err := s.b.ReadFile(ctx, req.Msg.GetFile(), req.Msg.GetOffset(), req.Msg.GetLimit())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&dlmv1.ReadFileResponse{Data: data, Offset: off, Size: size}), nil
}

// Status describes the service.
func (s *Service) Status(ctx context.Context, req *connect.Request[dlmv1.StatusRequest]) (*connect.Response[dlmv1.StatusResponse], error) {
	st, err := s.b.Status(ctx, statusQuery(req.Msg))
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(statusResponse(st)), nil
}

// modeOf is the mode the API shows for a grant: never unspecified.
func modeOf(m dlmv1.LockMode) dlmv1.LockMode {
	if m == dlmv1.LockMode_LOCK_MODE_UNSPECIFIED {
		return dlmv1.LockMode_LOCK_MODE_EXCLUSIVE
	}
	return m
}

// heldLocks is the API's list of a session's grants.
func heldLocks(held []lockstate.HeldLock) []*dlmv1.HeldLock {
	out := make([]*dlmv1.HeldLock, len(held))
	for i, h := range held {
		out[i] = &dlmv1.HeldLock{Lock: h.Lock, Token: h.Token, Mode: modeOf(h.Mode)}
	}
	return out
}

func caller(id uint64, secret string, seq, acked uint64) node.Caller {
	return node.Caller{ClientID: id, Secret: secret, Seq: seq, AckedBelow: acked}
}
