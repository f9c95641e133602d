package node

import (
	"sync"
	"time"

	"github.com/dlm/dlm/server/lockstate"
)

// leases are the leader's lease deadlines, in memory only. A follower's table
// is empty.
type leases struct {
	mu       sync.Mutex
	active   bool
	byID     map[uint64]*lease
	expiring map[uint64]bool
}

type lease struct {
	length   time.Duration
	deadline time.Time
}

func newLeases() *leases {
	return &leases{byID: make(map[uint64]*lease), expiring: make(map[uint64]bool)}
}

// reset starts a leader's table with a fresh lease for every session from
// now, or, with a zero now, empties it for a follower.
func (ls *leases) reset(now time.Time, sessions []lockstate.SessionInfo) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.active = !now.IsZero()
	ls.byID = make(map[uint64]*lease, len(sessions))
	ls.expiring = make(map[uint64]bool)
	for _, s := range sessions {
		d := time.Duration(s.LeaseMs) * time.Millisecond
		ls.byID[s.ClientID] = &lease{length: d, deadline: now.Add(d)}
	}
}

// opened starts the lease of a session just opened.
func (ls *leases) opened(now time.Time, id uint64, length time.Duration) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.active {
		ls.byID[id] = &lease{length: length, deadline: now.Add(length)}
	}
}

// renew extends a session's lease to now+length. It reports false when the
// session is being expired (or unknown to this leader), so the caller must
// not promise it a lease.
func (ls *leases) renew(now time.Time, id uint64, length time.Duration) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !ls.active || ls.expiring[id] {
		return false
	}
	l, ok := ls.byID[id]
	if !ok {
		l = &lease{}
		ls.byID[id] = l
	}
	l.length, l.deadline = length, now.Add(length)
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
	delete(ls.byID, id)
	delete(ls.expiring, id)
}

// due marks and returns the sessions whose lease ran out by now.
func (ls *leases) due(now time.Time) []uint64 {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var ids []uint64
	for id, l := range ls.byID {
		if !ls.expiring[id] && !l.deadline.After(now) {
			ls.expiring[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// spared clears the expiring mark of a session whose expiry was not applied
// (it acted in between), giving it a fresh lease.
func (ls *leases) spared(now time.Time, id uint64) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !ls.active || !ls.expiring[id] {
		return
	}
	delete(ls.expiring, id)
	if l, ok := ls.byID[id]; ok {
		l.deadline = now.Add(l.length)
	}
}
