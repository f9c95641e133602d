package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/leadership"
	"github.com/dlm/dlm/server/lockstate"
	"github.com/dlm/dlm/server/metrics"
	"github.com/dlm/dlm/server/staging"
)

// Session is a newly opened session.
type Session struct {
	ClientID uint64
	Secret   string
	Lease    time.Duration
}

// DefaultMaxSessions is the default cap on open sessions: far more than the
// clients one lock has in practice (each session is a client process), few
// enough that the state, its snapshots and a leader's fresh-lease reset stay
// small (a session with a full table of unacknowledged answers holds tens of
// KiB).
const DefaultMaxSessions = 10000

// OpenSession opens a session with the requested lease (0 for the default).
func (n *Node) OpenSession(ctx context.Context, lease time.Duration, name string) (Session, error) {
	if err := checkSessionName(name); err != nil {
		return Session{}, err
	}
	if lease == 0 {
		lease = n.cfg.DefaultLease
	}
	lease = min(max(lease, n.cfg.MinLease), n.cfg.MaxLease).Truncate(time.Millisecond)
	var b [16]byte
	rand.Read(b[:])
	secret := hex.EncodeToString(b[:])
	if err := n.admit(); err != nil {
		return Session{}, err
	}
	// Refuse early what the log would refuse, so that a flood of opens past
	// the cap costs no log entries; apply checks again, exactly.
	cmd := &raftlogv1.Command{Op: &raftlogv1.Command_OpenSession{OpenSession: &raftlogv1.OpenSession{
		Secret: secret, LeaseMs: uint32(lease.Milliseconds()), Name: name, MaxSessions: uint64(max(n.cfg.MaxSessions, 0)),
	}}}
	var reason dlmv1.ErrorReason
	n.fsm.View(func(m *lockstate.Machine) { _, reason = m.Admit(cmd) })
	if reason == dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS {
		return Session{}, n.tooManySessions()
	}
	if err := reasonError(reason); err != nil {
		return Session{}, err
	}
	res, err := n.propose(ctx, cmd)
	if err != nil {
		return Session{}, err
	}
	if res.Reason() == dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS {
		return Session{}, n.tooManySessions()
	}
	if err := reasonError(res.Reason()); err != nil {
		return Session{}, err
	}
	return Session{ClientID: res.ClientID, Secret: secret, Lease: lease}, nil
}

func (n *Node) tooManySessions() error {
	return fail(dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS,
		"the cluster has %d open sessions, its limit (--max-sessions): nothing changed; close unused sessions or retry after some expire", n.cfg.MaxSessions)
}

// Waiting reports whether an acquire call waits on this leader for the
// session: its next grant or end then wakes the call.
func (n *Node) Waiting(clientID uint64) bool { return n.lead.Waiting(clientID) }

// KeepAlive renews a session's lease in the leader's memory and returns the
// lease length, the default lock's token the session holds (0 for none) and
// every grant it holds.
func (n *Node) KeepAlive(id uint64, secret string) (Renewal, error) {
	if _, err := n.leading(); err != nil {
		return Renewal{}, err
	}
	r := Renewal{ClientID: id}
	var (
		info      lockstate.SessionInfo
		saturated bool
	)
	n.fsm.View(func(m *lockstate.Machine) {
		if r.Reason = m.Authenticate(id, secret); r.Reason == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			info, _ = m.Session(id)
			r.Token = m.HeldToken(id)
			r.Held = m.Held(id)
			saturated = m.Saturated(id)
		}
	})
	if err := reasonError(r.Reason); err != nil {
		return Renewal{}, err
	}
	if saturated {
		return Renewal{}, saturatedError()
	}
	r.Lease = time.Duration(info.LeaseMs) * time.Millisecond
	if !n.lead.Renew(id, r.Lease) {
		return Renewal{}, reasonError(dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED)
	}
	return r, nil
}

// touch renews the lease of a session that just made a call: any call is
// proof of life, but not of progress, so a saturated session is not renewed.
func (n *Node) touch(c *raftlogv1.Caller) {
	var info lockstate.SessionInfo
	var ok bool
	n.fsm.View(func(m *lockstate.Machine) {
		if m.Authenticate(c.GetClientId(), c.GetSecret()) == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			info, ok = m.Session(c.GetClientId())
			ok = ok && !m.Saturated(c.GetClientId())
		}
	})
	if ok {
		n.lead.Renew(info.ClientID, time.Duration(info.LeaseMs)*time.Millisecond)
	}
}

// admitted answers a request from the applied state when the state
// machine's own rules can (lockstate's Admit, the rules Apply uses): a
// refusal, or the recorded outcome of a repeat. A nil outcome and error
// means the request is new and must be proposed.
func (n *Node) admitted(cmd *raftlogv1.Command) (*raftlogv1.Outcome, error) {
	var (
		o      *raftlogv1.Outcome
		reason dlmv1.ErrorReason
	)
	start := time.Now()
	n.fsm.View(func(m *lockstate.Machine) { o, reason = m.Admit(cmd) })
	n.metrics.Since(metrics.Checks, start)
	return o, reasonError(reason)
}

// Caller names one request of a session: the session's id and secret, the
// request's seq, and the lowest seq whose answer the client may still need.
type Caller struct {
	ClientID   uint64
	Secret     string
	Seq        uint64
	AckedBelow uint64
}

func (c Caller) log() *raftlogv1.Caller {
	return &raftlogv1.Caller{ClientId: c.ClientID, Secret: c.Secret, Seq: c.Seq, AckedBelow: c.AckedBelow}
}

// Section is the size of a critical section: staged, after an append, or
// committed, after a release.
type Section = staging.Counts

func sectionOf(o *raftlogv1.Outcome) Section {
	return Section{Appends: o.GetAppends(), Bytes: o.GetBytes()}
}

// Grant is the answer to an acquire.
type Grant struct {
	Granted bool
	Token   uint64
	Queued  bool
	// Position is the session's place in the lock's queue when queued.
	Position int
	// Lock and Mode are the lock asked for and the mode granted or waited
	// for (never unspecified).
	Lock string
	Mode dlmv1.LockMode
}

// Want is which lock an acquire asks for, and how.
type Want struct {
	// Lock names the lock; nil is the default lock, which guards the files.
	// A set name must pass lockstate.CheckLockName (so "" is refused).
	Lock *string
	// Mode is exclusive (unspecified too) or shared.
	Mode dlmv1.LockMode
	// DelayMs is the grant's lock-delay; nil is the server's LockDelay.
	DelayMs *uint32
}

// checkLock resolves a lock name, refusing a malformed one with its own
// reason before anything else happens.
func checkLock(lock *string) (string, error) {
	if lock == nil {
		return lockstate.DefaultLock, nil
	}
	switch r := lockstate.CheckLockName(*lock); r {
	case dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED:
		return *lock, nil
	case dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_TOO_LONG:
		return "", fail(r, "the lock name has %d bytes; the limit is %d: nothing changed", len(*lock), lockstate.MaxLockName)
	default:
		return "", reasonError(r)
	}
}

// checkWant refuses a malformed acquire before anything else happens, and
// returns its lock's name and its grant's lock-delay.
func (n *Node) checkWant(w Want) (string, uint32, error) {
	name, err := checkLock(w.Lock)
	if err != nil {
		return "", 0, err
	}
	if r := lockstate.CheckMode(w.Mode); r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return "", 0, fail(r, "unknown lock mode %d: use LOCK_MODE_EXCLUSIVE or LOCK_MODE_SHARED; nothing changed", int32(w.Mode))
	}
	delay := uint32(n.cfg.LockDelay.Milliseconds())
	if w.DelayMs != nil {
		if *w.DelayMs > lockstate.MaxLockDelayMs {
			return "", 0, fail(dlmv1.ErrorReason_ERROR_REASON_LOCK_DELAY_INVALID, "lock_delay_ms is %d; the limit is %d: nothing changed", *w.DelayMs, lockstate.MaxLockDelayMs)
		}
		delay = *w.DelayMs
	}
	return name, delay, nil
}

// grantedMode is the mode an acquire is granted or waits for.
func grantedMode(m dlmv1.LockMode) dlmv1.LockMode {
	if m == dlmv1.LockMode_LOCK_MODE_UNSPECIFIED {
		return dlmv1.LockMode_LOCK_MODE_EXCLUSIVE
	}
	return m
}

// Acquire asks for the default lock, exclusively, and, unless try is set,
// waits in the queue up to wait (0 for the default) or ctx's end. A repeat
// with the same seq keeps the place in the queue.
func (n *Node) Acquire(ctx context.Context, caller Caller, try bool, wait time.Duration) (Grant, error) {
	return n.AcquireLock(ctx, caller, Want{}, try, wait)
}

// AcquireLock asks for the lock w names, as Acquire does for the default
// lock.
func (n *Node) AcquireLock(ctx context.Context, caller Caller, w Want, try bool, wait time.Duration) (Grant, error) {
	return n.acquire(ctx, caller, w, try, wait, false)
}

// AcquireNoWait asks for the default lock and returns at once, granted or
// queued: the session waits as an entry in the queue, with no call parked
// on the leader. The grant reaches the Pulse stream that last renewed the
// session; a repeat with the same seq answers it too.
func (n *Node) AcquireNoWait(ctx context.Context, caller Caller) (Grant, error) {
	return n.AcquireLockNoWait(ctx, caller, Want{})
}

// AcquireLockNoWait asks for the lock w names, as AcquireNoWait does for
// the default lock.
func (n *Node) AcquireLockNoWait(ctx context.Context, caller Caller, w Want) (Grant, error) {
	return n.acquire(ctx, caller, w, false, 0, true)
}

func (n *Node) acquire(ctx context.Context, caller Caller, want Want, try bool, wait time.Duration, noWait bool) (Grant, error) {
	c := caller.log()
	// Bad input is refused before anything else: it changes nothing.
	name, delay, err := n.checkWant(want)
	if err != nil {
		return Grant{}, err
	}
	if g, ok := n.mutantGrant(c); ok {
		return g, nil
	}
	t, err := n.leading()
	if err != nil {
		return Grant{}, err
	}
	if wait <= 0 {
		wait = n.cfg.DefaultPollWait
	}
	cmd := &raftlogv1.Command{Op: &raftlogv1.Command_Acquire{Acquire: &raftlogv1.Acquire{
		Caller: c, Try: try, Lock: name, Mode: uint32(want.Mode), LockDelayMs: delay, MaxLocks: uint64(max(n.cfg.MaxLocks, 0)),
	}}}
	var w *leadership.Wait
	if noWait {
		// Record it before proposing or checking, so a grant in between
		// reaches the stream.
		n.lead.NoWait(c.GetClientId(), c.GetSeq())
	} else {
		// Watch before proposing or checking, so a grant in between is not
		// missed.
		w = n.lead.Watch(t, c.GetClientId(), wait)
		defer w.Close()
	}
	g, err := n.acquireOnce(ctx, c, cmd, name, want.Mode, w)
	if noWait && (err != nil || !g.Queued) {
		// Answered now: no grant will need reporting.
		n.lead.Answered(c.GetClientId(), c.GetSeq())
	}
	return g, err
}

func (n *Node) acquireOnce(ctx context.Context, c *raftlogv1.Caller, cmd *raftlogv1.Command, name string, mode dlmv1.LockMode, w *leadership.Wait) (Grant, error) {
	o, err := n.admitted(cmd)
	if err != nil {
		return Grant{}, err
	}
	if o == nil {
		if err := n.admit(); err != nil {
			return Grant{}, err
		}
		res, err := n.propose(ctx, cmd)
		if err != nil {
			return Grant{}, err
		}
		if err := reasonError(res.Reason()); err != nil {
			return Grant{}, n.explainLockLimit(err)
		}
	} else {
		// A deposed leader's recorded answers may be stale; only a leader
		// a majority still follows answers a repeat.
		if err := n.verifyLeader(ctx); err != nil {
			return Grant{}, err
		}
		n.metrics.DedupHit()
		n.touch(c)
	}
	for {
		o, err := n.admitted(cmd)
		if err != nil {
			return Grant{}, err
		}
		if err := reasonError(dlmv1.ErrorReason(o.GetErrorReason())); err != nil {
			return Grant{}, n.explainLockLimit(err)
		}
		g := Grant{Granted: o.GetGranted(), Token: o.GetToken(), Queued: o.GetQueued(), Lock: name, Mode: grantedMode(mode)}
		if !g.Queued {
			return g, nil
		}
		n.fsm.View(func(m *lockstate.Machine) { g.Position = m.QueuePositionIn(name, c.GetClientId()) })
		if w == nil {
			return g, nil
		}
		switch w.Next(ctx, n.stop) {
		case leadership.Woken:
		case leadership.TimedOut, leadership.Cancelled:
			return g, nil
		case leadership.Stopped:
			return Grant{}, fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "the node is shutting down")
		case leadership.Lost:
			// The new leader keeps the queue; the client polls it with the
			// same seq.
			if _, err := n.leading(); err != nil {
				return Grant{}, err
			}
			// This node already leads again, in a new term.
			return Grant{}, fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "leadership changed while waiting: retry with the same seq")
		}
	}
}

// explainLockLimit names the server's limit in a TOO_MANY_LOCKS refusal.
func (n *Node) explainLockLimit(err error) error {
	var ne *Error
	if !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_LOCKS || ne.Msg != "" {
		return err
	}
	return fail(ne.Reason, "too many live locks: the cluster allows %d named locks (--max-locks), and a session may hold or wait for %d locks: nothing changed; release some, or retry later", n.cfg.MaxLocks, lockstate.DefaultLimits().MaxLocksPerSession)
}

// mutate runs a caller's command at most once: a repeat gets the recorded
// outcome without touching the log.
func (n *Node) mutate(ctx context.Context, c *raftlogv1.Caller, cmd *raftlogv1.Command) (*raftlogv1.Outcome, error) {
	if _, err := n.leading(); err != nil {
		return nil, err
	}
	o, err := n.admitted(cmd)
	if err != nil {
		return nil, err
	}
	if mutDupApply {
		o = nil
	}
	if o == nil {
		if grows(cmd) {
			if err := n.admit(); err != nil {
				return nil, err
			}
		}
		res, err := n.propose(ctx, cmd)
		if err != nil {
			return nil, err
		}
		o = res.Outcome
	} else if err := n.verifyLeader(ctx); err != nil {
		// A deposed leader's recorded answers may be stale; only a leader
		// a majority still follows answers a repeat.
		return nil, err
	} else {
		n.metrics.DedupHit()
	}
	n.touch(c)
	return o, reasonError(dlmv1.ErrorReason(o.GetErrorReason()))
}

// ReadFile returns committed bytes of a file, after confirming leadership so
// that the answer is linearizable.
func (n *Node) ReadFile(ctx context.Context, name string, offset, limit int64) ([]byte, int64, int64, error) {
	var reason dlmv1.ErrorReason
	n.fsm.View(func(m *lockstate.Machine) { reason = m.CheckFile(name) })
	if err := reasonError(reason); err != nil {
		return nil, 0, 0, err
	}
	if limit < 0 {
		return nil, 0, 0, fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "limit must not be negative")
	}
	if limit == 0 || limit > n.cfg.MaxReadBytes {
		limit = n.cfg.MaxReadBytes
	}
	if err := n.verifyLeader(ctx); err != nil {
		return nil, 0, 0, err
	}
	return n.fsm.ReadFile(name, offset, limit)
}

// verifyLeader confirms with a majority that this node still leads, so that
// a deposed leader never serves a stale read.
func (n *Node) verifyLeader(ctx context.Context) error {
	if _, err := n.leading(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- n.raft.VerifyLeader().Error() }()
	select {
	case err := <-done:
		if err != nil {
			return &Error{Reason: dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, LeaderURL: n.leaderURL(), Msg: "leadership not confirmed: " + err.Error()}
		}
		return nil
	case <-ctx.Done():
		return fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "leadership not confirmed in time")
	}
}

// Status page sizes: a first page small enough for a dashboard poll, a
// largest page that keeps one answer well under the API's read limits.
const (
	DefaultStatusPage = 100
	MaxStatusPage     = 1000
	// DefaultStatusWait and MaxStatusWait bound a Status long poll.
	DefaultStatusWait = 5 * time.Second
	MaxStatusWait     = 30 * time.Second
)

// StatusQuery asks for one page of the status.
type StatusQuery struct {
	// PageSize bounds the sessions and the queue shown (0: the default).
	PageSize int
	// PageToken continues from an earlier answer's NextPageToken.
	PageToken string
	// KnownStateIndex, when set, makes the call wait up to Wait (0: the
	// default) for a lock-state change past it: a long poll.
	KnownStateIndex uint64
	Wait            time.Duration
	// Consistent first confirms with a majority that this node leads.
	Consistent bool
	// Lock names the lock to describe (nil: the default lock).
	Lock *string
}

// Status is the node, the lock, one page of sessions, the files and the
// members.
type Status struct {
	Node NodeInfo
	Lock LockInfo
	// LockCount is the number of live locks, the default lock included.
	LockCount uint64
	// StateIndex is the applied lock-state index (never 0).
	StateIndex    uint64
	SessionCount  uint64
	Sessions      []SessionStatus
	NextPageToken string
	Files         []FileInfo
	Members       []Member
}

// NodeInfo is this node's view of itself and of Raft.
type NodeInfo struct {
	ID, Role, LeaderURL, RaftAddr   string
	Term, CommitIndex, AppliedIndex uint64
	// LastContact is the time since the leader was last heard from: 0 on
	// the leader, -1 when never.
	LastContact  time.Duration
	FreeBytes    int64
	StorageFault string
}

// LockInfo is the lock as the applied state has it, and its holder's lease
// left on this leader.
type LockInfo struct {
	lockstate.LockView
	HolderName  string
	QueueLength uint64
	LeaseLeft   time.Duration
	// HolderStatus describes the holders LockView.Holders lists (at most
	// a page of them).
	HolderStatus []HolderInfo
}

// SessionStatus is an open session and its lease left on this leader.
type SessionStatus struct {
	lockstate.SessionInfo
	LeaseLeft time.Duration
}

// FileInfo is a file's committed size.
type FileInfo struct {
	Name string
	Size int64
}

// Status describes the node, the lock and the files, with one page of the
// sessions and waiters. With q.Consistent it first confirms leadership;
// with q.KnownStateIndex it first waits for a later change (a long poll).
func (n *Node) Status(ctx context.Context, q StatusQuery) (Status, error) {
	page := q.PageSize
	if page <= 0 {
		page = DefaultStatusPage
	}
	page = min(page, MaxStatusPage)
	lock, err := checkLock(q.Lock)
	if err != nil {
		return Status{}, err
	}
	var after uint64
	if t := q.PageToken; t != "" {
		v, err := strconv.ParseUint(t, 10, 64)
		if err != nil {
			return Status{}, fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "page_token %q is not one this service gave", t)
		}
		after = v
	}
	if known := q.KnownStateIndex; known > 0 {
		if q.Consistent {
			// A follower says so at once rather than after the wait.
			if _, err := n.leading(); err != nil {
				return Status{}, err
			}
		}
		wait := DefaultStatusWait
		if q.Wait > 0 {
			wait = min(q.Wait, MaxStatusWait)
		}
		n.awaitChange(ctx, known, wait)
	}
	if q.Consistent {
		if err := n.verifyLeader(ctx); err != nil {
			return Status{}, err
		}
	}
	st := Status{Node: n.nodeInfo()}
	n.fsm.View(func(m *lockstate.Machine) {
		// Never 0, which would mean "do not wait" when passed back: a
		// lock-state entry always follows the cluster's first entry.
		st.StateIndex = max(m.AppliedIndex(), 1)
		lv, _ := m.LockNamed(lock)
		lv.Name = lock
		st.Lock = n.lockInfo(m, lv, page, page)
		st.LockCount = uint64(m.LockCount())
		st.SessionCount = uint64(m.SessionCount())
		sessions, more := m.SessionsAfter(after, page)
		for _, s := range sessions {
			st.Sessions = append(st.Sessions, SessionStatus{SessionInfo: s})
		}
		if more && len(sessions) > 0 {
			st.NextPageToken = strconv.FormatUint(sessions[len(sessions)-1].ClientID, 10)
		}
		for _, name := range m.FileNames() {
			st.Files = append(st.Files, FileInfo{Name: name, Size: m.FileSize(name)})
		}
	})
	locks := []LockInfo{st.Lock}
	n.leasesLeft(locks)
	st.Lock = locks[0]
	for i := range st.Sessions {
		st.Sessions[i].LeaseLeft = n.lead.Left(st.Sessions[i].ClientID)
	}
	if members, err := n.Members(); err == nil {
		st.Members = members
	}
	return st, nil
}

// awaitChange waits until the lock state is past index known, this node's
// leadership changes, wait passes, ctx ends or the node stops.
func (n *Node) awaitChange(ctx context.Context, known uint64, wait time.Duration) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		_, changed := n.lead.Current()
		// Watch before reading the index, so a change in between is seen.
		applied := n.watchApplied()
		var index uint64
		n.fsm.View(func(m *lockstate.Machine) { index = m.AppliedIndex() })
		if index > known {
			return
		}
		select {
		case <-applied:
		case <-changed:
			return
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		case <-n.stop:
			return
		}
	}
}

func (n *Node) nodeInfo() NodeInfo {
	ni := NodeInfo{
		ID: n.cfg.ID, LeaderURL: n.leaderURL(), RaftAddr: n.cfg.RaftAddr,
		Term: n.raft.CurrentTerm(), CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.raft.AppliedIndex(),
		FreeBytes: n.freeBytes(), StorageFault: n.StorageFault(),
	}
	switch n.raft.State() {
	case raft.Leader:
		ni.Role = "leader"
	case raft.Candidate:
		ni.Role = "candidate"
	case raft.Follower:
		ni.Role = "follower"
	default:
		ni.Role = "shutdown"
	}
	switch {
	case ni.Role == "leader":
		ni.LastContact = 0
	case n.raft.LastContact().IsZero():
		ni.LastContact = -1
	default:
		ni.LastContact = time.Since(n.raft.LastContact())
	}
	return ni
}

// expireLeases proposes the expiry of every session whose lease ran out on
// this leader. One goroutine waits for the earliest deadline: leases are
// many, and neither a timer each nor a scan of the table is cheap.
func (n *Node) expireLeases() {
	defer n.done.Done()
	n.lead.RunExpiry(n.stop, func(id uint64) { go n.expire(id) })
}

// endLockDelays proposes the end of each lock-delay once it has run out on
// this leader's clock. One goroutine waits for the earliest, as for leases.
func (n *Node) endLockDelays() {
	defer n.done.Done()
	n.lead.RunDelays(n.stop, func(d lockstate.Delay) { go n.endLockDelay(d) })
}

// delayRetry is how soon an EndLockDelay that did not commit is proposed
// again while this node still leads.
const delayRetry = time.Second

func (n *Node) endLockDelay(d lockstate.Delay) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := n.propose(ctx, &raftlogv1.Command{Op: &raftlogv1.Command_EndLockDelay{EndLockDelay: &raftlogv1.EndLockDelay{Lock: d.Lock, Token: d.Token}}})
	if err != nil {
		// A term's end forgets it, and the next leader times it again.
		n.log.Warn("end of lock-delay not committed", "lock", d.Lock, "token", d.Token, "err", err)
		n.lead.RetryDelay(d, delayRetry)
		return
	}
	n.lead.DelayEnded(d)
}

func (n *Node) expire(id uint64) {
	info, ok := lockstate.SessionInfo{}, false
	n.fsm.View(func(m *lockstate.Machine) { info, ok = m.Session(id) })
	if !ok {
		n.lead.Forget(id)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.propose(ctx, &raftlogv1.Command{Op: &raftlogv1.Command_ExpireSession{ExpireSession: &raftlogv1.ExpireSession{ClientId: id, Epoch: info.Epoch}}})
	if err != nil {
		n.log.Warn("lease expiry not committed", "client", id, "err", err)
	}
	if len(res.Ended) == 0 {
		// Not expired: the session acted in between, or the proposal failed
		// (a new leader starts fresh leases anyway).
		n.lead.Spared(id)
		return
	}
	n.log.Info("session expired", "client", id)
}
