package leadership

import (
	"container/heap"
	"sync"
	"time"

	"github.com/dlm/dlm/server/lockstate"
)

// delays are the lock-delays the leader times, in memory only: the state
// machine knows which locks are delayed but reads no clock, so the leader
// ends each delay by proposing EndLockDelay once DelayMs has passed on its
// own clock. A follower's table is empty.
//
// A delay is timed from when this leader learned of it: the apply that
// started it, or the start of the term for a delay an earlier leader
// started. A failover therefore makes a delay last longer, never shorter:
// the stale holder's writes in flight have had at least the whole delay to
// drain when the lock is granted again.
type delays struct {
	mu     sync.Mutex
	active bool
	byKey  map[delayKey]*delay
	// queue holds the delays not being ended, earliest first.
	queue delayHeap
	// sooner is signalled when the earliest deadline moves earlier.
	sooner chan struct{}
}

// delayKey names one delay: the lock and the token whose expiry started it.
type delayKey struct {
	lock  string
	token uint64
}

type delay struct {
	d        lockstate.Delay
	deadline time.Time
	// pos is the delay's place in the heap, or -1 while its end is being
	// proposed.
	pos int
}

func newDelays() *delays {
	return &delays{byKey: make(map[delayKey]*delay), sooner: make(chan struct{}, 1)}
}

func keyOf(d lockstate.Delay) delayKey { return delayKey{lock: d.Lock, token: d.Token} }

// reset starts a leader's table with every delay timed in full from now,
// or, with a zero now, empties it for a follower.
func (ds *delays) reset(now time.Time, list []lockstate.Delay) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	ds.active = !now.IsZero()
	clear(ds.byKey)
	ds.queue = nil
	if ds.active {
		for _, d := range list {
			ds.setLocked(d, now.Add(time.Duration(d.DelayMs)*time.Millisecond))
		}
	}
	ds.wake()
}

// start times a delay that an applied entry just started.
func (ds *delays) start(now time.Time, d lockstate.Delay) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ds.active {
		ds.setLocked(d, now.Add(time.Duration(d.DelayMs)*time.Millisecond))
	}
}

// setLocked gives a delay a deadline, never an earlier one than it has.
func (ds *delays) setLocked(d lockstate.Delay, deadline time.Time) {
	k := keyOf(d)
	x, ok := ds.byKey[k]
	switch {
	case !ok:
		x = &delay{d: d, deadline: deadline, pos: -1}
		ds.byKey[k] = x
		heap.Push(&ds.queue, x)
	case x.pos < 0:
		// Its end is being proposed; the proposal's outcome decides.
		return
	case deadline.After(x.deadline):
		x.deadline = deadline
		heap.Fix(&ds.queue, x.pos)
	}
	if x.pos == 0 {
		ds.wake()
	}
}

func (ds *delays) wake() {
	select {
	case ds.sooner <- struct{}{}:
	default:
	}
}

// due marks and returns the delays that have run out by now, and the next
// deadline (zero when there is none).
func (ds *delays) due(now time.Time) ([]lockstate.Delay, time.Time) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	var out []lockstate.Delay
	for len(ds.queue) > 0 {
		x := ds.queue[0]
		if x.deadline.After(now) {
			return out, x.deadline
		}
		heap.Pop(&ds.queue)
		out = append(out, x.d)
	}
	return out, time.Time{}
}

// ended forgets a delay whose end was applied.
func (ds *delays) ended(d lockstate.Delay) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	k := keyOf(d)
	if x, ok := ds.byKey[k]; ok {
		if x.pos >= 0 {
			heap.Remove(&ds.queue, x.pos)
		}
		delete(ds.byKey, k)
	}
}

// retry times again, after wait, a delay whose end could not be committed.
func (ds *delays) retry(now time.Time, d lockstate.Delay, wait time.Duration) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if x, ok := ds.byKey[keyOf(d)]; ok && ds.active && x.pos < 0 {
		x.deadline = now.Add(wait)
		heap.Push(&ds.queue, x)
		if x.pos == 0 {
			ds.wake()
		}
	}
}

func (ds *delays) count() int {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return len(ds.byKey)
}

// run calls end for each delay that runs out, until stop is closed.
func (ds *delays) run(clock Clock, stop <-chan struct{}, end func(lockstate.Delay)) {
	runDue(clock, stop, ds.sooner, ds.due, end)
}

// delayHeap orders delays by deadline, earliest first.
type delayHeap []*delay

func (h delayHeap) Len() int           { return len(h) }
func (h delayHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h delayHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}

func (h *delayHeap) Push(x any) {
	d := x.(*delay)
	d.pos = len(*h)
	*h = append(*h, d)
}

func (h *delayHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	d.pos = -1
	*h = old[:len(old)-1]
	return d
}

// RunDelays calls end for each lock-delay that has run out on this
// leader's clock, until stop is closed. end must not block for long: it
// proposes EndLockDelay and reports back with DelayEnded or RetryDelay.
func (c *Core) RunDelays(stop <-chan struct{}, end func(lockstate.Delay)) {
	c.delays.run(c.clock, stop, end)
}

// DelayEnded forgets a delay whose EndLockDelay was applied.
func (c *Core) DelayEnded(d lockstate.Delay) { c.delays.ended(d) }

// RetryDelay times again, after wait, a delay whose EndLockDelay was not
// committed (a term's end forgets it anyway: the next leader times it).
func (c *Core) RetryDelay(d lockstate.Delay, wait time.Duration) {
	c.delays.retry(c.clock.Now(), d, wait)
}

// Delays counts the lock-delays this leader times.
func (c *Core) Delays() int { return c.delays.count() }
