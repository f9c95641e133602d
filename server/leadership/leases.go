package leadership

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlm/dlm/server/lockstate"
)

// leases are the leader's lease deadlines, in memory only. A follower's table
// is empty.
//
// The deadlines are kept in a min-heap, so the expiry loop sleeps until the
// earliest one and looks at the sessions that are due, never at the whole
// table: an idle leader's cost does not grow with the number of sessions.
type leases struct {
	mu     sync.Mutex
	active bool
	byID   map[uint64]*lease
	// queue holds the leases that are not being expired, earliest first.
	queue leaseHeap
	// sooner is signalled when the earliest deadline moves earlier, so the
	// expiry loop re-arms its timer.
	sooner chan struct{}
	// examined counts the leases the expiry loop looked at, so a test can
	// prove that an idle leader examines none.
	examined atomic.Uint64
}

type lease struct {
	id       uint64
	length   time.Duration
	deadline time.Time
	// pos is the lease's place in the heap, or -1 while it is being
	// expired.
	pos int
}

func newLeases() *leases {
	return &leases{byID: make(map[uint64]*lease), sooner: make(chan struct{}, 1)}
}

// reset starts a leader's table with a fresh lease for every session from
// now, or, with a zero now, empties it for a follower.
func (ls *leases) reset(now time.Time, sessions []lockstate.SessionInfo) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.active = !now.IsZero()
	ls.byID = make(map[uint64]*lease, len(sessions))
	ls.queue = make(leaseHeap, 0, len(sessions))
	for _, s := range sessions {
		d := time.Duration(s.LeaseMs) * time.Millisecond
		l := &lease{id: s.ClientID, length: d, deadline: now.Add(d), pos: len(ls.queue)}
		ls.byID[s.ClientID] = l
		ls.queue = append(ls.queue, l)
	}
	heap.Init(&ls.queue)
	ls.wake()
}

// opened starts the lease of a session just opened.
func (ls *leases) opened(now time.Time, id uint64, length time.Duration) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.active {
		ls.set(id, length, now.Add(length))
	}
}

// set gives a known or new session's lease a deadline, and wakes the
// expiry loop when that deadline is now the earliest.
func (ls *leases) set(id uint64, length time.Duration, deadline time.Time) {
	l, ok := ls.byID[id]
	if !ok {
		l = &lease{id: id, pos: -1}
		ls.byID[id] = l
	}
	l.length, l.deadline = length, deadline
	if l.pos < 0 {
		heap.Push(&ls.queue, l)
	} else {
		heap.Fix(&ls.queue, l.pos)
	}
	if l.pos == 0 {
		ls.wake()
	}
}

func (ls *leases) wake() {
	select {
	case ls.sooner <- struct{}{}:
	default:
	}
}

// renew extends a session's lease to now+length. It reports false when the
// session is being expired (or unknown to this leader), so the caller must
// not promise it a lease.
func (ls *leases) renew(now time.Time, id uint64, length time.Duration) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !ls.active {
		return false
	}
	if l, ok := ls.byID[id]; ok && l.pos < 0 {
		return false
	}
	ls.set(id, length, now.Add(length))
	return true
}

// left is how long the session's lease has to run, or 0.
func (ls *leases) left(now time.Time, id uint64) time.Duration {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if l, ok := ls.byID[id]; ok && l.deadline.After(now) {
		return l.deadline.Sub(now)
	}
	return 0
}

func (ls *leases) remove(id uint64) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if l, ok := ls.byID[id]; ok {
		if l.pos >= 0 {
			heap.Remove(&ls.queue, l.pos)
		}
		delete(ls.byID, id)
	}
}

// due marks and returns the sessions whose lease ran out by now, and the
// next deadline (zero when there is none).
func (ls *leases) due(now time.Time) ([]uint64, time.Time) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var ids []uint64
	for len(ls.queue) > 0 {
		ls.examined.Add(1)
		l := ls.queue[0]
		if l.deadline.After(now) {
			return ids, l.deadline
		}
		heap.Pop(&ls.queue)
		ids = append(ids, l.id)
	}
	return ids, time.Time{}
}

// spared clears the expiring mark of a session whose expiry was not applied
// (it acted in between), giving it a fresh lease.
func (ls *leases) spared(now time.Time, id uint64) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if l, ok := ls.byID[id]; ok && ls.active && l.pos < 0 {
		ls.set(id, l.length, now.Add(l.length))
	}
}

// run calls expire for each session whose lease runs out, until stop is
// closed.
func (ls *leases) run(clock Clock, stop <-chan struct{}, expire func(id uint64)) {
	runDue(clock, stop, ls.sooner, ls.due, expire)
}

// runDue calls fire for each item that due reports as run out, until stop
// is closed. It sleeps until the earliest deadline due names, or until
// sooner says one moved earlier; leases and lock-delays share it.
func runDue[T any](clock Clock, stop, sooner <-chan struct{}, due func(time.Time) ([]T, time.Time), fire func(T)) {
	// idle is how long the loop sleeps with nothing pending; a new item
	// wakes it sooner.
	const idle = time.Hour
	timer := clock.NewTimer(idle)
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return
		case <-sooner:
		case <-timer.C():
		}
		now := clock.Now()
		items, next := due(now)
		for _, it := range items {
			fire(it)
		}
		wait := idle
		if !next.IsZero() {
			wait = max(next.Sub(now), 0)
		}
		timer.Reset(wait)
	}
}

// leaseHeap orders leases by deadline, earliest first.
type leaseHeap []*lease

func (h leaseHeap) Len() int           { return len(h) }
func (h leaseHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h leaseHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}

func (h *leaseHeap) Push(x any) {
	l := x.(*lease)
	l.pos = len(*h)
	*h = append(*h, l)
}

func (h *leaseHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	l.pos = -1
	*h = old[:len(old)-1]
	return l
}
