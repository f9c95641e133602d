package lockstate

import (
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

// Held lists the grants the session holds, in lock name order.
func (m *Machine) Held(id uint64) []HeldLock {
	if t := m.HeldToken(id); t != 0 {
		return []HeldLock{{Lock: DefaultLock, Token: t, Mode: dlmv1.LockMode_LOCK_MODE_EXCLUSIVE}}
	}
	return nil
}

// Delays lists the locks in their lock-delay, so that a new leader can time
// each one (the whole delay again, from its own start).
func (m *Machine) Delays() []Delay { return nil }

// CheckToken answers whether token is a current grant of lock. A lock that
// is not live answers LOCK_UNKNOWN (the default lock is always live).
func (m *Machine) CheckToken(lock string, token uint64) (TokenCheck, dlmv1.ErrorReason) {
	if lock != DefaultLock {
		return TokenCheck{}, dlmv1.ErrorReason_ERROR_REASON_LOCK_UNKNOWN
	}
	l := m.locks[DefaultLock]
	return TokenCheck{
		Current:     l.holder != 0 && l.token == token,
		Mode:        dlmv1.LockMode_LOCK_MODE_EXCLUSIVE,
		LatestToken: l.token,
	}, dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// LockNamed describes one lock; a lock that is not live is described as
// free (and ok is false).
func (m *Machine) LockNamed(name string) (LockView, bool) {
	if name == DefaultLock {
		return m.Lock(), true
	}
	return LockView{Name: name}, false
}

// Locks lists at most limit live locks in name order (the default lock,
// named "", first), starting after the name *after (nil: from the start),
// and whether more follow.
func (m *Machine) Locks(after *string, limit int) ([]LockView, bool) {
	if after != nil || limit <= 0 {
		return nil, after == nil
	}
	return []LockView{m.Lock()}, false
}

// LockCount is the number of live locks, the default lock included.
func (m *Machine) LockCount() int { return 1 }

// History lists at most limit of the newest remembered grants (limit 0:
// all), of lock only when lock is not nil, oldest first.
func (m *Machine) History(lock *string, limit int) []Event { return nil }

// QueuePositionIn is the session's 1-based place in lock's queue, or 0.
func (m *Machine) QueuePositionIn(lock string, id uint64) int {
	if l, ok := m.locks[lock]; ok {
		return l.position(id)
	}
	return 0
}
