package leadership

import (
	"context"
	"sync"
	"time"

	"github.com/dlm/dlm/server/lockstate"
)

// Core is one node's leader memory. A follower's is empty: no term, no
// leases.
type Core struct {
	clock  Clock
	leases *leases
	waits  *waiters
	grants *grants
	delays *delays

	mu sync.Mutex
	// term is non-nil only while this node leads.
	term *Term
	// changed is closed, and replaced, whenever term changes.
	changed chan struct{}
}

// Term is one stretch of leadership.
type Term struct {
	lost chan struct{}
}

// Lost is closed when the term ends.
func (t *Term) Lost() <-chan struct{} { return t.lost }

// New returns the memory of a node that does not lead yet.
func New(clock Clock) *Core {
	return &Core{clock: clock, leases: newLeases(), waits: newWaiters(), grants: newGrants(), delays: newDelays(), changed: make(chan struct{})}
}

// Clock is the clock the core reads.
func (c *Core) Clock() Clock { return c.clock }

// Begin starts a term, ending any current one first, gives each of
// sessions a full lease from now, and times each of delays in full from now.
func (c *Core) Begin(sessions []lockstate.SessionInfo, delays []lockstate.Delay) *Term {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked()
	now := c.clock.Now()
	// Keepalives were not logged, so no one knows when each session was
	// last seen: every session gets a full fresh lease.
	c.leases.reset(now, sessions)
	// Nor when an earlier leader started each lock-delay: each lasts its
	// whole length again, long rather than short.
	c.delays.reset(now, delays)
	c.term = &Term{lost: make(chan struct{})}
	c.signalLocked()
	return c.term
}

// End ends the current term, if any, and reports whether there was one.
// Its waiters are woken and every lease is forgotten.
func (c *Core) End() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endLocked()
}

func (c *Core) endLocked() bool {
	if c.term == nil {
		return false
	}
	close(c.term.lost)
	c.term = nil
	c.leases.reset(time.Time{}, nil)
	c.delays.reset(time.Time{}, nil)
	c.grants.reset()
	c.signalLocked()
	return true
}

func (c *Core) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Current returns the current term (nil when not leading) and a channel
// closed at the next change of term.
func (c *Core) Current() (*Term, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.term, c.changed
}

// AwaitTerm waits until a term is current, or ctx ends.
func (c *Core) AwaitTerm(ctx context.Context) (*Term, error) {
	for {
		t, changed := c.Current()
		if t != nil {
			return t, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Applied takes in the result of an applied entry (on every node, leader or
// not): a new session's lease starts, the granted sessions' waiters wake,
// and an ended session's lease and waiters go.
func (c *Core) Applied(res lockstate.Result) {
	if res.ClientID != 0 {
		c.leases.opened(c.clock.Now(), res.ClientID, time.Duration(res.LeaseMs)*time.Millisecond)
	}
	for _, g := range res.Grants {
		// A session's waiters wake for a grant of any of its locks; each
		// reads its own acquire's outcome again.
		c.grants.granted(g)
		c.waits.wake(g.ClientID)
	}
	for _, d := range res.DelayStarted {
		c.delays.start(c.clock.Now(), d)
	}
	for _, id := range res.Ended {
		c.leases.remove(id)
		c.grants.ended(id)
		c.waits.wake(id)
	}
}

// Renew extends a session's lease to length from now. It reports false when
// this node does not lead, or the session's expiry is being proposed: the
// caller must not promise it a lease.
func (c *Core) Renew(id uint64, length time.Duration) bool {
	return c.leases.renew(c.clock.Now(), id, length)
}

// Left is how long the session's lease has to run on this leader, or 0.
func (c *Core) Left(id uint64) time.Duration { return c.leases.left(c.clock.Now(), id) }

// Forget drops the lease of a session that no longer exists.
func (c *Core) Forget(id uint64) { c.leases.remove(id) }

// Spared gives a fresh lease to a session whose expiry was not applied (it
// acted in between, or the proposal failed).
func (c *Core) Spared(id uint64) { c.leases.spared(c.clock.Now(), id) }

// RunExpiry calls expire for each session whose lease runs out, until stop
// is closed. One goroutine sleeps until the earliest deadline: leases are
// many, and neither a timer each nor a scan of the table is cheap. expire
// must not block for long; the session stays marked as expiring until
// Forget, Spared, or the term's end.
func (c *Core) RunExpiry(stop <-chan struct{}, expire func(id uint64)) {
	c.leases.run(c.clock, stop, expire)
}

// Examined counts the leases the expiry loop has looked at, so a test can
// prove that an idle leader examines none.
func (c *Core) Examined() uint64 { return c.leases.examined.Load() }

// Event is why a Wait returned.
type Event int

const (
	// Woken: something happened to the session; read its state again.
	Woken Event = iota
	// Lost: the term ended; the new leader keeps the queue.
	Lost
	// Stopped: the node is stopping.
	Stopped
	// TimedOut: the wait's limit passed.
	TimedOut
	// Cancelled: the caller's context ended.
	Cancelled
)

func (e Event) String() string {
	return [...]string{"woken", "lost", "stopped", "timed out", "cancelled"}[e]
}

// Wait is one acquire call waiting on its session within a term.
type Wait struct {
	c     *Core
	id    uint64
	term  *Term
	limit time.Duration
	timer Timer
	woken <-chan struct{}
}

// Watch starts a wait on session id in term t for at most limit, counted
// from the first Next. Call it before reading the session's state, so that
// an event between the read and Next is not missed.
func (c *Core) Watch(t *Term, id uint64, limit time.Duration) *Wait {
	return &Wait{c: c, id: id, term: t, limit: limit, woken: c.waits.watch(id)}
}

// Next waits for the session's next event. After Woken it is watching
// again, so the caller reads the state and calls Next again. When several
// things happened, the one that matters most is reported: an event on the
// session first (it may be the grant), then the term's end, the node's stop,
// the limit, the caller's context.
func (w *Wait) Next(ctx context.Context, stop <-chan struct{}) Event {
	if w.timer == nil {
		w.timer = w.c.clock.NewTimer(w.limit)
	}
	select {
	case <-w.woken:
		w.woken = w.c.waits.watch(w.id)
		return Woken
	default:
	}
	select {
	case <-w.term.lost:
		return Lost
	case <-stop:
		return Stopped
	default:
	}
	select {
	case <-w.timer.C():
		return TimedOut
	default:
	}
	select {
	case <-w.woken:
		w.woken = w.c.waits.watch(w.id)
		return Woken
	case <-w.term.lost:
		return Lost
	case <-stop:
		return Stopped
	case <-w.timer.C():
		return TimedOut
	case <-ctx.Done():
		return Cancelled
	}
}

// Close releases the wait's timer.
func (w *Wait) Close() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// Waiting reports whether an acquire call waits on the session: once it
// does, the session's next grant or end wakes it.
func (c *Core) Waiting(id uint64) bool { return c.waits.watched(id) }
