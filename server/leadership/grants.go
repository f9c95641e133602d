package leadership

import (
	"slices"
	"sync"
	"sync/atomic"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// Granted is the grant of an acquire made without waiting (no_wait),
// reported to the stream that keeps its session alive.
type Granted struct {
	ClientID, Seq, Token uint64
	Lock                 string
	Mode                 dlmv1.LockMode
}

// MaxNoWaits bounds the no_wait acquires remembered per session: as many as
// a session may hold or wait for (lockstate's per-session cap). Past it the
// oldest is forgotten, and its client learns of its grant by repeating the
// acquire, as it does after any lost grant.
const MaxNoWaits = 256

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
	// noWait maps a session to the seqs of its acquires made with no_wait
	// and not yet granted, oldest first: one per lock it waits for.
	noWait map[uint64][]uint64
}

func newGrants() *grants {
	return &grants{listening: make(map[uint64]*Listener), noWait: make(map[uint64][]uint64)}
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

// NoWait records that session id asks for a lock with seq without
// waiting, so that its grant is reported to the session's listener. Record
// it before proposing the acquire, so that a grant applied before the
// proposal returns is not missed. A session waits for each of its locks
// under its own seq, so several may be recorded at once.
func (c *Core) NoWait(id, seq uint64) {
	g := c.grants
	g.mu.Lock()
	defer g.mu.Unlock()
	seqs := g.noWait[id]
	if slices.Contains(seqs, seq) {
		return
	}
	if len(seqs) >= MaxNoWaits {
		seqs = slices.Delete(seqs, 0, 1)
	}
	g.noWait[id] = append(seqs, seq)
}

// Answered forgets a no_wait acquire that needs no report: it was granted,
// refused or not queued when its call returned.
func (c *Core) Answered(id, seq uint64) {
	g := c.grants
	g.mu.Lock()
	defer g.mu.Unlock()
	g.forgetLocked(id, seq)
}

// forgetLocked removes seq from the session's no_wait acquires and reports
// whether it was there.
func (g *grants) forgetLocked(id, seq uint64) bool {
	seqs := g.noWait[id]
	i := slices.Index(seqs, seq)
	if i < 0 {
		return false
	}
	if seqs = slices.Delete(seqs, i, i+1); len(seqs) == 0 {
		delete(g.noWait, id)
	} else {
		g.noWait[id] = seqs
	}
	return true
}

// granted reports the grant to the session's listener when it answers one
// of the session's no_wait acquires.
func (g *grants) granted(gr lockstate.Grant) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.forgetLocked(gr.ClientID, gr.Seq) {
		return
	}
	l, ok := g.listening[gr.ClientID]
	if !ok {
		return
	}
	select {
	case l.c <- Granted{ClientID: gr.ClientID, Seq: gr.Seq, Token: gr.Token, Lock: gr.Lock, Mode: gr.Mode}:
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
	for _, seqs := range g.noWait {
		noWaits += len(seqs)
	}
	return len(g.listening), noWaits
}
