package leadership

import (
	"sync"
	"sync/atomic"
)

// Granted is the grant of an acquire made without waiting (no_wait),
// reported to the stream that keeps its session alive.
type Granted struct {
	ClientID, Seq, Token uint64
}

// Listener receives the grants of the no_wait acquires of the sessions it
// listens for: one per Pulse stream. Its queue is bounded and an apply never
// waits for it: when it is full the grant is dropped (and counted), and the
// client learns of it by repeating its acquire.
type Listener struct {
	c       chan Granted
	dropped atomic.Uint64
	// ids are the sessions this listener is registered for; guarded by
	// the grants' mutex.
	ids map[uint64]struct{}
}

// C delivers the grants, in the order they were applied.
func (l *Listener) C() <-chan Granted { return l.c }

// Dropped counts the grants lost because the queue was full.
func (l *Listener) Dropped() uint64 { return l.dropped.Load() }

// grants routes the grants of no_wait acquires to their session's listener.
// Both tables live in the leader's memory and are bounded by the sessions:
// one listener and one pending seq per session.
type grants struct {
	mu sync.Mutex
	// listening maps a session to the stream that last renewed it.
	listening map[uint64]*Listener
	// noWait maps a session to the seq of its acquire made with no_wait
	// and not yet granted.
	noWait map[uint64]uint64
}

func newGrants() *grants {
	return &grants{listening: make(map[uint64]*Listener), noWait: make(map[uint64]uint64)}
}

// NewListener returns a listener whose queue holds up to size grants.
func (c *Core) NewListener(size int) *Listener {
	return &Listener{c: make(chan Granted, max(size, 1)), ids: make(map[uint64]struct{})}
}

// Listen makes l the listener of session id, in place of any other: the
// session's latest stream is the one its client reads.
func (c *Core) Listen(l *Listener, id uint64) {
	g := c.grants
	g.mu.Lock()
	defer g.mu.Unlock()
	if old, ok := g.listening[id]; ok && old != l {
		delete(old.ids, id)
	}
	g.listening[id] = l
	l.ids[id] = struct{}{}
}

// Unlisten removes l from every session it listens for (its stream ended).
func (c *Core) Unlisten(l *Listener) {
	g := c.grants
	g.mu.Lock()
	defer g.mu.Unlock()
	for id := range l.ids {
		if g.listening[id] == l {
			delete(g.listening, id)
		}
	}
	clear(l.ids)
}

// NoWait records that session id asks for the lock with seq without
// waiting, so that its grant is reported to the session's listener. Record
// it before proposing the acquire, so that a grant applied before the
// proposal returns is not missed.
func (c *Core) NoWait(id, seq uint64) {
	g := c.grants
	g.mu.Lock()
	defer g.mu.Unlock()
	g.noWait[id] = seq
}

// granted reports the grant to the session's listener when it answers the
// session's no_wait acquire.
func (g *grants) granted(id, seq, token uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	want, ok := g.noWait[id]
	if !ok || want != seq {
		return
	}
	delete(g.noWait, id)
	l, ok := g.listening[id]
	if !ok {
		return
	}
	select {
	case l.c <- Granted{ClientID: id, Seq: seq, Token: token}:
	default:
		l.dropped.Add(1)
	}
}

// ended forgets a session that no longer exists.
func (g *grants) ended(id uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.noWait, id)
	if l, ok := g.listening[id]; ok {
		delete(l.ids, id)
		delete(g.listening, id)
	}
}

// reset forgets everything: a new term's streams register anew, and the
// clients repeat their acquires at the new leader.
func (g *grants) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range g.listening {
		clear(l.ids)
	}
	clear(g.listening)
	clear(g.noWait)
}

// Listening counts the sessions with a listener, and NoWaits the no_wait
// acquires not granted yet, so a test can see the tables stay bounded.
func (c *Core) Listening() (listening, noWaits int) {
	g := c.grants
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.listening), len(g.noWait)
}
