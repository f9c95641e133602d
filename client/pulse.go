package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// The sessions of one process share one Pulse stream per set of servers:
// their keepalives travel together, a few per message, and the grants of
// their waiting acquires come back on it. The server answers it from
// memory, so a thousand idle sessions cost it a few small messages a
// second instead of a thousand calls.

// maxPulseBatch is the server's limit on sessions per Pulse message.
const maxPulseBatch = 1000

// maxGather bounds how long a keepalive waits for others to travel with it.
// Each waits at most a twentieth of its lease, so short leases are not
// put at risk.
const maxGather = 200 * time.Millisecond

// Without Pulse (an older server answers Unimplemented; a proxy that
// cannot stream fails it again and again) keepalives go as KeepAlive calls
// for a while before the stream is tried again.
const (
	noPulseFor        = time.Minute
	maxStreamFailures = 3
)

// errNoPulse says the keepalive must go as a KeepAlive call.
var errNoPulse = errors.New("dlm: no Pulse stream")

// renewal is one session's keepalive waiting for its answer.
type renewal struct {
	s        *session
	sendBy   time.Time
	redirect int
	done     chan renewed
}

type renewed struct {
	lease time.Duration
	held  []*dlmv1.HeldLock
	err   error
}

type grantKey struct{ id, seq uint64 }

// pulser keeps the Pulse stream of one set of servers for the process.
type pulser struct {
	eps            *endpoints
	log            *slog.Logger
	attemptTimeout time.Duration

	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	pending []*renewal
	// noPulseUntil, when in the future, sends keepalives as KeepAlive.
	noPulseUntil time.Time
	failures     int
	// gen numbers the streams; renewedOn says on which one each session
	// was last renewed, so an acquire knows whether its grant will come.
	gen       uint64
	live      bool
	renewedOn map[uint64]uint64
	grants    map[grantKey]chan uint64
	// reset is closed, and replaced, when a stream ends: grants may have
	// been lost with it, so waiting acquires ask again.
	reset chan struct{}
}

func newPulser(eps *endpoints, log *slog.Logger, attemptTimeout time.Duration) *pulser {
	p := &pulser{
		eps: eps, log: log, attemptTimeout: attemptTimeout,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		renewedOn: make(map[uint64]uint64), grants: make(map[grantKey]chan uint64), reset: make(chan struct{}),
	}
	go p.run()
	return p
}

func (p *pulser) close() {
	close(p.stop)
	<-p.done
}

// usable reports whether keepalives go on the stream now.
func (p *pulser) usable() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return time.Now().After(p.noPulseUntil)
}

// renew renews session s on the stream and returns its lease and held
// grants, the session's own refusal, a stream failure, or errNoPulse. A
// keepalive waits a little for others to travel with it; an urgent renewal
// (an acquire about to wait for its grant) goes at once.
func (p *pulser) renew(ctx context.Context, s *session, urgent bool) (time.Duration, []*dlmv1.HeldLock, error) {
	sendBy := time.Now()
	if !urgent {
		sendBy = sendBy.Add(min(maxGather, s.leaseLength()/20))
	}
	r := &renewal{s: s, sendBy: sendBy, done: make(chan renewed, 1)}
	p.mu.Lock()
	if !time.Now().After(p.noPulseUntil) {
		p.mu.Unlock()
		return 0, nil, errNoPulse
	}
	p.pending = append(p.pending, r)
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	select {
	case a := <-r.done:
		return a.lease, a.held, a.err
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-p.stop:
		return 0, nil, ErrClosed
	}
}

// listening reports whether s was renewed on the stream open now, so its
// grants come on it.
func (p *pulser) listening(s *session) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live && p.renewedOn[s.id] == p.gen
}

// await registers a waiting acquire: its grant's token arrives on the
// channel; reset is closed if the stream ends before. Call done when the
// acquire stops waiting.
func (p *pulser) await(id, seq uint64) (grant <-chan uint64, reset <-chan struct{}, done func()) {
	ch := make(chan uint64, 1)
	k := grantKey{id, seq}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.grants[k] = ch
	return ch, p.reset, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.grants, k)
	}
}

// resetChan is the channel closed when the current stream ends.
func (p *pulser) resetChan() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reset
}

// pulseStream is one open stream and the batches it owes answers for.
type pulseStream struct {
	gen    uint64
	url    string
	s      *connect.BidiStreamForClient[dlmv1.PulseRequest, dlmv1.PulseResponse]
	cancel context.CancelFunc
	ended  chan struct{}

	mu       sync.Mutex
	inflight [][]*renewal
	// dueBy is when each unanswered message's answer is overdue.
	dueBy []time.Time
	// answered is set by the first message from the server: a stream
	// that ends before it counts as a failure to stream at all.
	answered bool
}

// close ends the stream and waits for its reader. Only the goroutine that
// sends may call it.
func (st *pulseStream) close() {
	st.cancel()
	// Ends the request body too, which an HTTP layer may be reading.
	st.s.CloseRequest()
	<-st.ended
	st.s.CloseResponse()
}

// overdue reports whether the oldest unanswered message is overdue.
func (st *pulseStream) overdue(now time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.dueBy) > 0 && now.After(st.dueBy[0])
}

func (p *pulser) run() {
	defer close(p.done)
	var st *pulseStream
	defer func() {
		if st != nil {
			st.close()
		}
	}()
	check := time.NewTicker(min(max(p.attemptTimeout/2, 10*time.Millisecond), 50*time.Millisecond))
	defer check.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		case <-check.C:
		}
		if st != nil {
			select {
			case <-st.ended:
				st.close()
				st = nil
			default:
				if st.overdue(time.Now()) {
					// The server stopped answering on a connection that
					// stays open: start over, maybe elsewhere.
					p.log.Debug("dlm: Pulse stream unanswered; reopening", "endpoint", st.url)
					p.eps.failed(st.url, connect.NewError(connect.CodeDeadlineExceeded, errors.New("the Pulse stream went unanswered")))
					st.close()
					st = nil
				}
			}
		}
		if !p.gather() {
			return
		}
		for {
			batch := p.take()
			if len(batch) == 0 {
				break
			}
			if !p.usable() {
				p.answerAll(batch, renewed{err: errNoPulse})
				continue
			}
			if st == nil {
				st = p.open()
			}
			// An answer is overdue when the keepalive that waits for it
			// would give up: an attempt, or a third of the shortest lease.
			due := p.attemptTimeout
			for _, r := range batch {
				due = min(due, r.s.leaseLength()/3)
			}
			st.mu.Lock()
			st.inflight = append(st.inflight, batch)
			st.dueBy = append(st.dueBy, time.Now().Add(max(due, 10*time.Millisecond)))
			st.mu.Unlock()
			req := &dlmv1.PulseRequest{Sessions: make([]*dlmv1.SessionCredentials, len(batch))}
			for i, r := range batch {
				req.Sessions[i] = &dlmv1.SessionCredentials{ClientId: r.s.id, Secret: r.s.secret}
			}
			if err := st.s.Send(req); err != nil {
				// The reader gets the stream's own error and answers
				// the batch; wait for it, bounded by the attempt.
				select {
				case <-st.ended:
				case <-time.After(p.attemptTimeout):
				case <-p.stop:
				}
				st.close()
				st = nil
			}
		}
	}
}

// gather waits until the earliest pending keepalive must go. It reports
// false when the pulser stops.
func (p *pulser) gather() bool {
	p.mu.Lock()
	var first time.Time
	for _, r := range p.pending {
		if first.IsZero() || r.sendBy.Before(first) {
			first = r.sendBy
		}
	}
	p.mu.Unlock()
	if first.IsZero() {
		return true
	}
	if d := time.Until(first); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-p.stop:
			return false
		}
	}
	return true
}

// take removes up to one message's worth of pending keepalives.
func (p *pulser) take() []*renewal {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(p.pending), maxPulseBatch)
	batch := append([]*renewal(nil), p.pending[:n]...)
	p.pending = p.pending[n:]
	if len(p.pending) == 0 {
		p.pending = nil
	}
	return batch
}

func (p *pulser) answerAll(batch []*renewal, a renewed) {
	for _, r := range batch {
		r.done <- a
	}
}

// open starts a stream at the current server, with a reader goroutine.
func (p *pulser) open() *pulseStream {
	u, api := p.eps.pick()
	ctx, cancel := context.WithCancel(context.Background())
	p.mu.Lock()
	p.gen++
	p.live = true
	gen := p.gen
	p.mu.Unlock()
	st := &pulseStream{gen: gen, url: u, s: api.Pulse(ctx), cancel: cancel, ended: make(chan struct{})}
	go p.read(st)
	return st
}

// read takes the answers and grants of st until it ends.
func (p *pulser) read(st *pulseStream) {
	defer close(st.ended)
	for {
		msg, err := st.s.Receive()
		if err != nil {
			p.ended(st, err)
			return
		}
		st.mu.Lock()
		st.answered = true
		st.mu.Unlock()
		if len(msg.GetGranted()) > 0 {
			p.granted(msg.GetGranted())
		}
		if len(msg.GetRenewed()) == 0 {
			continue
		}
		st.mu.Lock()
		var batch []*renewal
		if len(st.inflight) > 0 {
			batch = st.inflight[0]
			st.inflight, st.dueBy = st.inflight[1:], st.dueBy[1:]
		}
		st.mu.Unlock()
		p.answered(st, batch, msg.GetRenewed())
	}
}

func (p *pulser) granted(gs []*dlmv1.PulseGrant) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range gs {
		if ch, ok := p.grants[grantKey{g.GetClientId(), g.GetSeq()}]; ok {
			select {
			case ch <- g.GetToken():
			default:
			}
		}
	}
}

// answered hands each session of batch its answer.
func (p *pulser) answered(st *pulseStream, batch []*renewal, rs []*dlmv1.SessionPulse) {
	p.mu.Lock()
	p.failures = 0
	for i, r := range batch {
		if i < len(rs) && rs[i].GetClientId() == r.s.id && rs[i].GetErrorReason() == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			p.renewedOn[r.s.id] = st.gen
		}
	}
	p.mu.Unlock()
	for i, r := range batch {
		if i >= len(rs) || rs[i].GetClientId() != r.s.id {
			r.done <- renewed{err: fmt.Errorf("dlm: the Pulse answer does not match its request (session %d)", r.s.id)}
			continue
		}
		a := rs[i]
		if reason := a.GetErrorReason(); reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			r.done <- renewed{err: sessionRefusal(reason)}
			continue
		}
		r.done <- renewed{lease: time.Duration(a.GetLeaseMs()) * time.Millisecond, held: heldLocks(a.GetToken(), a.GetHeld())}
	}
}

// sessionRefusal is the error of one session's refused renewal, as a
// KeepAlive call would have returned it.
func sessionRefusal(reason dlmv1.ErrorReason) error {
	cerr := connect.NewError(connect.CodeFailedPrecondition, errors.New(reason.String()))
	if d, err := connect.NewErrorDetail(&dlmv1.ErrorDetail{Reason: reason}); err == nil {
		cerr.AddDetail(d)
	}
	return newError(cerr)
}

// ended fails or re-queues what st still owed, and decides where the next
// stream goes.
func (p *pulser) ended(st *pulseStream, err error) {
	st.mu.Lock()
	owed := st.inflight
	st.inflight, st.dueBy = nil, nil
	answered := st.answered
	st.mu.Unlock()
	e := newError(err)
	stopping := false
	select {
	case <-p.stop:
		stopping = true
	default:
	}
	p.mu.Lock()
	if p.gen == st.gen {
		p.live = false
	}
	close(p.reset)
	p.reset = make(chan struct{})
	var retry []*renewal
	answer := renewed{err: e}
	switch {
	case e.Code == connect.CodeUnimplemented:
		p.log.Info("dlm: the server has no Pulse stream; keepalives go as KeepAlive calls", "endpoint", st.url)
		p.noPulseUntil = time.Now().Add(noPulseFor)
		answer = renewed{err: errNoPulse}
	case e.Reason == dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER:
		// Not a failure of the sessions: send them again at the leader.
		for _, b := range owed {
			for _, r := range b {
				if r.redirect < maxRedirects {
					r.redirect++
					retry = append(retry, r)
				} else {
					r.done <- answer
				}
			}
		}
		owed = nil
	case stopping, answered:
	default:
		// Not one answer: the stream does not get through (a proxy
		// that buffers whole requests, an HTTP/1 hop).
		p.failures++
		if p.failures >= maxStreamFailures {
			p.log.Info("dlm: the Pulse stream keeps failing; keepalives go as KeepAlive calls for a while", "endpoint", st.url, "err", err)
			p.failures = 0
			p.noPulseUntil = time.Now().Add(noPulseFor)
		}
	}
	p.pending = append(retry, p.pending...)
	p.mu.Unlock()
	if !stopping && e.Code != connect.CodeUnimplemented {
		p.log.Debug("dlm: Pulse stream ended", "endpoint", st.url, "err", err)
		if retryable(err) {
			p.eps.failed(st.url, err)
		}
	}
	for _, b := range owed {
		p.answerAll(b, answer)
	}
	if len(retry) > 0 {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// jitter spreads the repeated acquires of many waiters after a stream
// ended, so that they do not all arrive at the new leader at once.
func jitter(d time.Duration) time.Duration {
	return rand.N(max(d, time.Millisecond))
}
