package lockstate

import (
	"fmt"
	"sort"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"google.golang.org/protobuf/proto"
)

// State returns a copy of the whole state for a snapshot. Staged data is
// shared, not copied: it is never modified once applied.
func (m *Machine) State() *raftlogv1.State {
	st := &raftlogv1.State{AppliedIndex: m.applied, NextClientId: m.nextID}
	for _, info := range m.Sessions() {
		s := m.sessions[info.ClientID]
		ps := &raftlogv1.Session{
			ClientId: s.id, Secret: s.secret, LeaseMs: s.leaseMs, Name: s.name, Epoch: s.epoch,
			AckedBelow: s.ackedBelow, OpenedUnixMs: s.openedMs, LastToken: s.lastToken,
			Outcomes: make(map[uint64]*raftlogv1.Outcome, len(s.outcomes)),
		}
		for q, o := range s.outcomes {
			ps.Outcomes[q] = proto.Clone(o).(*raftlogv1.Outcome)
		}
		st.Sessions = append(st.Sessions, ps)
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

// Restore rebuilds a machine from a snapshot's state.
func Restore(limits Limits, st *raftlogv1.State) (*Machine, error) {
	m := New(limits)
	m.applied, m.nextID = st.GetAppliedIndex(), st.GetNextClientId()
	for _, ps := range st.GetSessions() {
		if ps.GetClientId() == 0 || ps.GetClientId() >= m.nextID {
			return nil, fmt.Errorf("lockstate: snapshot session %d outside 1..%d", ps.GetClientId(), m.nextID-1)
		}
		s := &session{
			id: ps.GetClientId(), secret: ps.GetSecret(), leaseMs: ps.GetLeaseMs(), name: ps.GetName(),
			epoch: ps.GetEpoch(), ackedBelow: ps.GetAckedBelow(), openedMs: ps.GetOpenedUnixMs(),
			lastToken: ps.GetLastToken(), outcomes: make(map[uint64]*raftlogv1.Outcome, len(ps.GetOutcomes())),
		}
		for q, o := range ps.GetOutcomes() {
			s.outcomes[q] = proto.Clone(o).(*raftlogv1.Outcome)
		}
		m.sessions[s.id] = s
	}
	for _, pl := range st.GetLocks() {
		l := &lock{
			holder: pl.GetHolder(), holderSeq: pl.GetHolderSeq(), token: pl.GetToken(),
			lastToken: pl.GetLastToken(), grantedMs: pl.GetGrantedUnixMs(),
		}
		for _, w := range pl.GetStaged() {
			l.staged = append(l.staged, Write{File: w.GetFile(), Data: w.GetData()})
			l.stagedBytes += uint64(len(w.GetData()))
		}
		for _, w := range pl.GetQueue() {
			l.queue = append(l.queue, waiter{clientID: w.GetClientId(), seq: w.GetSeq()})
		}
		m.locks[pl.GetName()] = l
	}
	for _, f := range st.GetFiles() {
		if _, ok := m.files[f.GetName()]; !ok {
			return nil, fmt.Errorf("lockstate: snapshot names unknown file %q", f.GetName())
		}
		m.files[f.GetName()] = f.GetSize()
	}
	return m, nil
}
