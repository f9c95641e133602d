package lockstate_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// busy returns a machine with every kind of state: committed files, a holder
// with a staged section, a queue, recorded and pruned outcomes, closed and
// expired sessions. It was built by indexes 1..16.
func busy(t testing.TB) *lockstate.Machine {
	t.Helper()
	var h history
	return h.run(t, lockstate.New(lockstate.DefaultLimits()),
		openCmd(1), openCmd(2), openCmd(3), openCmd(4), openCmd(5),
		acquireCmd(c(1, 1)), // 6: granted
		appendCmd(c(1, 2), 6, "file_0", "committed\n"),
		releaseCmd(c(1, 3), 6),
		acquireCmd(c(2, 1)), // 9: granted
		acquireCmd(c(4, 1)), // queued
		acquireCmd(c(1, 4)), // queued
		appendCmd(cAck(2, 2, 2), 9, "file_1", "staged-1"),
		appendCmd(c(2, 3), 9, "file_2", "staged-2"),
		closeCmd(c(3, 1)),
		expireCmd(5, 5),
		acquireCmd(c(4, 2)), // still queued, once
	)
}

// continuation drives a machine on from busy's state. An expiry reads the
// session's epoch from the machine it is about to be applied to, as the
// leader would; the other commands are fixed.
func continuation() []func(*lockstate.Machine) *raftlogv1.Command {
	fixed := func(cmd *raftlogv1.Command) func(*lockstate.Machine) *raftlogv1.Command {
		return func(*lockstate.Machine) *raftlogv1.Command { return cmd }
	}
	expireAt := func(id uint64, delta int) func(*lockstate.Machine) *raftlogv1.Command {
		return func(m *lockstate.Machine) *raftlogv1.Command {
			s, _ := m.Session(id)
			return expireCmd(id, uint64(int(s.Epoch)+delta))
		}
	}
	return []func(*lockstate.Machine) *raftlogv1.Command{
		fixed(acquireCmd(c(4, 1))),                                  // repeat: queued
		fixed(appendCmd(c(2, 3), 9, "file_2", "staged-2")),          // repeat: not staged again
		fixed(appendCmd(c(2, 4), 9, "file_1", "more")),              // staged
		fixed(releaseCmd(c(2, 5), 9)),                               // commits, grants 4
		fixed(acquireCmd(c(4, 1))),                                  // repeat: learns the grant
		fixed(appendCmd(c(1, 5), 6, "file_0", "stale")),             // stale token
		fixed(appendCmd(c(2, 1), 9, "file_0", "acked")),             // acknowledged
		expireAt(1, -1),                                             // outdated: ignored
		expireAt(1, 0),                                              // current: ends waiter 1
		fixed(appendCmd(c(4, 3), 0, "file_3", "x")),                 // no token
		fixed(closeCmd(c(4, 4))),                                    // frees the lock
		fixed(acquireCmd(c(3, 2))),                                  // closed session
		fixed(&raftlogv1.Command{}),                                 // junk
		fixed(openCmd(6)),                                           // id 6
		fixed(acquireCmd(c(6, 1))),                                  // granted at once
		fixed(appendMax(c(6, 2), 0, "file_9", "abc", 1)),            // no token
		fixed(releaseCmd(c(2, 6), 0)),                               // nothing to give up
		fixed(acquireCmd(c(2, 7))),                                  // queued behind 6
		fixed(releaseCmd(c(6, 3), 0)),                               // drops its grant, 2 gets it
		fixed(appendCmd(cAck(2, 8, 8), 0, "file_0", "wrong token")), // prunes 2's table
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	orig := busy(t)
	st := orig.State()
	// Through the wire form, as the FSM persists it.
	wire, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	decoded := &raftlogv1.State{}
	if err := proto.Unmarshal(wire, decoded); err != nil {
		t.Fatal(err)
	}
	restored, err := lockstate.Restore(lockstate.DefaultLimits(), decoded)
	if err != nil {
		t.Fatal(err)
	}
	if got := restored.State(); !proto.Equal(got, st) {
		t.Fatalf("restored state differs:\n got %v\nwant %v", got, st)
	}
	if restored.AppliedIndex() != 16 {
		t.Errorf("restored applied index %d", restored.AppliedIndex())
	}

	var inv invariants
	inv.lastToken = orig.Lock().LastToken
	for _, name := range orig.FileNames() {
		if inv.sizes == nil {
			inv.sizes = make(map[string]int64)
		}
		inv.sizes[name] = orig.FileSize(name)
	}
	inv.index = orig.AppliedIndex()
	idx := orig.AppliedIndex()
	kinds := make(map[string]bool)
	for i, next := range continuation() {
		// Leave a gap now and then, as Raft's own entries do.
		idx += 1 + uint64(i%3/2)
		cmd, cmdB := next(orig), next(restored)
		if !proto.Equal(cmd, cmdB) {
			t.Fatalf("index %d: the machines lead to different commands %v and %v", idx, cmd, cmdB)
		}
		cmd.NowUnixMs = int64(idx) * 1000
		a, b := orig.Apply(idx, cmd), restored.Apply(idx, cmd)
		if d := diffResult(b, a); d != "" {
			t.Fatalf("index %d (%s): restored machine: %s", idx, cmdName(cmd), d)
		}
		if sa, sb := orig.State(), restored.State(); !proto.Equal(sa, sb) {
			t.Fatalf("index %d (%s): states differ:\noriginal %v\nrestored %v", idx, cmdName(cmd), sa, sb)
		}
		inv.check(t, restored, idx, b)
		kinds[b.Reason().String()] = true
		if len(b.Grants) > 0 {
			kinds["grant"] = true
		}
		if len(b.Writes) > 0 {
			kinds["write"] = true
		}
		if len(b.Ended) > 0 {
			kinds["ended"] = true
		}
	}
	// The continuation must have exercised what the snapshot carries.
	for _, k := range []string{"grant", "write", "ended", "ERROR_REASON_UNSPECIFIED", "ERROR_REASON_LOCK_EXPIRED",
		"ERROR_REASON_SEQUENCE_ACKNOWLEDGED", "ERROR_REASON_NOT_HOLDER", "ERROR_REASON_SESSION_EXPIRED", "ERROR_REASON_INVALID_ARGUMENT"} {
		if !kinds[k] {
			t.Errorf("continuation never produced %s", k)
		}
	}
	if lv := restored.Lock(); lv.Holder != 2 || restored.FileSize("file_1") != int64(len("staged-1more")) {
		t.Errorf("final holder %d, file_1 %d bytes", lv.Holder, restored.FileSize("file_1"))
	}
}

func TestSnapshotOfNewMachine(t *testing.T) {
	fresh := lockstate.New(lockstate.DefaultLimits())
	m, err := lockstate.Restore(lockstate.DefaultLimits(), fresh.State())
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m.State(), fresh.State()) {
		t.Errorf("restored %v, want %v", m.State(), fresh.State())
	}
	if r := m.Apply(1, openCmd(1)); r.ClientID != 1 {
		t.Errorf("first session after restore got id %d", r.ClientID)
	}
}

// TestStateIsACopy checks that neither State nor Restore shares mutable
// state with its argument or result.
func TestStateIsACopy(t *testing.T) {
	m := busy(t)
	want := m.State()
	st := m.State()
	st.Sessions[0].Outcomes[4].Queued = false
	st.Sessions[0].Secret = "changed"
	st.Locks[0].Queue = nil
	st.Files[0].Size = 0
	if !proto.Equal(m.State(), want) {
		t.Error("changing State's result changed the machine")
	}

	st = m.State()
	r, err := lockstate.Restore(lockstate.DefaultLimits(), st)
	if err != nil {
		t.Fatal(err)
	}
	st.Sessions[0].Outcomes[4].Queued = false
	st.Locks[0].Holders[0].ClientId = 0
	st.Locks[0].Queue[0].MoreSeqs[0] = 7
	st.History[0].Token = 0
	if !proto.Equal(r.State(), want) {
		t.Error("changing Restore's argument changed the machine")
	}
}

func TestRestoreRefusesBrokenState(t *testing.T) {
	good := busy(t).State()
	// busy: sessions 1, 2, 4 open; 3 closed, 5 expired; 2 holds with
	// token 9; 4 then 1 wait.
	for _, tc := range []struct {
		name   string
		limits lockstate.Limits
		breakS func(st *raftlogv1.State)
	}{
		{"next client id 0", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.NextClientId = 0 }},
		{"empty state", lockstate.DefaultLimits(), func(st *raftlogv1.State) { proto.Reset(st) }},
		{"session 0", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Sessions[0].ClientId = 0 }},
		{"session beyond next id", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Sessions[0].ClientId = 6 }},
		{"session twice", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Sessions[1].ClientId = 1 }},
		{"lock twice", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks = append(st.Locks, st.Locks[0]) }},
		{"holder closed", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Holders[0].ClientId = 3 }},
		{"held without token", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Holders[0].Token = 0 }},
		{"token above the lock's last", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Holders[0].Token = 10 }},
		{"free with a queue", lockstate.DefaultLimits(), func(st *raftlogv1.State) {
			st.Locks[0].Holders, st.Locks[0].Staged = nil, nil
		}},
		{"free with a section", lockstate.DefaultLimits(), func(st *raftlogv1.State) {
			st.Locks[0].Holders, st.Locks[0].Queue = nil, nil
		}},
		{"a delay token without a delay", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].DelayToken = 9 }},
		{"a holder in both forms", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Holder, st.Locks[0].Token = 2, 9 }},
		{"unknown holder mode", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Holders[0].Mode = 7 }},
		{"unknown waiter mode", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Queue[0].Mode = 7 }},
		{"two exclusive holders", lockstate.DefaultLimits(), func(st *raftlogv1.State) {
			st.Locks[0].Holders = append(st.Locks[0].Holders, &raftlogv1.Holder{ClientId: 4, Seq: 1, Token: 9, Mode: 1})
			st.Locks[0].Holders[0].Token, st.Locks[0].Queue = 8, st.Locks[0].Queue[1:]
		}},
		{"shared holders with a section", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Holders[0].Mode = 2 }},
		{"shared waiter at the head behind shared holders", lockstate.DefaultLimits(), func(st *raftlogv1.State) {
			st.Locks[0].Holders[0].Mode, st.Locks[0].Staged, st.Locks[0].Queue[0].Mode = 2, nil, 2
		}},
		{"named lock with nothing", lockstate.DefaultLimits(), func(st *raftlogv1.State) {
			st.Locks = append(st.Locks, &raftlogv1.Lock{Name: "left", LastToken: 3})
		}},
		{"named lock with a bad name", lockstate.DefaultLimits(), func(st *raftlogv1.State) {
			st.Locks = append(st.Locks, &raftlogv1.Lock{Name: "a\nb", Delayed: true, DelayToken: 3, DelayMs: 5})
		}},
		{"history out of order", lockstate.DefaultLimits(), func(st *raftlogv1.State) {
			st.History[0], st.History[1] = st.History[1], st.History[0]
		}},
		{"history above the last token", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.History[1].Token = 99 }},
		{"waiter closed", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Queue[0].ClientId = 5 }},
		{"waiter twice", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Queue[1].ClientId = 4 }},
		{"holder waits", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Queue[1].ClientId = 2 }},
		{"staged path", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Staged[0].File = "../x" }},
		{"staged unknown file", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Locks[0].Staged[0].File = "file_100" }},
		{"unknown file", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Files[0].Name = "file_100" }},
		{"negative size", lockstate.DefaultLimits(), func(st *raftlogv1.State) { st.Files[0].Size = -1 }},
		{"fewer files configured", lockstate.Limits{Files: 10, MaxOutstanding: 1024}, func(*raftlogv1.State) {}},
	} {
		st := proto.Clone(good).(*raftlogv1.State)
		tc.breakS(st)
		if m, err := lockstate.Restore(tc.limits, st); err == nil {
			t.Errorf("%s: Restore accepted %v as %v", tc.name, st, m.State())
		}
	}
	if _, err := lockstate.Restore(lockstate.DefaultLimits(), good); err != nil {
		t.Errorf("the good state: %v", err)
	}
}
