package lockstate

import (
	"errors"
	"fmt"
	"sort"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// State returns a copy of the whole state for a snapshot. Staged data is
// shared, not copied: it is never modified once applied.
func (m *Machine) State() *raftlogv1.State {
	st := &raftlogv1.State{AppliedIndex: m.applied, NextClientId: m.nextID}
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
			Name: name, Holder: l.holder, HolderSeq: l.holderSeq, Token: l.token,
			LastToken: l.lastToken, GrantedUnixMs: l.grantedMs,
		}
		for _, w := range l.staged {
			pl.Staged = append(pl.Staged, &raftlogv1.StagedAppend{File: w.File, Data: w.Data})
		}
		for _, w := range l.queue {
			pl.Queue = append(pl.Queue, &raftlogv1.Waiter{ClientId: w.clientID, Seq: w.seq})
		}
		st.Locks = append(st.Locks, pl)
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
		l := &lock{
			holder: pl.GetHolder(), holderSeq: pl.GetHolderSeq(), token: pl.GetToken(),
			lastToken: pl.GetLastToken(), grantedMs: pl.GetGrantedUnixMs(),
		}
		for _, w := range pl.GetStaged() {
			if r := m.CheckFile(w.GetFile()); r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
				return nil, fmt.Errorf("lockstate: snapshot lock %q stages an append to %q: %s", pl.GetName(), w.GetFile(), r)
			}
			l.stage(Write{File: w.GetFile(), Data: w.GetData()})
		}
		for _, w := range pl.GetQueue() {
			l.queue = append(l.queue, waiter{clientID: w.GetClientId(), seq: w.GetSeq()})
		}
		if err := m.checkLock(l); err != nil {
			return nil, fmt.Errorf("lockstate: snapshot lock %q: %w", pl.GetName(), err)
		}
		m.locks[pl.GetName()] = l
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

// checkLock checks what Apply relies on: a free lock has no grant, no
// section and no queue; a holder and every waiter have a session, and each
// appears once.
func (m *Machine) checkLock(l *lock) error {
	if l.holder == 0 {
		if l.token != 0 || len(l.staged) != 0 || len(l.queue) != 0 {
			return fmt.Errorf("free, with token %d, %d staged, %d waiting", l.token, len(l.staged), len(l.queue))
		}
		return nil
	}
	if _, ok := m.sessions[l.holder]; !ok || l.token == 0 {
		return fmt.Errorf("held by session %d (open: %t) with token %d", l.holder, ok, l.token)
	}
	seen := map[uint64]bool{l.holder: true}
	for _, w := range l.queue {
		if _, ok := m.sessions[w.clientID]; !ok || seen[w.clientID] {
			return fmt.Errorf("waiter %d is closed or waits twice", w.clientID)
		}
		seen[w.clientID] = true
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
