package service

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/leadership"
	"github.com/dlm/dlm/server/node"
)

// DefaultMaxPulseStreams bounds the open Pulse streams of one server. A
// client process opens one for all its sessions, so this is a bound on
// client processes, each costing a stream and two goroutines; the ones
// above it are refused and keep their sessions alive with KeepAlive.
const DefaultMaxPulseStreams = 4096

// maxGrantsPerMessage bounds the grants one PulseResponse carries.
const maxGrantsPerMessage = 1000

// WithMaxPulseStreams sets the cap on open Pulse streams (n > 0).
func WithMaxPulseStreams(n int) Option {
	return func(s *Service) {
		if n > 0 {
			s.maxPulses = int64(n)
		}
	}
}

// Pulse renews the sessions each request lists and sends back, besides one
// answer per request, the grants of their no_wait acquires. It ends with
// NOT_LEADER when this node does not lead or stops leading.
func (s *Service) Pulse(ctx context.Context, stream *connect.BidiStream[dlmv1.PulseRequest, dlmv1.PulseResponse]) error {
	if s.pulses.Add(1) > s.maxPulses {
		s.pulses.Add(-1)
		return toConnect(&node.Error{Reason: dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE,
			Msg: "this server has as many Pulse streams open as it allows: keep sessions alive with KeepAlive, or retry later"})
	}
	defer s.pulses.Add(-1)
	p, err := s.b.OpenPulse()
	if err != nil {
		return toConnect(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Sends happen on this goroutine only; receives on their own, so that
	// a grant goes out while the client sends nothing.
	answers := make(chan *dlmv1.PulseResponse)
	ended := make(chan error, 1)
	go func() { ended <- s.receivePulses(ctx, stream, p, answers) }()
	for {
		var msg *dlmv1.PulseResponse
		select {
		case msg = <-answers:
		case g := <-p.Grants():
			msg = &dlmv1.PulseResponse{Granted: []*dlmv1.PulseGrant{pulseGrant(g)}}
		case <-p.Lost():
			return toConnect(p.Err())
		case err := <-ended:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
		// Take along the grants already waiting.
	more:
		for len(msg.Granted) < maxGrantsPerMessage {
			select {
			case g := <-p.Grants():
				msg.Granted = append(msg.Granted, pulseGrant(g))
			default:
				break more
			}
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

func pulseGrant(g leadership.Granted) *dlmv1.PulseGrant {
	return &dlmv1.PulseGrant{ClientId: g.ClientID, Seq: g.Seq, Token: g.Token, Lock: g.Lock, Mode: modeOf(g.Mode)}
}

// receivePulses renews the sessions of each request and hands the answer to
// the sending goroutine. It returns nil when the client closes its side.
func (s *Service) receivePulses(ctx context.Context, stream *connect.BidiStream[dlmv1.PulseRequest, dlmv1.PulseResponse], p *node.Pulse, answers chan<- *dlmv1.PulseResponse) error {
	for {
		req, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		list := req.GetSessions()
		creds := make([]node.Credentials, len(list))
		for i, c := range list {
			creds[i] = node.Credentials{ClientID: c.GetClientId(), Secret: c.GetSecret()}
		}
		rs, err := p.Renew(creds)
		if err != nil {
			return toConnect(err)
		}
		msg := &dlmv1.PulseResponse{Renewed: make([]*dlmv1.SessionPulse, len(rs))}
		for i, r := range rs {
			msg.Renewed[i] = &dlmv1.SessionPulse{ClientId: r.ClientID, LeaseMs: uint32(r.Lease.Milliseconds()), Token: r.Token, ErrorReason: r.Reason, Held: heldLocks(r.Held)}
		}
		select {
		case answers <- msg:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
