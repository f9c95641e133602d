package lockstate

import (
	"slices"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

const (
	modeExclusive = dlmv1.LockMode_LOCK_MODE_EXCLUSIVE
	modeShared    = dlmv1.LockMode_LOCK_MODE_SHARED
	reasonNone    = dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
)

// normalMode is the mode a grant keeps: unspecified means exclusive.
func normalMode(mode dlmv1.LockMode) dlmv1.LockMode {
	if mode == dlmv1.LockMode_LOCK_MODE_UNSPECIFIED {
		return modeExclusive
	}
	return mode
}

// checkAcquire is what Apply refuses in an acquire the leader should have
// refused already: a malformed name, an unknown mode, a delay too long.
func checkAcquire(op *raftlogv1.Acquire) dlmv1.ErrorReason {
	if op.GetLock() != DefaultLock {
		if r := CheckLockName(op.GetLock()); r != reasonNone {
			return r
		}
	}
	if r := CheckMode(dlmv1.LockMode(op.GetMode())); r != reasonNone {
		return r
	}
	if op.GetLockDelayMs() > MaxLockDelayMs {
		return dlmv1.ErrorReason_ERROR_REASON_LOCK_DELAY_INVALID
	}
	return reasonNone
}

func (m *Machine) acquire(index uint64, now int64, op *raftlogv1.Acquire) Result {
	s, prior, reason := m.authenticate(op.GetCaller(), raftlogv1.Method_METHOD_ACQUIRE)
	if reason != reasonNone {
		return fail(reason)
	}
	if prior != nil {
		return Result{Outcome: prior}
	}
	seq := op.GetCaller().GetSeq()
	record := func(o *raftlogv1.Outcome) Result { return s.record(index, seq, raftlogv1.Method_METHOD_ACQUIRE, o) }
	if r := checkAcquire(op); r != reasonNone {
		return record(&raftlogv1.Outcome{ErrorReason: uint32(r)})
	}
	name, mode := op.GetLock(), normalMode(dlmv1.LockMode(op.GetMode()))
	l := m.locks[name]
	if l == nil {
		// A new named lock: it becomes live only if the caps allow.
		if max := op.GetMaxLocks(); max > 0 && uint64(len(m.locks)-1) >= max {
			return record(&raftlogv1.Outcome{ErrorReason: uint32(dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_LOCKS)})
		}
	} else {
		if i := l.holderIndex(s.id); i >= 0 {
			h := &l.holders[i]
			if h.mode != mode {
				// No upgrades: two readers upgrading would wait for each other.
				return record(&raftlogv1.Outcome{ErrorReason: uint32(dlmv1.ErrorReason_ERROR_REASON_LOCK_MODE_MISMATCH)})
			}
			// Re-entrant: the session already holds the grant.
			return record(&raftlogv1.Outcome{Granted: true, Token: h.token})
		}
		if p := l.position(s.id); p > 0 {
			w := &l.queue[p-1]
			if w.mode != mode {
				return record(&raftlogv1.Outcome{ErrorReason: uint32(dlmv1.ErrorReason_ERROR_REASON_LOCK_MODE_MISMATCH)})
			}
			// Already waiting under another seq: one place in the queue,
			// and this request learns of the grant with the first. Seqs
			// the client acknowledged have no outcome left to update, so
			// the list stays as small as the session's table.
			w.more = append(slices.DeleteFunc(w.more, func(q uint64) bool { return q < s.ackedBelow }), seq)
			return record(&raftlogv1.Outcome{Queued: true})
		}
	}
	if max := m.limits.MaxLocksPerSession; max > 0 && len(s.named) >= max-1 && m.lockCountOf(s) >= max {
		return record(&raftlogv1.Outcome{ErrorReason: uint32(dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_LOCKS)})
	}
	now0 := l == nil || l.grantable(mode)
	if !now0 && op.GetTry() {
		return record(&raftlogv1.Outcome{})
	}
	if l == nil {
		l = &lock{}
		m.locks[name] = l
	}
	res := record(&raftlogv1.Outcome{Queued: true})
	l.queue = append(l.queue, waiter{clientID: s.id, seq: seq, mode: mode, delayMs: op.GetLockDelayMs()})
	s.join(name)
	if now0 {
		res.Grants = m.grantNext(name, l, index, now, nil)
	}
	return res
}

// lockCountOf is how many locks the session holds or waits for.
func (m *Machine) lockCountOf(s *session) int {
	n := len(s.named)
	if d := m.locks[DefaultLock]; d.holderIndex(s.id) >= 0 || d.position(s.id) > 0 {
		n++
	}
	return n
}

// join and leave keep the session's set of named locks.
func (s *session) join(name string) {
	if name == DefaultLock {
		return
	}
	if s.named == nil {
		s.named = make(map[string]struct{})
	}
	s.named[name] = struct{}{}
}

func (s *session) leave(name string, l *lock) {
	if name == DefaultLock || l.holderIndex(s.id) >= 0 || l.position(s.id) > 0 {
		return
	}
	delete(s.named, name)
}

// grantable says whether a new request in mode would be granted at once:
// nobody waits before it, the lock is not in its delay, and the holders
// allow it.
func (l *lock) grantable(mode dlmv1.LockMode) bool {
	return !l.delayed && len(l.queue) == 0 && l.compatible(mode)
}

// compatible says whether a grant in mode may join the current holders.
func (l *lock) compatible(mode dlmv1.LockMode) bool {
	return len(l.holders) == 0 || (mode == modeShared && l.holders[0].mode == modeShared)
}

// nextToken is the token of the next grant made by the entry at index: the
// index itself for the entry's first grant, then the numbers above the
// highest token so far, so tokens are unique and grow across all locks.
func (m *Machine) nextToken(index uint64) uint64 {
	t := max(index, m.lastToken+1)
	m.lastToken = t
	return t
}

// grantNext grants the head of the queue while it is compatible with the
// holders: one exclusive waiter, or a run of shared ones. The token is the
// index of the entry being applied, so tokens grow across restarts and
// leaders. It appends the grants to gs.
func (m *Machine) grantNext(name string, l *lock, index uint64, now int64, gs []Grant) []Grant {
	if l.delayed {
		return gs
	}
	n := 0
	for n < len(l.queue) && l.compatible(l.queue[n].mode) {
		w := l.queue[n]
		n++
		s := m.sessions[w.clientID]
		token := m.nextToken(index)
		l.holders = append(l.holders, holder{clientID: w.clientID, seq: w.seq, token: token, mode: w.mode, grantedMs: now, delayMs: w.delayMs})
		l.lastToken = token
		s.lastToken = token
		// Every acquire of this lock by the session that still says
		// "queued" now says "granted", so a repeat of any of them learns
		// of the grant.
		s.granted(w.seq, token)
		for _, q := range w.more {
			s.granted(q, token)
		}
		m.remember(Event{Lock: name, Token: token, ClientID: w.clientID, HolderName: s.name, Mode: w.mode, GrantedUnixMs: now})
		gs = append(gs, Grant{ClientID: w.clientID, Seq: w.seq, Token: token, Lock: name, Mode: w.mode})
	}
	switch {
	case n == len(l.queue):
		// An empty queue keeps its array for the next waiter.
		clear(l.queue)
		l.queue = l.queue[:0]
	case n > 0:
		clear(l.queue[:n])
		l.queue = l.queue[n:]
	}
	return gs
}

func (s *session) granted(seq, token uint64) {
	if o := s.outcomes[seq]; o != nil && o.Queued {
		o.Queued, o.Granted, o.Token = false, true, token
	}
}

func (s *session) unqueue(seq uint64) {
	if o := s.outcomes[seq]; o != nil {
		o.Queued = false
	}
}

// holderIndex is the session's place among the holders, or -1.
func (l *lock) holderIndex(id uint64) int {
	for i := range l.holders {
		if l.holders[i].clientID == id {
			return i
		}
	}
	return -1
}

// position is the session's 1-based place in the queue, or 0.
func (l *lock) position(id uint64) int {
	for i := range l.queue {
		if l.queue[i].clientID == id {
			return i + 1
		}
	}
	return 0
}

// leaveQueue takes the session out of the lock's queue; its acquires of the
// lock now answer neither granted nor queued. A waiter that leaves the head
// may let the next ones be granted: the caller calls grantNext.
func (l *lock) leaveQueue(s *session) bool {
	i := l.position(s.id) - 1
	if i < 0 {
		return false
	}
	w := l.queue[i]
	l.queue = append(l.queue[:i:i], l.queue[i+1:]...)
	s.unqueue(w.seq)
	for _, q := range w.more {
		s.unqueue(q)
	}
	return true
}

// endGrant ends the grant holders[i] of the lock: for the default lock's
// exclusive holder, commit turns the staged appends into writes (and the
// outcome counts them), otherwise they are dropped. The grant's history
// event records end at now.
func (m *Machine) endGrant(name string, l *lock, i int, commit bool, end dlmv1.LockEnd, now int64, res *Result) holder {
	h := l.holders[i]
	l.holders = append(l.holders[:i], l.holders[i+1:]...)
	if name == DefaultLock && h.mode == modeExclusive {
		if commit {
			// The staged slice is dropped below, so the result may keep it.
			res.Writes = l.staged
			for _, w := range l.staged {
				m.files[w.File] += int64(len(w.Data))
			}
			res.Outcome = &raftlogv1.Outcome{Appends: uint32(len(l.staged)), Bytes: l.stagedBytes}
		}
		l.staged, l.stagedBytes, l.stagedFile = nil, 0, nil
	}
	m.endEvent(h.token, end, now)
	return h
}

// settle hands the lock on after its holders or queue changed, in the same
// Apply, so hand-off costs no extra round of consensus; a named lock left
// with nothing is forgotten.
func (m *Machine) settle(name string, l *lock, index uint64, now int64, gs []Grant) []Grant {
	gs = m.grantNext(name, l, index, now, gs)
	if name != DefaultLock && len(l.holders) == 0 && len(l.queue) == 0 && !l.delayed {
		delete(m.locks, name)
	}
	return gs
}

// checkToken says whether the session holds the grant of the lock named by
// token (and returns its place), and why not: a token the session held
// before is stale (LOCK_EXPIRED); any other, including one it holds on
// another lock, is NOT_HOLDER.
func (m *Machine) checkToken(name string, l *lock, s *session, token uint64) (int, dlmv1.ErrorReason) {
	if l != nil {
		if i := l.holderIndex(s.id); i >= 0 && l.holders[i].token == token {
			return i, reasonNone
		}
		if mutSkipFencing && token != 0 && len(l.holders) > 0 {
			// The mutation takes any token for a current grant's.
			return max(l.holderIndex(s.id), 0), reasonNone
		}
	}
	if token != 0 && token <= s.lastToken && !m.grantedElsewhere(name, s.id, token) {
		return -1, dlmv1.ErrorReason_ERROR_REASON_LOCK_EXPIRED
	}
	return -1, dlmv1.ErrorReason_ERROR_REASON_NOT_HOLDER
}

// grantedElsewhere says whether token is known to be the session's grant of
// another lock than name: held now, or remembered by the history. A token
// the history forgot counts as this lock's, as before named locks.
func (m *Machine) grantedElsewhere(name string, id, token uint64) bool {
	if e := m.eventOf(token); e != nil {
		return e.Lock != name || e.ClientID != id
	}
	if name != DefaultLock {
		if d := m.locks[DefaultLock]; d.holderIndex(id) >= 0 && d.holders[d.holderIndex(id)].token == token {
			return true
		}
	}
	if s := m.sessions[id]; s != nil {
		for other := range s.named {
			if other == name {
				continue
			}
			l := m.locks[other]
			if i := l.holderIndex(id); i >= 0 && l.holders[i].token == token {
				return true
			}
		}
	}
	return false
}

// Fenced turns a session failure of a call that carries a token into
// LOCK_EXPIRED: once the session is gone, so is every grant it held, and a
// late call from an expired holder learns what it must do (re-acquire).
func Fenced(reason dlmv1.ErrorReason, token uint64) dlmv1.ErrorReason {
	if reason == dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED && token != 0 {
		return dlmv1.ErrorReason_ERROR_REASON_LOCK_EXPIRED
	}
	return reason
}

func (m *Machine) release(index uint64, now int64, op *raftlogv1.Release) Result {
	s, prior, reason := m.authenticate(op.GetCaller(), raftlogv1.Method_METHOD_RELEASE)
	if reason != reasonNone {
		return fail(Fenced(reason, op.GetToken()))
	}
	if prior != nil {
		return Result{Outcome: prior}
	}
	seq := op.GetCaller().GetSeq()
	record := func(o *raftlogv1.Outcome) Result { return s.record(index, seq, raftlogv1.Method_METHOD_RELEASE, o) }
	refuse := func(r dlmv1.ErrorReason) Result { return record(&raftlogv1.Outcome{ErrorReason: uint32(r)}) }
	name := op.GetLock()
	if name != DefaultLock {
		if r := CheckLockName(name); r != reasonNone {
			return refuse(r)
		}
	}
	l := m.locks[name]
	if op.GetToken() == 0 {
		// Give up whatever the session has. A grant the client never learned
		// of has nothing staged worth keeping.
		if l == nil {
			return record(&raftlogv1.Outcome{})
		}
		res := Result{Outcome: &raftlogv1.Outcome{}}
		left := l.leaveQueue(s)
		i := l.holderIndex(s.id)
		if i >= 0 {
			res.EndedToken = m.endGrant(name, l, i, false, dlmv1.LockEnd_LOCK_END_ABORTED, now, &res).token
		}
		if left || i >= 0 {
			res.Grants = m.settle(name, l, index, now, nil)
			s.leave(name, l)
		}
		s.record(index, seq, raftlogv1.Method_METHOD_RELEASE, res.Outcome)
		return res
	}
	i, r := m.checkToken(name, l, s, op.GetToken())
	if r != reasonNone {
		return refuse(r)
	}
	if !op.GetAbort() && len(op.GetWrites()) > 0 {
		switch {
		case name != DefaultLock:
			return refuse(dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_DEFAULT_LOCK)
		case l.holders[i].mode != modeExclusive:
			return refuse(dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_EXCLUSIVE)
		}
		if r := m.stageWrites(l, op.GetWrites(), op.GetMaxSectionBytes(), op.GetMaxFileBytes()); r != reasonNone {
			return refuse(r)
		}
	}
	end := dlmv1.LockEnd_LOCK_END_RELEASED
	if op.GetAbort() {
		end = dlmv1.LockEnd_LOCK_END_ABORTED
	}
	var res Result
	res.EndedToken = m.endGrant(name, l, i, !op.GetAbort(), end, now, &res).token
	if res.Outcome == nil {
		res.Outcome = &raftlogv1.Outcome{}
	}
	res.Grants = m.settle(name, l, index, now, nil)
	s.leave(name, l)
	s.record(index, seq, raftlogv1.Method_METHOD_RELEASE, res.Outcome)
	return res
}

func (m *Machine) endLockDelay(index uint64, now int64, op *raftlogv1.EndLockDelay) Result {
	res := Result{Outcome: &raftlogv1.Outcome{}}
	l := m.locks[op.GetLock()]
	if l == nil || !l.delayed || l.delayToken != op.GetToken() {
		// Ended already, or a later expiry started another delay.
		return res
	}
	l.delayed, l.delayToken, l.delayMs = false, 0, 0
	res.Grants = m.settle(op.GetLock(), l, index, now, nil)
	return res
}

func (m *Machine) closeSession(index uint64, now int64, op *raftlogv1.CloseSession) Result {
	s, prior, reason := m.authenticate(op.GetCaller(), raftlogv1.Method_METHOD_CLOSE)
	if reason != reasonNone {
		return fail(reason)
	}
	if prior != nil {
		return Result{Outcome: prior}
	}
	seq := op.GetCaller().GetSeq()
	if l := m.locks[DefaultLock]; len(op.GetWrites()) > 0 {
		if i := l.holderIndex(s.id); i >= 0 {
			r := reasonNone
			if l.holders[i].mode != modeExclusive {
				r = dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_EXCLUSIVE
			} else {
				r = m.stageWrites(l, op.GetWrites(), op.GetMaxSectionBytes(), op.GetMaxFileBytes())
			}
			if r != reasonNone {
				return s.record(index, seq, raftlogv1.Method_METHOD_CLOSE, &raftlogv1.Outcome{ErrorReason: uint32(r)})
			}
		}
	}
	// Close is an explicit end by the holder, so it commits.
	res := m.endSession(s, true, dlmv1.LockEnd_LOCK_END_CLOSED, index, now)
	o := copyOutcome(res.Outcome)
	o.Method = raftlogv1.Method_METHOD_CLOSE
	s.outcomes[seq] = o
	return res
}

func (m *Machine) expire(index uint64, now int64, op *raftlogv1.ExpireSession) Result {
	s, ok := m.sessions[op.GetClientId()]
	if !ok || s.epoch != op.GetEpoch() {
		// Gone already, or active since the leader decided: nothing to do.
		return Result{Outcome: &raftlogv1.Outcome{}}
	}
	// Expiry is not the holder's decision, so its critical section aborts.
	return m.endSession(s, mutKeepExpired, dlmv1.LockEnd_LOCK_END_EXPIRED, index, now)
}

// endSession ends every grant and wait of the session, lock by lock in name
// order (so every replica hands the locks on alike). Only expiry starts
// lock-delays.
func (m *Machine) endSession(s *session, commit bool, end dlmv1.LockEnd, index uint64, now int64) Result {
	res := Result{Outcome: &raftlogv1.Outcome{}}
	names := make([]string, 0, 1+len(s.named))
	names = append(names, DefaultLock)
	for name := range s.named {
		names = append(names, name)
	}
	slices.Sort(names[1:])
	for _, name := range names {
		l := m.locks[name]
		if l == nil {
			// Only a broken rule (the skip-fencing mutation releases another
			// session's grant) leaves a session naming a lock that is gone;
			// skipping it keeps every replica applying instead of panicking.
			continue
		}
		left := l.leaveQueue(s)
		i := l.holderIndex(s.id)
		if i < 0 && !left {
			continue
		}
		if i >= 0 {
			h := m.endGrant(name, l, i, commit, end, now, &res)
			if name == DefaultLock {
				res.EndedToken = h.token
			}
			if end == dlmv1.LockEnd_LOCK_END_EXPIRED && h.delayMs > 0 {
				// A later expiry's delay starts later, so lasting as long as
				// the longer of the two outlasts both.
				if l.delayed {
					h.delayMs = max(h.delayMs, l.delayMs)
				}
				l.delayed, l.delayToken, l.delayMs = true, h.token, h.delayMs
				res.DelayStarted = append(res.DelayStarted, Delay{Lock: name, Token: h.token, DelayMs: h.delayMs})
			}
		}
		res.Grants = m.settle(name, l, index, now, res.Grants)
	}
	s.named = nil
	delete(m.sessions, s.id)
	m.keepEnded(s)
	res.Ended = []uint64{s.id}
	return res
}
