package lockstate

import (
	"slices"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// This file is the contract of named and shared locks, lock-delay and the
// grant history (issue 12) that the server packages build on. The bodies
// here describe the default lock only until the state machine keeps the
// rest; the signatures and the meaning in the comments are fixed.

// MaxLockName is the longest lock name, in bytes.
const MaxLockName = 256

// HistoryCapacity is how many grants the history ring keeps, across all
// locks: the oldest is forgotten first.
const HistoryCapacity = 1024

// MaxLockDelayMs is the longest lock-delay a grant may carry.
const MaxLockDelayMs = 60000

// CheckLockName says why a set lock name is refused: empty, longer than
// MaxLockName, not UTF-8, or holding a character that is not printable
// (unicode.IsPrint, plus the plain space). The default lock is the unset
// name and is never checked here.
func CheckLockName(name string) dlmv1.ErrorReason {
	switch {
	case name == "":
		return dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_EMPTY
	case len(name) > MaxLockName:
		return dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_TOO_LONG
	case !utf8.ValidString(name):
		return dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_INVALID
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_INVALID
		}
	}
	return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// CheckMode says why a mode is refused: only unspecified (exclusive),
// exclusive and shared are known.
func CheckMode(mode dlmv1.LockMode) dlmv1.ErrorReason {
	switch mode {
	case dlmv1.LockMode_LOCK_MODE_UNSPECIFIED, dlmv1.LockMode_LOCK_MODE_EXCLUSIVE, dlmv1.LockMode_LOCK_MODE_SHARED:
		return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	return dlmv1.ErrorReason_ERROR_REASON_LOCK_MODE_UNKNOWN
}

// HeldLock is one grant a session holds.
type HeldLock struct {
	Lock  string
	Token uint64
	Mode  dlmv1.LockMode
}

// Delay is a lock in its lock-delay: the expiry of the grant Token started
// it, and it lasts DelayMs. The leader proposes EndLockDelay{Lock, Token}
// once DelayMs has passed on its own clock.
type Delay struct {
	Lock    string
	Token   uint64
	DelayMs uint32
}

// HolderView is one holder of a lock.
type HolderView struct {
	ClientID      uint64
	Token         uint64
	Mode          dlmv1.LockMode
	GrantedUnixMs int64
}

// TokenCheck is the answer to CheckToken.
type TokenCheck struct {
	// Current is true when the token is a grant the lock has now.
	Current bool
	// Mode is that grant's mode, when current.
	Mode dlmv1.LockMode
	// LatestToken is the highest token of the lock's current holders, or 0
	// when it is free.
	LatestToken uint64
}

// Event is one grant of the history ring and, once it ended, how.
type Event struct {
	Lock          string
	Token         uint64
	ClientID      uint64
	HolderName    string
	Mode          dlmv1.LockMode
	GrantedUnixMs int64
	EndedUnixMs   int64
	End           dlmv1.LockEnd
}

// LockView describes one lock. Holder, Token and GrantedUnixMs describe the
// exclusive holder, or the oldest shared one; Holders lists them all.
type LockView struct {
	Name          string
	Mode          dlmv1.LockMode
	Holders       []HolderView
	QueueModes    []dlmv1.LockMode
	Delayed       bool
	DelayMs       uint32
	Holder        uint64
	Token         uint64
	LastToken     uint64
	GrantedUnixMs int64
	StagedAppends int
	StagedBytes   uint64
	Queue         []uint64
}

// QueueLength is the number of sessions waiting for the default lock.
func (m *Machine) QueueLength() int { return len(m.locks[DefaultLock].queue) }

// Lock describes the default lock.
func (m *Machine) Lock() LockView { return m.locks[DefaultLock].view(DefaultLock) }

func (l *lock) view(name string) LockView {
	v := LockView{
		Name: name, LastToken: l.lastToken, Delayed: l.delayed, DelayMs: l.delayMs,
		StagedAppends: len(l.staged), StagedBytes: l.stagedBytes,
	}
	if len(l.holders) > 0 {
		h := l.holders[0]
		v.Mode, v.Holder, v.Token, v.GrantedUnixMs = h.mode, h.clientID, h.token, h.grantedMs
		v.Holders = make([]HolderView, len(l.holders))
		for i, h := range l.holders {
			v.Holders[i] = HolderView{ClientID: h.clientID, Token: h.token, Mode: h.mode, GrantedUnixMs: h.grantedMs}
		}
	}
	if len(l.queue) > 0 {
		v.Queue = make([]uint64, len(l.queue))
		v.QueueModes = make([]dlmv1.LockMode, len(l.queue))
		for i, w := range l.queue {
			v.Queue[i], v.QueueModes[i] = w.clientID, w.mode
		}
	}
	return v
}

// Held lists the grants the session holds, in lock name order.
func (m *Machine) Held(id uint64) []HeldLock {
	s, ok := m.sessions[id]
	if !ok {
		return nil
	}
	var out []HeldLock
	if l := m.locks[DefaultLock]; l.holderIndex(id) >= 0 {
		h := l.holders[l.holderIndex(id)]
		out = append(out, HeldLock{Lock: DefaultLock, Token: h.token, Mode: h.mode})
	}
	if len(s.named) == 0 {
		return out
	}
	names := make([]string, 0, len(s.named))
	for name := range s.named {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		l := m.locks[name]
		if i := l.holderIndex(id); i >= 0 {
			out = append(out, HeldLock{Lock: name, Token: l.holders[i].token, Mode: l.holders[i].mode})
		}
	}
	return out
}

// Delays lists the locks in their lock-delay, in name order, so that a new
// leader can time each one (the whole delay again, from its own start).
func (m *Machine) Delays() []Delay {
	var out []Delay
	for name, l := range m.locks {
		if l.delayed {
			out = append(out, Delay{Lock: name, Token: l.delayToken, DelayMs: l.delayMs})
		}
	}
	slices.SortFunc(out, func(a, b Delay) int { return strings.Compare(a.Lock, b.Lock) })
	return out
}

// CheckToken answers whether token is a current grant of lock. A lock that
// is not live answers LOCK_UNKNOWN (the default lock is always live).
func (m *Machine) CheckToken(lock string, token uint64) (TokenCheck, dlmv1.ErrorReason) {
	l, ok := m.locks[lock]
	if !ok {
		return TokenCheck{}, dlmv1.ErrorReason_ERROR_REASON_LOCK_UNKNOWN
	}
	var tc TokenCheck
	if n := len(l.holders); n > 0 {
		// Tokens grow in grant order: the last holder's is the highest.
		tc.LatestToken = l.holders[n-1].token
	}
	for _, h := range l.holders {
		if h.token == token {
			tc.Current, tc.Mode = true, h.mode
		}
	}
	return tc, dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// LockNamed describes one lock; a lock that is not live is described as
// free (and ok is false).
func (m *Machine) LockNamed(name string) (LockView, bool) {
	l, ok := m.locks[name]
	if !ok {
		return LockView{Name: name}, false
	}
	return l.view(name), true
}

// Locks lists at most limit live locks in name order (the default lock,
// named "", first), starting after the name *after (nil: from the start),
// and whether more follow.
func (m *Machine) Locks(after *string, limit int) ([]LockView, bool) {
	names := make([]string, 0, len(m.locks))
	for name := range m.locks {
		if after == nil || name > *after {
			names = append(names, name)
		}
	}
	if limit <= 0 {
		return nil, len(names) > 0
	}
	slices.Sort(names)
	more := len(names) > limit
	if more {
		names = names[:limit]
	}
	out := make([]LockView, len(names))
	for i, name := range names {
		out[i] = m.locks[name].view(name)
	}
	return out, more
}

// LockCount is the number of live locks, the default lock included.
func (m *Machine) LockCount() int { return len(m.locks) }

// QueuePositionIn is the session's 1-based place in lock's queue, or 0.
func (m *Machine) QueuePositionIn(lock string, id uint64) int {
	if l, ok := m.locks[lock]; ok {
		return l.position(id)
	}
	return 0
}

// History lists at most limit of the newest remembered grants (limit 0:
// all), of lock only when lock is not nil, oldest first.
func (m *Machine) History(lock *string, limit int) []Event {
	var out []Event
	// Walk from the newest back, so that a limit stops the walk early.
	for i := len(m.history) - 1; i >= 0 && (limit <= 0 || len(out) < limit); i-- {
		e := m.event(i)
		if lock == nil || e.Lock == *lock {
			out = append(out, *e)
		}
	}
	slices.Reverse(out)
	return out
}

// event is the i-th remembered grant, oldest first.
func (m *Machine) event(i int) *Event {
	return &m.history[(m.histStart+i)%len(m.history)]
}

// remember adds a grant to the history ring, forgetting the oldest when full.
func (m *Machine) remember(e Event) {
	if len(m.history) < HistoryCapacity {
		m.history = append(m.history, e)
		return
	}
	m.history[m.histStart] = e
	m.histStart = (m.histStart + 1) % len(m.history)
}

// eventOf is the remembered grant with token, or nil. The ring is in grant
// order, so in token order: a binary search finds it.
func (m *Machine) eventOf(token uint64) *Event {
	n := len(m.history)
	i := sort.Search(n, func(i int) bool { return m.event(i).Token >= token })
	if i < n && m.event(i).Token == token {
		return m.event(i)
	}
	return nil
}

// endEvent records how the grant with token ended, if it is remembered.
func (m *Machine) endEvent(token uint64, end dlmv1.LockEnd, now int64) {
	// The grant ending is most often the newest one.
	if n := len(m.history); n > 0 && m.event(n-1).Token == token {
		e := m.event(n - 1)
		e.EndedUnixMs, e.End = now, end
		return
	}
	if e := m.eventOf(token); e != nil {
		e.EndedUnixMs, e.End = now, end
	}
}
