package node

import (
	"context"
	"encoding/base64"
	"strings"
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// Bounds of the lock views, so that one answer stays well under the API's
// limits however many locks, holders and waiters there are.
const (
	// DefaultLocksPage and MaxLocksPage bound a ListLocks page.
	DefaultLocksPage = 100
	MaxLocksPage     = 1000
	// MaxListedWaiters and MaxListedHolders bound the waiters and the
	// holders ListLocks shows of each lock (QueueLength counts them all).
	MaxListedWaiters = 100
	MaxListedHolders = 100
)

// HolderInfo is one holder of a lock, with its label and its lease left on
// this leader (0 on other nodes).
type HolderInfo struct {
	lockstate.HolderView
	Name      string
	LeaseLeft time.Duration
}

// TokenCheck is the answer to CheckToken, and the log index it reflects.
type TokenCheck struct {
	lockstate.TokenCheck
	StateIndex uint64
}

// CheckToken answers whether token is a current grant of lock (nil: the
// default lock). Only the leader answers, after a majority confirms it
// still leads, so that a deposed leader never calls a stale token current.
func (n *Node) CheckToken(ctx context.Context, lock *string, token uint64) (TokenCheck, error) {
	name, err := checkLock(lock)
	if err != nil {
		return TokenCheck{}, err
	}
	if token == 0 {
		return TokenCheck{}, fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "token 0 names no grant: pass the fencing token to check")
	}
	if err := n.verifyLeader(ctx); err != nil {
		return TokenCheck{}, err
	}
	var (
		tc     TokenCheck
		reason dlmv1.ErrorReason
	)
	n.fsm.View(func(m *lockstate.Machine) {
		tc.TokenCheck, reason = m.CheckToken(name, token)
		tc.StateIndex = max(m.AppliedIndex(), 1)
	})
	if reason == dlmv1.ErrorReason_ERROR_REASON_LOCK_UNKNOWN {
		return TokenCheck{}, fail(reason, "no live lock is named %q: it is neither held, nor waited for, nor in its lock-delay, so no token of it is current", name)
	}
	if err := reasonError(reason); err != nil {
		return TokenCheck{}, err
	}
	return tc, nil
}

// LocksQuery asks for one page of the live locks.
type LocksQuery struct {
	// PageSize bounds the locks shown (0: DefaultLocksPage).
	PageSize int
	// PageToken continues from an earlier answer's NextPageToken.
	PageToken string
	// Consistent first confirms with a majority that this node leads.
	Consistent bool
}

// LocksPage is one page of the live locks, in name order.
type LocksPage struct {
	Locks         []LockInfo
	NextPageToken string
	LockCount     uint64
	StateIndex    uint64
}

// A page token names the last lock shown. It is never empty, so that the
// default lock (named "") can end a page, and it is opaque to clients.
const pageTokenPrefix = "after:"

func lockPageToken(name string) string {
	return pageTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(name))
}

func parseLockPageToken(t string) (*string, error) {
	if t == "" {
		return nil, nil
	}
	rest, ok := strings.CutPrefix(t, pageTokenPrefix)
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if !ok || err != nil || len(b) > lockstate.MaxLockName {
		return nil, fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "page_token %q is not one this service gave", t)
	}
	name := string(b)
	return &name, nil
}

// ListLocks lists one page of the live locks (held, waited for or in their
// lock-delay), the default lock first.
func (n *Node) ListLocks(ctx context.Context, q LocksQuery) (LocksPage, error) {
	page := q.PageSize
	if page <= 0 {
		page = DefaultLocksPage
	}
	page = min(page, MaxLocksPage)
	after, err := parseLockPageToken(q.PageToken)
	if err != nil {
		return LocksPage{}, err
	}
	if q.Consistent {
		if err := n.verifyLeader(ctx); err != nil {
			return LocksPage{}, err
		}
	}
	var out LocksPage
	n.fsm.View(func(m *lockstate.Machine) {
		out.StateIndex = max(m.AppliedIndex(), 1)
		out.LockCount = uint64(m.LockCount())
		views, more := m.Locks(after, page)
		for _, lv := range views {
			out.Locks = append(out.Locks, n.lockInfo(m, lv, MaxListedWaiters, MaxListedHolders))
		}
		if more && len(views) > 0 {
			out.NextPageToken = lockPageToken(views[len(views)-1].Name)
		}
	})
	n.leasesLeft(out.Locks)
	return out, nil
}

// lockInfo is the view of one lock with at most waiters of its queue and
// holders of its holders, under the FSM's read lock. The default lock's
// staged section counts what the leader holds in memory too.
func (n *Node) lockInfo(m *lockstate.Machine, lv lockstate.LockView, waiters, holders int) LockInfo {
	if lv.Name == lockstate.DefaultLock && lv.Holder != 0 && lv.Mode != dlmv1.LockMode_LOCK_MODE_SHARED {
		// The leader's view: what log entries staged, then its memory.
		mem := n.sections.Counts(lv.Token, Section{Appends: uint32(lv.StagedAppends), Bytes: lv.StagedBytes})
		lv.StagedAppends += int(mem.Appends)
		lv.StagedBytes += mem.Bytes
	}
	li := LockInfo{LockView: lv, QueueLength: uint64(len(lv.Queue))}
	li.Queue = lv.Queue[:min(len(lv.Queue), waiters)]
	li.QueueModes = lv.QueueModes[:min(len(lv.QueueModes), waiters)]
	if h, ok := m.Session(lv.Holder); ok {
		li.HolderName = h.Name
	}
	for _, hv := range lv.Holders[:min(len(lv.Holders), holders)] {
		hi := HolderInfo{HolderView: hv}
		if s, ok := m.Session(hv.ClientID); ok {
			hi.Name = s.Name
		}
		li.HolderStatus = append(li.HolderStatus, hi)
	}
	return li
}

// leasesLeft fills in the holders' leases left on this leader, outside the
// FSM's read lock.
func (n *Node) leasesLeft(locks []LockInfo) {
	for i := range locks {
		l := &locks[i]
		if l.Holder != 0 {
			l.LeaseLeft = n.lead.Left(l.Holder)
		}
		for j := range l.HolderStatus {
			l.HolderStatus[j].LeaseLeft = n.lead.Left(l.HolderStatus[j].ClientID)
		}
	}
}

// History is the remembered grants, oldest first, and the log index they
// reflect.
type History struct {
	Events     []lockstate.Event
	StateIndex uint64
}

// LockHistory returns at most limit of the newest remembered grants (0:
// all the ring holds), of lock only when lock is not nil. The ring is
// replicated state, so every node answers from its own applied copy.
func (n *Node) LockHistory(lock *string, limit int) (History, error) {
	var only *string
	if lock != nil {
		name, err := checkLock(lock)
		if err != nil {
			return History{}, err
		}
		only = &name
	}
	if limit < 0 || limit > lockstate.HistoryCapacity {
		limit = lockstate.HistoryCapacity
	}
	var h History
	n.fsm.View(func(m *lockstate.Machine) {
		h.Events = m.History(only, limit)
		h.StateIndex = max(m.AppliedIndex(), 1)
	})
	return h, nil
}
