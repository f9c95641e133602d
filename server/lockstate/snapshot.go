package lockstate

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// State returns a copy of the whole state for a snapshot. Staged data is
// shared, not copied: it is never modified once applied.
func (m *Machine) State() *raftlogv1.State {
	st := &raftlogv1.State{AppliedIndex: m.applied, NextClientId: m.nextID, LastToken: m.lastToken}
	for _, info := range m.Sessions() {
		st.Sessions = append(st.Sessions, m.sessions[info.ClientID].toProto())
	}
	for _, id := range m.endedOrder {
		st.EndedSessions = append(st.EndedSessions, m.ended[id].toProto())
	}
	names := make([]string, 0, len(m.locks))
	for name := range m.locks {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		l := m.locks[name]
		pl := &raftlogv1.Lock{
			Name: name, LastToken: l.lastToken, Delayed: l.delayed, DelayToken: l.delayToken, DelayMs: l.delayMs,
		}
		for _, h := range l.holders {
			pl.Holders = append(pl.Holders, &raftlogv1.Holder{
				ClientId: h.clientID, Seq: h.seq, Token: h.token, Mode: uint32(h.mode),
				GrantedUnixMs: h.grantedMs, LockDelayMs: h.delayMs,
			})
		}
		for _, w := range l.staged {
			pl.Staged = append(pl.Staged, &raftlogv1.StagedAppend{File: w.File, Data: w.Data})
		}
		for _, w := range l.queue {
			pl.Queue = append(pl.Queue, &raftlogv1.Waiter{
				ClientId: w.clientID, Seq: w.seq, Mode: uint32(w.mode), LockDelayMs: w.delayMs, MoreSeqs: slices.Clone(w.more),
			})
		}
		st.Locks = append(st.Locks, pl)
	}
	for i := range m.history {
		e := m.event(i)
		st.History = append(st.History, &raftlogv1.GrantEvent{
			Lock: e.Lock, Token: e.Token, ClientId: e.ClientID, HolderName: e.HolderName, Mode: uint32(e.Mode),
			GrantedUnixMs: e.GrantedUnixMs, EndedUnixMs: e.EndedUnixMs, End: uint32(e.End),
		})
	}
	for _, name := range m.FileNames() {
		st.Files = append(st.Files, &raftlogv1.FileLength{Name: name, Size: m.files[name]})
	}
	return st
}

// Restore rebuilds a machine from a snapshot's state. It refuses a state
// that breaks the machine's invariants (a holder or waiter without a session,
// a staged append to no file, …) rather than fail later inside an Apply.
func Restore(limits Limits, st *raftlogv1.State) (*Machine, error) {
	m := New(limits)
	m.applied, m.nextID = st.GetAppliedIndex(), st.GetNextClientId()
	if m.nextID == 0 {
		// Session ids start at 1: 0 means "no holder".
		return nil, errors.New("lockstate: snapshot has next client id 0")
	}
	for _, ps := range st.GetSessions() {
		if ps.GetClientId() == 0 || ps.GetClientId() >= m.nextID {
			return nil, fmt.Errorf("lockstate: snapshot session %d outside 1..%d", ps.GetClientId(), m.nextID-1)
		}
		if _, dup := m.sessions[ps.GetClientId()]; dup {
			return nil, fmt.Errorf("lockstate: snapshot session %d twice", ps.GetClientId())
		}
		m.sessions[ps.GetClientId()] = sessionFromProto(ps)
	}
	for _, ps := range st.GetEndedSessions() {
		id := ps.GetClientId()
		if _, open := m.sessions[id]; open || m.ended[id] != nil || id == 0 || id >= m.nextID {
			return nil, fmt.Errorf("lockstate: snapshot ended session %d is open, repeated or out of range", id)
		}
		m.keepEnded(sessionFromProto(ps))
	}
	restored := make(map[string]bool)
	for _, pl := range st.GetLocks() {
		if restored[pl.GetName()] {
			return nil, fmt.Errorf("lockstate: snapshot lock %q twice", pl.GetName())
		}
		restored[pl.GetName()] = true
		l, err := m.lockFromProto(pl)
		if err != nil {
			return nil, fmt.Errorf("lockstate: snapshot lock %q: %w", pl.GetName(), err)
		}
		m.locks[pl.GetName()] = l
	}
	if err := m.restoreHistory(st); err != nil {
		return nil, err
	}
	for _, f := range st.GetFiles() {
		if _, ok := m.files[f.GetName()]; !ok {
			return nil, fmt.Errorf("lockstate: snapshot names unknown file %q", f.GetName())
		}
		if f.GetSize() < 0 {
			return nil, fmt.Errorf("lockstate: snapshot gives %s %d bytes", f.GetName(), f.GetSize())
		}
		m.files[f.GetName()] = f.GetSize()
	}
	return m, nil
}

// lockFromProto rebuilds one lock. A snapshot written before shared locks
// names its one exclusive holder in the lock's own fields and has no
// holders; every queued acquire of a waiter then belongs to that lock.
func (m *Machine) lockFromProto(pl *raftlogv1.Lock) (*lock, error) {
	name := pl.GetName()
	if name != DefaultLock {
		if r := CheckLockName(name); r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			return nil, fmt.Errorf("bad name: %s", r)
		}
	}
	l := &lock{lastToken: pl.GetLastToken(), delayed: pl.GetDelayed(), delayToken: pl.GetDelayToken(), delayMs: pl.GetDelayMs()}
	old := len(pl.GetHolders()) == 0 && pl.GetHolder() != 0
	switch {
	case old:
		l.holders = []holder{{clientID: pl.GetHolder(), seq: pl.GetHolderSeq(), token: pl.GetToken(), mode: modeExclusive, grantedMs: pl.GetGrantedUnixMs()}}
	case pl.GetHolder() != 0 || pl.GetHolderSeq() != 0 || pl.GetToken() != 0 || pl.GetGrantedUnixMs() != 0:
		return nil, errors.New("names a holder both in its own fields and in holders")
	}
	for _, h := range pl.GetHolders() {
		mode, err := snapshotMode(h.GetMode())
		if err != nil {
			return nil, err
		}
		l.holders = append(l.holders, holder{
			clientID: h.GetClientId(), seq: h.GetSeq(), token: h.GetToken(), mode: mode,
			grantedMs: h.GetGrantedUnixMs(), delayMs: h.GetLockDelayMs(),
		})
	}
	for _, w := range pl.GetStaged() {
		if r := m.CheckFile(w.GetFile()); r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			return nil, fmt.Errorf("stages an append to %q: %s", w.GetFile(), r)
		}
		l.stage(Write{File: w.GetFile(), Data: w.GetData()})
	}
	for _, pw := range pl.GetQueue() {
		mode, err := snapshotMode(pw.GetMode())
		if err != nil {
			return nil, err
		}
		w := waiter{clientID: pw.GetClientId(), seq: pw.GetSeq(), more: slices.Clone(pw.GetMoreSeqs()), mode: mode, delayMs: pw.GetLockDelayMs()}
		if s := m.sessions[w.clientID]; old && s != nil {
			for q, o := range s.outcomes {
				if o.GetQueued() && q != w.seq {
					w.more = append(w.more, q)
				}
			}
			slices.Sort(w.more)
		}
		l.queue = append(l.queue, w)
	}
	if err := m.checkLock(name, l); err != nil {
		return nil, err
	}
	for _, h := range l.holders {
		m.sessions[h.clientID].join(name)
	}
	for _, w := range l.queue {
		m.sessions[w.clientID].join(name)
	}
	return l, nil
}

// snapshotMode is a mode as snapshots write it: unspecified is exclusive.
func snapshotMode(mode uint32) (dlmv1.LockMode, error) {
	if r := CheckMode(dlmv1.LockMode(mode)); r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return 0, fmt.Errorf("mode %d", mode)
	}
	return normalMode(dlmv1.LockMode(mode)), nil
}

// checkLock checks what Apply relies on: holders are one exclusive grant or
// shared ones, with growing tokens; only the default lock's exclusive holder
// has a section; a lock neither held nor in its delay has no queue, and no
// head that its holders would admit; a named lock is live; every holder and
// waiter has a session, and each appears once.
func (m *Machine) checkLock(name string, l *lock) error {
	seen := make(map[uint64]bool)
	var prev uint64
	for _, h := range l.holders {
		if _, ok := m.sessions[h.clientID]; !ok || seen[h.clientID] || h.token <= prev || h.token > l.lastToken {
			return fmt.Errorf("holder %d (token %d, last %d) is closed, holds twice or out of token order", h.clientID, h.token, l.lastToken)
		}
		seen[h.clientID], prev = true, h.token
		if h.mode != l.holders[0].mode || (h.mode == modeExclusive && len(l.holders) > 1) {
			return fmt.Errorf("%d holders of mixed or exclusive modes", len(l.holders))
		}
	}
	if len(l.staged) > 0 && (name != DefaultLock || len(l.holders) == 0 || l.holders[0].mode != modeExclusive) {
		return fmt.Errorf("%d staged without an exclusive holder of the default lock", len(l.staged))
	}
	if !l.delayed && (l.delayToken != 0 || l.delayMs != 0) {
		return errors.New("a delay token without a delay")
	}
	if !l.delayed && len(l.queue) > 0 && l.compatible(l.queue[0].mode) {
		return fmt.Errorf("waiter %d could be granted", l.queue[0].clientID)
	}
	if name != DefaultLock && len(l.holders) == 0 && len(l.queue) == 0 && !l.delayed {
		return errors.New("named lock left behind with nothing")
	}
	for _, w := range l.queue {
		if _, ok := m.sessions[w.clientID]; !ok || seen[w.clientID] {
			return fmt.Errorf("waiter %d is closed or waits twice", w.clientID)
		}
		seen[w.clientID] = true
	}
	return nil
}

// restoreHistory rebuilds the grant ring (the newest HistoryCapacity, in
// token order) and the highest token, which a snapshot from before shared
// locks lacks: there it is the highest token any lock or session names.
func (m *Machine) restoreHistory(st *raftlogv1.State) error {
	events := st.GetHistory()
	if len(events) > HistoryCapacity {
		events = events[len(events)-HistoryCapacity:]
	}
	m.history = make([]Event, 0, len(events))
	for _, e := range events {
		mode, err := snapshotMode(e.GetMode())
		if err != nil {
			return fmt.Errorf("lockstate: snapshot history: %w", err)
		}
		if n := len(m.history); n > 0 && e.GetToken() <= m.history[n-1].Token {
			return fmt.Errorf("lockstate: snapshot history token %d after %d", e.GetToken(), m.history[n-1].Token)
		}
		m.history = append(m.history, Event{
			Lock: e.GetLock(), Token: e.GetToken(), ClientID: e.GetClientId(), HolderName: e.GetHolderName(), Mode: mode,
			GrantedUnixMs: e.GetGrantedUnixMs(), EndedUnixMs: e.GetEndedUnixMs(), End: dlmv1.LockEnd(e.GetEnd()),
		})
	}
	m.lastToken = st.GetLastToken()
	for _, l := range m.locks {
		m.lastToken = max(m.lastToken, l.lastToken)
	}
	for _, s := range m.sessions {
		m.lastToken = max(m.lastToken, s.lastToken)
	}
	if n := len(m.history); n > 0 && m.history[n-1].Token > m.lastToken {
		return fmt.Errorf("lockstate: snapshot history token %d above the last token %d", m.history[n-1].Token, m.lastToken)
	}
	return nil
}

func (s *session) toProto() *raftlogv1.Session {
	ps := &raftlogv1.Session{
		ClientId: s.id, Secret: s.secret, LeaseMs: s.leaseMs, Name: s.name, Epoch: s.epoch,
		AckedBelow: s.ackedBelow, OpenedUnixMs: s.openedMs, LastToken: s.lastToken,
		Outcomes: make(map[uint64]*raftlogv1.Outcome, len(s.outcomes)),
	}
	for q, o := range s.outcomes {
		ps.Outcomes[q] = copyOutcome(o)
	}
	return ps
}

func sessionFromProto(ps *raftlogv1.Session) *session {
	s := &session{
		id: ps.GetClientId(), secret: ps.GetSecret(), leaseMs: ps.GetLeaseMs(), name: ps.GetName(),
		epoch: ps.GetEpoch(), ackedBelow: ps.GetAckedBelow(), openedMs: ps.GetOpenedUnixMs(),
		lastToken: ps.GetLastToken(), outcomes: make(map[uint64]*raftlogv1.Outcome, len(ps.GetOutcomes())),
	}
	for q, o := range ps.GetOutcomes() {
		s.outcomes[q] = copyOutcome(o)
		if s.outcomes[q] == nil {
			s.outcomes[q] = &raftlogv1.Outcome{}
		}
	}
	return s
}
