package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// maxRenewals bounds how many replacement sessions one Acquire opens, so
// that a service that expires every new session at once cannot keep it
// busy forever.
const maxRenewals = 3

// errReleased is the cause of a released Lock's context.
var errReleased = errors.New("dlm: lock released")

type lockState int

const (
	stateHeld lockState = iota
	stateReleased
	stateLost
)

// Lock is one grant of a lock, named by its fencing token. Under the
// default lock held exclusively, Append stages data; Release commits
// everything staged, Abort discards it. When the grant is lost (the lease
// ran out, the service revoked it), Lost is closed, Context is cancelled,
// and every call fails with ErrLockExpired.
type Lock struct {
	c     *Client
	s     *session
	token uint64
	name  string
	mode  dlmv1.LockMode

	ctx    context.Context
	cancel context.CancelCauseFunc
	lost   chan struct{}

	// opMu keeps the requests made under the grant in order.
	opMu sync.Mutex

	mu    sync.Mutex
	state lockState
	gone  bool // the service said the grant is gone
	// pending is kept only while the grant is held: once it ended, nothing
	// repeats the request, and a number left in flight would hold the
	// session's acknowledgement back for good.
	pending *pendingOp

	// section is every append sent under the grant, in order: the one at
	// index i went to place i+1. The leader keeps them in memory until the
	// release, so a new leader may lack some; they are kept here until the
	// release commits, to send again. Guarded by opMu.
	section      []sectionAppend
	sectionBytes uint64
	// inDoubt says the last of section is the caller's append whose
	// outcome stayed unknown: an Append with the same file and data repeats
	// it at its place, never at a new one.
	inDoubt bool
	// local are the appends Stage buffered, sent with the release.
	local []sectionAppend
}

// sectionAppend is one append of the critical section.
type sectionAppend struct {
	file string
	data []byte
}

// maxResends bounds how many times one call re-sends the section to a
// leader that lacks part of it (SECTION_INCOMPLETE): each leader change
// costs one.
const maxResends = 3

// maxInlineBytes bounds the appends a release carries: a request must stay
// under the service's read limit (the per-append limit plus headroom, 1 MiB
// and more by default). Staged appends beyond it are sent with AppendFile
// before the release.
const maxInlineBytes = 512 << 10

// pendingOp is a request whose outcome stayed unknown when its retries ran
// out. Its sequence number is kept so that repeating the same request cannot
// apply it twice.
type pendingOp struct {
	seq     uint64
	release bool
	abort   bool
	file    string
	data    []byte
}

// Token returns the fencing token of the grant: it grows with every grant,
// so a system that receives writes from lock holders can refuse one that
// carries a smaller token than it has already seen (see package fence).
func (lk *Lock) Token() uint64 { return lk.token }

// Name returns the lock's name: empty for the default lock.
func (lk *Lock) Name() string { return lk.name }

// Mode returns how the lock is held: LOCK_MODE_EXCLUSIVE or
// LOCK_MODE_SHARED.
func (lk *Lock) Mode() dlmv1.LockMode { return lk.mode }

// appendable refuses appends under a grant that cannot carry them, before
// asking the service: files are guarded by the default lock held
// exclusively.
func (lk *Lock) appendable() error {
	switch {
	case lk.name != "":
		return fmt.Errorf("%w: files are guarded by the default lock, not %s: acquire without LockName to append", ErrInvalidArgument, describeLock(lk.name))
	case lk.mode == dlmv1.LockMode_LOCK_MODE_SHARED:
		return fmt.Errorf("%w (token %d)", ErrNotExclusive, lk.token)
	}
	return nil
}

// Lost returns a channel that is closed when the grant is lost: the service
// reports it gone, or the session could not be kept alive for a whole lease.
// It is not closed by Release, Abort or Close.
func (lk *Lock) Lost() <-chan struct{} { return lk.lost }

// Context returns a context that is cancelled when the grant is lost or
// ended by Release, Abort or Close; context.Cause tells which. Work done
// under the lock should use it, so that it stops when the lock is gone.
func (lk *Lock) Context() context.Context { return lk.ctx }

// end moves a held Lock to state, once.
func (lk *Lock) end(state lockState, cause error) bool {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.state != stateHeld {
		return false
	}
	lk.state = state
	lk.dropPending()
	// Cancel first: whoever sees Lost closed must find the cause set.
	lk.cancel(cause)
	if state == stateLost {
		close(lk.lost)
	}
	return true
}

// markLost records that the grant is lost. gone says the service confirmed
// it, so there is nothing to give up.
func (lk *Lock) markLost(cause error, gone bool) {
	lk.mu.Lock()
	lk.gone = lk.gone || gone
	lk.mu.Unlock()
	if lk.end(stateLost, cause) {
		lk.c.log.Warn("dlm: lock lost", "client_id", lk.s.id, "lock", lk.name, "token", lk.token, "cause", cause)
	}
}

func (lk *Lock) current() (lockState, error) {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	switch lk.state {
	case stateReleased:
		return lk.state, fmt.Errorf("%w: %s was already released (token %d)", ErrLockExpired, describeLock(lk.name), lk.token)
	case stateLost:
		return lk.state, context.Cause(lk.ctx)
	}
	return lk.state, nil
}

// failed interprets an error from a request under the grant, marks the
// grant lost when the error says so, and returns the error to report.
func (lk *Lock) failed(err error) error {
	switch reasonOf(err) {
	case dlmv1.ErrorReason_ERROR_REASON_LOCK_EXPIRED,
		dlmv1.ErrorReason_ERROR_REASON_NOT_HOLDER:
	case dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED,
		dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN,
		dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET:
		err = &sessionGoneError{err}
	default:
		return err
	}
	lk.markLost(err, true)
	return err
}

// sessionGoneError reports a grant that ended with its session. It matches
// ErrLockExpired as well as the session's own reason, since for the holder
// both mean the same: the critical section is gone, acquire again.
type sessionGoneError struct{ err error }

func (e *sessionGoneError) Error() string {
	return "dlm: lock expired with its session: " + strings.TrimPrefix(e.err.Error(), "dlm: ")
}

func (e *sessionGoneError) Unwrap() []error { return []error{ErrLockExpired, e.err} }

func (lk *Lock) isGone() bool {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	return lk.gone
}

// reuse returns the pending request if op repeats it; otherwise it gives
// the pending request up for good.
func (lk *Lock) reuse(op pendingOp) *pendingOp {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	p := lk.pending
	if p != nil && p.release == op.release && (p.release || p.file == op.file && bytes.Equal(p.data, op.data)) {
		lk.pending = nil
		return p
	}
	lk.dropPending()
	return nil
}

// keep records a request whose outcome stayed unknown, so that a repeat
// reuses its number. If the grant ended meanwhile there will be no repeat:
// the number is given up at once.
func (lk *Lock) keep(op pendingOp) {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	lk.dropPending()
	if lk.state != stateHeld {
		lk.s.end(op.seq)
		return
	}
	lk.pending = &op
}

// dropPending gives up the pending request for good. Its number is never
// sent again, so the session's acknowledgement moves past it and the
// service refuses any late copy of it (SEQUENCE_ACKNOWLEDGED): whether or
// not it was applied, it is applied at most once. lk.mu must be held.
func (lk *Lock) dropPending() {
	if lk.pending != nil {
		lk.s.end(lk.pending.seq)
		lk.pending = nil
	}
}

// abandon gives up a grant whose Release or Abort ran out of retries when
// nobody can repeat it (WithLock returns without handing the Lock out): a
// Lock left held would keep its request's number in flight, and the client
// could not acquire again. The next Acquire, or the keepalive, asks the
// service to drop the grant if it still stands.
func (lk *Lock) abandon(err error) {
	if r := new(retryError); errors.As(err, &r) {
		lk.markLost(fmt.Errorf("%w: the outcome of ending the critical section is unknown: %w", ErrLockExpired, err), false)
	}
}

// Append stages data for appending to file ("file_0" to "file_99"). The
// data reaches the file when the lock is released, and never if the grant
// is lost first. Each append names its place in the critical section, so
// repeating an Append that failed with ErrUnavailable (same file, same data)
// is safe: it is staged once. An append whose outcome stayed unknown is
// part of the section from then on (the release sends it again if the
// leader lacks it).
func (lk *Lock) Append(ctx context.Context, file string, data []byte) error {
	lk.opMu.Lock()
	defer lk.opMu.Unlock()
	if _, err := lk.current(); err != nil {
		return err
	}
	if err := lk.appendable(); err != nil {
		return err
	}
	if err := lk.ending(); err != nil {
		return err
	}
	// The repeat of an append whose outcome is unknown goes to the same
	// place, under the same number when it still has one (a server that
	// predates places recognises it by the number). Any other request gives
	// a pending one up.
	if n := len(lk.section); lk.inDoubt && n > 0 && lk.section[n-1].file == file && bytes.Equal(lk.section[n-1].data, data) {
		var seq uint64
		if p := lk.reuse(pendingOp{file: file, data: data}); p != nil {
			seq = p.seq
		}
		err := lk.place(ctx, uint32(n), seq)
		lk.inDoubt = unknownOutcome(err)
		return lk.failed(err)
	}
	lk.inDoubt = false
	lk.mu.Lock()
	lk.dropPending()
	lk.mu.Unlock()
	// Appends Stage buffered come first.
	if err := lk.flushLocal(ctx, 0); err != nil {
		return err
	}
	err := lk.add(ctx, sectionAppend{file: file, data: bytes.Clone(data)})
	lk.inDoubt = unknownOutcome(err)
	return lk.failed(err)
}

// unknownOutcome says err leaves the outcome of a request unknown: its
// retries ran out.
func unknownOutcome(err error) bool {
	r := new(retryError)
	return errors.As(err, &r)
}

// ending refuses a change to the section while a Release or Abort whose
// outcome is unknown waits to be repeated: the service may have committed
// it already, and its repeat must be the same request (it is answered from
// the first), so what is appended now would be lost without a word, or
// would give that release up.
func (lk *Lock) ending() error {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.pending != nil && lk.pending.release {
		return fmt.Errorf("%w (token %d): repeat the Release, or Abort, first", ErrReleaseInDoubt, lk.token)
	}
	return nil
}

// Stage buffers data for appending to file, with no call to the service:
// the buffered appends travel with Release, after those sent by Append, so a
// critical section written with Stage costs one request and one write to
// the log in all. Bad input is reported by Release (or the next Append),
// which then changes nothing. Abort discards the buffer. After a Release or
// Abort whose outcome is unknown, Stage and Append fail with
// ErrReleaseInDoubt until it is repeated.
func (lk *Lock) Stage(file string, data []byte) error {
	lk.opMu.Lock()
	defer lk.opMu.Unlock()
	if _, err := lk.current(); err != nil {
		return err
	}
	if err := lk.appendable(); err != nil {
		return err
	}
	if err := lk.ending(); err != nil {
		return err
	}
	if len(data) == 0 {
		return fmt.Errorf("%w: nothing to stage for %s", ErrDataEmpty, file)
	}
	lk.local = append(lk.local, sectionAppend{file: file, data: bytes.Clone(data)})
	return nil
}

// flushLocal sends buffered appends with AppendFile until at most keep
// bytes of them are left, oldest first.
func (lk *Lock) flushLocal(ctx context.Context, keep int) error {
	total := 0
	for _, a := range lk.local {
		total += len(a.data)
	}
	for len(lk.local) > 0 && total > keep {
		a := lk.local[0]
		if err := lk.add(ctx, a); err != nil {
			if unknownOutcome(err) {
				// It is part of the section now: the release sends it
				// again if the leader lacks it, and must not carry it a
				// second time.
				lk.local = lk.local[1:]
			}
			return lk.failed(err)
		}
		lk.local = lk.local[1:]
		total -= len(a.data)
	}
	return nil
}

// add sends a new append at the next place. A refusal leaves the section
// as it was; an unknown outcome keeps the append in it.
func (lk *Lock) add(ctx context.Context, a sectionAppend) error {
	// The last of the section is no longer the caller's append in doubt.
	lk.inDoubt = false
	lk.section = append(lk.section, a)
	lk.sectionBytes += uint64(len(a.data))
	err := lk.place(ctx, uint32(len(lk.section)), 0)
	if err != nil && !unknownOutcome(err) {
		lk.section = lk.section[:len(lk.section)-1]
		lk.sectionBytes -= uint64(len(a.data))
	}
	return err
}

// place sends the append at place pos of the section (under seq, when it
// repeats a request), first sending again the places before it that a new
// leader lacks. When its outcome stays unknown, it is kept pending.
func (lk *Lock) place(ctx context.Context, pos uint32, seq uint64) error {
	for attempt := 0; ; attempt++ {
		err := lk.sendAppend(ctx, pos, seq, func(seq uint64) {
			a := lk.section[pos-1]
			lk.keep(pendingOp{seq: seq, file: a.file, data: a.data})
		})
		seq = 0
		var e *Error
		if !errors.As(err, &e) || e.Reason != dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE || attempt == maxResends || e.StagedAppends >= pos {
			return err
		}
		lk.c.log.Info("dlm: the leader lacks part of the critical section; sending it again", "token", lk.token, "staged", e.StagedAppends, "sent", pos-1)
		if err := lk.resend(ctx, e.StagedAppends, pos-1); err != nil {
			return err
		}
	}
}

// resend sends places from+1 to to again.
func (lk *Lock) resend(ctx context.Context, from, to uint32) error {
	for p := from + 1; p <= to; p++ {
		if err := lk.sendAppend(ctx, p, 0, nil); err != nil {
			return err
		}
	}
	return nil
}

func (lk *Lock) sendAppend(ctx context.Context, pos uint32, seq uint64, keep func(seq uint64)) error {
	a := lk.section[pos-1]
	s := lk.s
	return lk.c.mutate(ctx, "AppendFile", s, seq, 0, func(ctx context.Context, api dlmv1connect.LockServiceClient, seq, acked uint64) error {
		_, err := api.AppendFile(ctx, connect.NewRequest(&dlmv1.AppendFileRequest{
			ClientId: s.id, Secret: s.secret, Seq: seq, AckedBelow: acked,
			Token: lk.token, File: a.file, Data: a.data, Position: pos,
		}))
		return err
	}, keep)
}

// Release ends the critical section and commits every staged append to the
// files at once, then hands the lock to the next waiter. If the grant was
// lost, nothing is committed and Release returns the loss (ErrLockExpired or
// ErrSessionExpired). Repeating a Release that failed with ErrUnavailable is
// safe.
func (lk *Lock) Release(ctx context.Context) error {
	return lk.release(ctx, false)
}

// Abort ends the critical section and discards every staged append. It
// returns nil when the grant was already lost, since nothing was committed
// either way. An Abort after a Release that failed with ErrUnavailable
// finishes that Release instead, whose commit may already have happened.
func (lk *Lock) Abort(ctx context.Context) error {
	return lk.release(ctx, true)
}

func (lk *Lock) release(ctx context.Context, abort bool) error {
	lk.opMu.Lock()
	defer lk.opMu.Unlock()
	if state, err := lk.current(); err != nil {
		if state == stateLost && !lk.isGone() {
			// The grant may still stand on the service if only the
			// keepalives went unanswered: give it up, without waiting long.
			lk.giveUp(ctx)
			if abort {
				return nil
			}
		}
		return err
	}
	// While the release is in flight a keepalive may see the grant gone
	// before Release returns: that is the release, not a loss.
	lk.c.mu.Lock()
	lk.c.releasing++
	lk.c.changes++
	lk.c.mu.Unlock()
	defer func() {
		lk.c.mu.Lock()
		lk.c.releasing--
		lk.c.changes++
		lk.c.mu.Unlock()
	}()
	op := pendingOp{release: true, abort: abort}
	var seq uint64
	if p := lk.reuse(op); p != nil {
		// The service may already have acted on the first request: repeat
		// it exactly, whichever of Release and Abort is asked now.
		seq, op.abort = p.seq, p.abort
	}
	if !op.abort {
		// What the release cannot carry goes first, with AppendFile.
		if err := lk.flushLocal(ctx, maxInlineBytes); err != nil {
			return err
		}
	}
	err := lk.sendRelease(ctx, seq, op)
	for attempt := 0; !op.abort && attempt < maxResends; attempt++ {
		var e *Error
		if !errors.As(err, &e) || e.Reason != dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE || e.StagedAppends >= uint32(len(lk.section)) {
			break
		}
		// A new leader lacks part of the section: nothing changed. Send
		// the rest again, then release again.
		lk.c.log.Info("dlm: the leader lacks part of the critical section; sending it again", "token", lk.token, "staged", e.StagedAppends, "sent", len(lk.section))
		if err = lk.resend(ctx, e.StagedAppends, uint32(len(lk.section))); err != nil {
			break
		}
		err = lk.sendRelease(ctx, 0, op)
	}
	if err == nil {
		lk.end(stateReleased, errReleased)
		lk.c.forget(lk)
		return nil
	}
	err = lk.failed(err)
	if abort && (errors.Is(err, ErrLockExpired) || errors.Is(err, ErrSessionExpired)) {
		return nil
	}
	return err
}

// sendRelease sends the release (or abort) once, with seq when it repeats an
// earlier one: with the section's counts and the buffered appends.
func (lk *Lock) sendRelease(ctx context.Context, seq uint64, op pendingOp) error {
	s := lk.s
	req := &dlmv1.LockReleaseRequest{ClientId: s.id, Secret: s.secret, Token: lk.token, Abort: op.abort, Lock: lockField(lk.name)}
	// Only the default lock held exclusively has a critical section.
	if !op.abort && lk.appendable() == nil {
		n, b := uint32(len(lk.section)), lk.sectionBytes
		req.SectionAppends, req.SectionBytes = &n, &b
		for _, a := range lk.local {
			req.Appends = append(req.Appends, &dlmv1.SectionAppend{File: a.file, Data: a.data})
		}
	}
	return lk.c.mutate(ctx, "LockRelease", s, seq, 0, func(ctx context.Context, api dlmv1connect.LockServiceClient, seq, acked uint64) error {
		req.Seq, req.AckedBelow = seq, acked
		_, err := api.LockRelease(ctx, connect.NewRequest(req))
		return err
	}, func(seq uint64) {
		op.seq = seq
		lk.keep(op)
	})
}

// giveUp asks the service to drop a grant the client has stopped using.
// Errors are ignored: LOCK_EXPIRED means it is gone already, and the
// keepalive gives up any grant left behind.
func (lk *Lock) giveUp(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lk.c.o.attemptTimeout)
	defer cancel()
	lk.c.releaseToken(ctx, lk.s, lk.name, lk.token)
}

// Acquire takes the lock, waiting in the queue as long as ctx allows. When
// ctx ends first, Acquire leaves the queue (so the lock is not granted to a
// caller that has stopped waiting) and returns an error that matches ctx's
// error, such as context.DeadlineExceeded. If the session expired, Acquire
// opens a new one and carries on.
//
// Without options it takes the default lock exclusively; LockName, Shared,
// LockDelay and Timeout choose another lock, shared mode, the grant's
// lock-delay and a bound on the wait. A session may hold several locks, each
// at most once: Acquire of a lock this Client holds fails.
func (c *Client) Acquire(ctx context.Context, opts ...LockOption) (*Lock, error) {
	return c.acquire(ctx, false, opts)
}

// TryAcquire takes the lock if it can be granted at once and returns
// ErrNotAvailable otherwise, without queueing. It takes the same options as
// Acquire.
func (c *Client) TryAcquire(ctx context.Context, opts ...LockOption) (*Lock, error) {
	return c.acquire(ctx, true, opts)
}

func (c *Client) acquire(ctx context.Context, try bool, opts []LockOption) (*Lock, error) {
	lo, err := readLockOptions(opts)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	var stale *Lock
	if lk := c.held[lo.name]; lk != nil {
		state, _ := lk.current()
		if state == stateHeld {
			c.mu.Unlock()
			return nil, fmt.Errorf("dlm: this client already holds %s (token %d); release it first", describeLock(lo.name), lk.token)
		}
		if state == stateLost && !lk.isGone() {
			stale = lk
		}
	}
	c.acquiring[lo.name]++
	c.changes++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.acquiring[lo.name]--; c.acquiring[lo.name] == 0 {
			delete(c.acquiring, lo.name)
		}
		c.changes++
		c.mu.Unlock()
	}()
	if stale != nil {
		// A grant lost only for want of keepalive answers may still stand:
		// asking again would be granted it back, with the appends staged
		// before the loss. Give it up first.
		stale.giveUp(ctx)
	}
	wctx := ctx
	if lo.timeout > 0 && !try {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeoutCause(ctx, lo.timeout, errWaitTimeout)
		defer cancel()
	}
	for renewals := 0; ; renewals++ {
		s, err := c.liveSession(ctx)
		if err != nil {
			return nil, err
		}
		lk, err := c.acquireIn(wctx, s, try, lo)
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(wctx), errWaitTimeout) {
			return nil, &waitTimeoutError{name: lo.name, d: lo.timeout}
		}
		if errors.Is(err, ErrSessionExpired) && renewals < maxRenewals && wctx.Err() == nil {
			continue
		}
		if err == nil && stale != nil && lk.token == stale.token && renewals < maxRenewals {
			// The give-up did not get through and the old grant came back:
			// drop it and ask for a fresh one.
			lk.end(stateReleased, errReleased)
			c.forget(lk)
			stale.giveUp(ctx)
			continue
		}
		return lk, err
	}
}

// acquireIn asks for the lock in session s with one sequence number,
// repeating it until granted. With the process's Pulse stream the request
// only queues (no_wait) and the grant comes back on the stream; a repeat
// now and then, or after the stream ended, finds a grant whose news was
// lost. Without it each request is a long poll.
func (c *Client) acquireIn(ctx context.Context, s *session, try bool, lo lockOptions) (*Lock, error) {
	seq := s.begin()
	defer s.end(seq)
	var (
		p      *pulser
		grants <-chan uint64
	)
	if c.hub != nil && !try && c.hub.p.usable() {
		p = c.hub.p
		g, _, done := p.await(s.id, seq)
		defer done()
		grants = g
	}
	var delayMs *uint32
	if lo.hasDelay {
		ms := uint32(lo.delay / time.Millisecond)
		delayMs = &ms
	}
	for {
		var reset <-chan struct{}
		noWait := false
		if p != nil && p.usable() {
			if !p.listening(s) {
				// Renew on the stream first, so that the grant comes
				// back on it; if that fails, this request long-polls.
				rctx, cancel := context.WithTimeout(ctx, c.o.attemptTimeout)
				if _, _, err := p.renew(rctx, s, true); err != nil {
					c.log.Debug("dlm: renewal on the Pulse stream failed", "client_id", s.id, "err", err)
				}
				cancel()
			}
			// Taken before the request, so that a stream ending after it
			// is seen.
			reset = p.resetChan()
			noWait = p.listening(s)
		}
		wait := c.o.pollWait
		if dl, ok := ctx.Deadline(); ok {
			// Let the service answer "still queued" before ctx ends, rather
			// than have the answer cut off.
			wait = min(wait, time.Until(dl))
		}
		wait = max(wait, time.Millisecond)
		timeout := wait + c.o.attemptTimeout
		if noWait {
			timeout = c.o.attemptTimeout
		}
		var resp *dlmv1.LockAcquireResponse
		err := c.r.do(ctx, "LockAcquire", timeout, func(actx context.Context, api dlmv1connect.LockServiceClient) error {
			r, err := api.LockAcquire(actx, connect.NewRequest(&dlmv1.LockAcquireRequest{
				ClientId: s.id, Secret: s.secret, Seq: seq, AckedBelow: s.ackedBelow(),
				Try: try, WaitMs: uint32(wait / time.Millisecond), NoWait: noWait,
				Lock: lockField(lo.name), Mode: lo.wireMode(), LockDelayMs: delayMs,
			}))
			if err != nil {
				return err
			}
			resp = r.Msg
			return nil
		})
		if err != nil {
			switch reasonOf(err) {
			case dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED,
				dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN,
				dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET:
				s.markExpired()
			}
			if r := new(retryError); errors.As(err, &r) {
				// The service may have queued or even granted this request:
				// give that up, so the lock is not held for nobody.
				c.giveUpQueue(ctx, s, lo.name)
			}
			return nil, err
		}
		switch {
		case resp.GetGranted():
			return c.grant(ctx, s, resp.GetToken(), lo), nil
		case try:
			return nil, fmt.Errorf("%w: %s", ErrNotAvailable, describeLock(lo.name))
		}
		c.log.Debug("dlm: waiting for the lock", "client_id", s.id, "lock", lo.name, "position", resp.GetQueuePosition())
		if noWait {
			token, err := c.awaitGrant(ctx, grants, reset)
			if err != nil {
				c.giveUpQueue(ctx, s, lo.name)
				return nil, fmt.Errorf("dlm: acquire: %w", err)
			}
			if token != 0 {
				return c.grant(ctx, s, token, lo), nil
			}
		}
		if err := ctx.Err(); err != nil {
			c.giveUpQueue(ctx, s, lo.name)
			return nil, fmt.Errorf("dlm: acquire: %w", err)
		}
	}
}

// awaitGrant waits for the grant's token to come on the Pulse stream. It
// returns 0 when it is time to ask again: now and then (a grant's news may
// have been dropped by a stream that fell behind), or soon after the stream
// ended (it may have been lost with it).
func (c *Client) awaitGrant(ctx context.Context, grants <-chan uint64, reset <-chan struct{}) (uint64, error) {
	poll := time.NewTimer(4*c.o.pollWait + jitter(c.o.pollWait))
	defer poll.Stop()
	select {
	case token := <-grants:
		return token, nil
	case <-poll.C:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-reset:
	}
	// Many waiters see the same stream end: spread their repeats.
	pause := time.NewTimer(jitter(min(c.o.pollWait, time.Second)))
	defer pause.Stop()
	select {
	case token := <-grants:
		return token, nil
	case <-pause.C:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// giveUpQueue gives up whatever the session may have been queued or granted
// of the lock name by an acquire that stops waiting (a release with token
// 0), so the lock is not held for nobody.
func (c *Client) giveUpQueue(ctx context.Context, s *session, name string) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.o.attemptTimeout)
	defer cancel()
	c.releaseToken(wctx, s, name, 0)
}

// grant makes the Lock for a grant just received.
func (c *Client) grant(ctx context.Context, s *session, token uint64, lo lockOptions) *Lock {
	lctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	lk := &Lock{c: c, s: s, token: token, name: lo.name, mode: lo.mode(), ctx: lctx, cancel: cancel, lost: make(chan struct{})}
	c.mu.Lock()
	c.held[lo.name] = lk
	c.changes++
	c.mu.Unlock()
	c.log.Debug("dlm: lock granted", "client_id", s.id, "lock", lo.name, "mode", lk.mode, "token", token)
	return lk
}

// forget drops lk as the client's grant of its lock once it ended.
func (c *Client) forget(lk *Lock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[lk.name] == lk {
		delete(c.held, lk.name)
		c.changes++
	}
}

// releaseToken gives up the grant of lock name named by token (or, with 0,
// whatever the session has of it: its place in the queue or a grant it
// never learned of), discarding staged appends. It is best effort: the
// answer is ignored.
func (c *Client) releaseToken(ctx context.Context, s *session, name string, token uint64) {
	err := c.mutate(ctx, "LockRelease", s, 0, 0, func(ctx context.Context, api dlmv1connect.LockServiceClient, seq, acked uint64) error {
		_, err := api.LockRelease(ctx, connect.NewRequest(&dlmv1.LockReleaseRequest{
			ClientId: s.id, Secret: s.secret, Seq: seq, AckedBelow: acked,
			Token: token, Abort: true, Lock: lockField(name),
		}))
		return err
	}, nil)
	if err != nil {
		c.log.Debug("dlm: giving up the lock failed", "client_id", s.id, "lock", name, "token", token, "err", err)
	}
}

// WithLock acquires the lock, runs fn under it, and releases the lock
// (committing fn's appends) when fn returns nil, or aborts it (discarding
// them) when fn returns an error, which WithLock then returns. fn's context
// is cancelled if the grant is lost while fn runs. If the release runs out
// of retries (ErrUnavailable: it may or may not have committed), WithLock
// gives the grant up, so the next Acquire works and gets a fresh grant.
// opts choose the lock as for Acquire.
func (c *Client) WithLock(ctx context.Context, fn func(ctx context.Context, lk *Lock) error, opts ...LockOption) error {
	lk, err := c.Acquire(ctx, opts...)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(lk.Context(), func() { cancel(context.Cause(lk.Context())) })
	defer stop()
	// The release must happen even if ctx ended while fn ran; the retry
	// budget bounds it.
	if err := fn(fctx, lk); err != nil {
		if aerr := lk.Abort(context.WithoutCancel(ctx)); aerr != nil {
			c.log.Warn("dlm: abort after a failed critical section", "lock", lk.name, "token", lk.token, "err", aerr)
			lk.abandon(aerr)
		}
		return err
	}
	err = lk.Release(context.WithoutCancel(ctx))
	lk.abandon(err)
	return err
}
