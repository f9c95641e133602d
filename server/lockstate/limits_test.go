package lockstate_test

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// capped is acquireOn with the leader's cap on live locks.
func capped(cmd *raftlogv1.Command, maxLocks uint64) *raftlogv1.Command {
	cmd.GetAcquire().MaxLocks = maxLocks
	return cmd
}

func TestLockCaps(t *testing.T) {
	limits := lockstate.DefaultLimits()
	limits.MaxLocksPerSession = 2
	if lockstate.DefaultLimits().MaxLocksPerSession != 256 {
		t.Errorf("default per-session cap %d", lockstate.DefaultLimits().MaxLocksPerSession)
	}
	runScripts(t, []script{{
		name:   "a session holds and waits for at most its cap of locks",
		limits: limits,
		steps: then(opens(3),
			step{idx: 4, now: 4000, cmd: acquireOn(c(1, 1), "a", exclusive), want: grantedOn("a", exclusive, 1, 1, 4)},
			step{idx: 5, now: 5000, cmd: acquireCmd(c(1, 2)), want: grantedNow(1, 2, 5)},
			step{idx: 6, now: 6000, cmd: acquireOn(c(1, 3), "b", shared), want: fails(rTooManyLocks), effect: recordOnly},
			step{idx: 7, now: 7000, cmd: tryOn(c(1, 4), "b", shared), want: fails(rTooManyLocks), effect: recordOnly},
			// Asking again for a lock it has is not a new one.
			step{idx: 8, now: 8000, cmd: acquireOn(c(1, 5), "a", exclusive), want: granted(4), effect: recordOnly},
			// Waits count too: session 2 waits for a, holds b.
			step{idx: 9, now: 9000, cmd: acquireOn(c(2, 1), "a", exclusive), want: queued()},
			step{idx: 10, now: 10_000, cmd: acquireOn(c(2, 2), "b", exclusive), want: grantedOn("b", exclusive, 2, 2, 10)},
			step{idx: 11, now: 11_000, cmd: acquireCmd(c(2, 3)), want: fails(rTooManyLocks), effect: recordOnly},
			// Giving one up makes room.
			step{idx: 12, now: 12_000, cmd: releaseCmd(c(1, 6), 5), want: ok()},
			step{idx: 13, now: 13_000, cmd: acquireOn(c(1, 7), "b", exclusive), want: queued()},
		),
	}, {
		name: "live named locks are capped by the leader's limit",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: capped(acquireOn(c(1, 1), "a", shared), 2), want: grantedOn("a", shared, 1, 1, 3)},
			step{idx: 4, now: 4000, cmd: capped(acquireOn(c(1, 2), "b", shared), 2), want: grantedOn("b", shared, 1, 2, 4)},
			step{idx: 5, now: 5000, cmd: capped(acquireOn(c(1, 3), "c", shared), 2), want: fails(rTooManyLocks), effect: recordOnly},
			// The default lock is not a named one, and a live lock is no new one.
			step{idx: 6, now: 6000, cmd: capped(acquireCmd(c(2, 1)), 2), want: grantedNow(2, 1, 6)},
			step{idx: 7, now: 7000, cmd: capped(acquireOn(c(2, 2), "a", shared), 2), want: grantedOn("a", shared, 2, 2, 7)},
			step{idx: 8, now: 8000, cmd: capped(acquireOn(c(2, 3), "c", shared), 0), want: grantedOn("c", shared, 2, 3, 8), check: lockCountIs(4)},
		),
	}})
}

func TestCloseAndExpireEndEveryLock(t *testing.T) {
	// Session 1 holds the default lock (with a section), a and s (shared),
	// and waits for b; session 2 holds b and waits for the default lock and
	// a; session 3 shares s.
	setup := then(opens(3),
		step{idx: 4, now: 4000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 4)},
		step{idx: 5, now: 5000, cmd: appendCmd(c(1, 2), 4, "file_0", "one"), want: staged(1, 3)},
		step{idx: 6, now: 6000, cmd: acquireOn(c(1, 3), "a", exclusive), want: grantedOn("a", exclusive, 1, 3, 6)},
		step{idx: 7, now: 7000, cmd: delayedOn(c(1, 4), "s", shared, 100), want: grantedOn("s", shared, 1, 4, 7)},
		step{idx: 8, now: 8000, cmd: acquireOn(c(2, 1), "b", exclusive), want: grantedOn("b", exclusive, 2, 1, 8)},
		step{idx: 9, now: 9000, cmd: acquireOn(c(1, 5), "b", exclusive), want: queued()},
		step{idx: 10, now: 10_000, cmd: acquireCmd(c(2, 2)), want: queued()},
		step{idx: 11, now: 11_000, cmd: acquireOn(c(2, 3), "a", exclusive), want: queued()},
		step{idx: 12, now: 12_000, cmd: acquireOn(c(3, 1), "s", shared), want: grantedOn("s", shared, 3, 1, 12),
			check: all(heldAre(1, lockstate.HeldLock{Lock: "", Token: 4, Mode: exclusive}, lockstate.HeldLock{Lock: "a", Token: 6, Mode: exclusive},
				lockstate.HeldLock{Lock: "s", Token: 7, Mode: shared}), lockCountIs(4))},
	)
	runScripts(t, []script{{
		name: "close commits the default lock's section, releases every lock in name order and leaves every queue",
		steps: then(setup,
			step{idx: 13, now: 13_000, cmd: closeCmd(c(1, 6)),
				want: with(committed(1, 3, w("file_0", "one")), ended(1), grant(2, 2, 13), grantOn("a", exclusive, 2, 3, 14)),
				check: all(sizesAre("file_0", 3), holdersAre("b", []lockstate.HolderView{hv(2, 8, exclusive)}),
					holdersAre("s", []lockstate.HolderView{hv(3, 12, shared)}), delaysAre(),
					heldAre(2, lockstate.HeldLock{Lock: "", Token: 13, Mode: exclusive}, lockstate.HeldLock{Lock: "a", Token: 14, Mode: exclusive},
						lockstate.HeldLock{Lock: "b", Token: 8, Mode: exclusive}))},
		),
	}, {
		name: "expiry aborts the section, ends every grant and starts the delays its grants carry",
		steps: then(setup,
			step{idx: 13, now: 13_000, cmd: expireCmd(1, 12-3),
				want: with(ok(), ended(1), grant(2, 2, 13), grantOn("a", exclusive, 2, 3, 14), delayStarted(lockstate.Delay{Lock: "s", Token: 7, DelayMs: 100})),
				check: all(sizesAre(), stagedIs(0, 0), delaysAre(lockstate.Delay{Lock: "s", Token: 7, DelayMs: 100}),
					holdersAre("s", []lockstate.HolderView{hv(3, 12, shared)}), heldAre(1))},
			step{idx: 14, now: 14_000, cmd: expireCmd(2, 11), want: with(ok(), ended(2)), check: all(lockCountIs(2), lockIs(0, 0))},
		),
		check: func(t *testing.T, m *lockstate.Machine) {
			var ends []string
			for _, e := range m.History(nil, 0) {
				ends = append(ends, fmt.Sprintf("%s/%d/%s", e.Lock, e.Token, e.End))
			}
			want := []string{"/4/LOCK_END_EXPIRED", "a/6/LOCK_END_EXPIRED", "s/7/LOCK_END_EXPIRED", "b/8/LOCK_END_EXPIRED",
				"s/12/LOCK_END_UNSPECIFIED", "/13/LOCK_END_EXPIRED", "a/14/LOCK_END_EXPIRED"}
			if !slices.Equal(ends, want) {
				t.Errorf("history %v, want %v", ends, want)
			}
		},
	}})
}

func TestHistory(t *testing.T) {
	var h history
	m := h.run(t, lockstate.New(lockstate.DefaultLimits()),
		openCmd(1), openCmd(2), openCmd(3), openCmd(4), // 1-4
		acquireOn(c(1, 1), "a", shared), // 5
		releaseOn(c(1, 2), "a", 5),      // 6: released
		acquireCmd(c(2, 1)),             // 7
		abortCmd(c(2, 2), 7),            // 8: aborted
		acquireCmd(c(3, 1)),             // 9
		releaseCmd(c(3, 2), 0),          // 10: given up, aborted
		acquireOn(c(3, 3), "b", shared), // 11
		closeCmd(c(3, 4)),               // 12: closed
		acquireOn(c(4, 1), "a", shared), // 13
		acquireOn(c(2, 3), "a", shared), // 14
		expireCmd(4, 13),                // 15: expired
	)
	want := []lockstate.Event{
		{Lock: "a", Token: 5, ClientID: 1, HolderName: "client-1", Mode: shared, GrantedUnixMs: 5000, EndedUnixMs: 6000, End: endReleased},
		{Lock: "", Token: 7, ClientID: 2, HolderName: "client-2", Mode: exclusive, GrantedUnixMs: 7000, EndedUnixMs: 8000, End: endAborted},
		{Lock: "", Token: 9, ClientID: 3, HolderName: "client-3", Mode: exclusive, GrantedUnixMs: 9000, EndedUnixMs: 10_000, End: endAborted},
		{Lock: "b", Token: 11, ClientID: 3, HolderName: "client-3", Mode: shared, GrantedUnixMs: 11_000, EndedUnixMs: 12_000, End: endClosed},
		{Lock: "a", Token: 13, ClientID: 4, HolderName: "client-4", Mode: shared, GrantedUnixMs: 13_000, EndedUnixMs: 15_000, End: endExpired},
		{Lock: "a", Token: 14, ClientID: 2, HolderName: "client-2", Mode: shared, GrantedUnixMs: 14_000},
	}
	if got := m.History(nil, 0); !slices.Equal(got, want) {
		t.Errorf("History(nil, 0) =\n%+v\nwant\n%+v", got, want)
	}
	a := "a"
	if got := m.History(&a, 2); !slices.Equal(got, []lockstate.Event{want[4], want[5]}) {
		t.Errorf("History(a, 2) = %+v", got)
	}
	if got := m.History(nil, 1); !slices.Equal(got, want[5:]) {
		t.Errorf("History(nil, 1) = %+v", got)
	}

	// The ring keeps the newest HistoryCapacity grants, across a wrap and
	// a snapshot.
	n := lockstate.HistoryCapacity + 10
	for i := range n {
		seq := uint64(4 + 2*i)
		h.run(t, m, acquireOn(cAck(2, seq, seq), "w", exclusive))
		h.run(t, m, releaseOn(cAck(2, seq+1, seq+1), "w", h.idx))
	}
	all := m.History(nil, 0)
	if len(all) != lockstate.HistoryCapacity {
		t.Fatalf("%d events kept", len(all))
	}
	last := all[len(all)-1]
	if last.Lock != "w" || last.Token != h.idx-1 || last.End != endReleased || last.EndedUnixMs != int64(h.idx)*1000 {
		t.Errorf("newest event %+v after index %d", last, h.idx)
	}
	if first := all[0]; first.Token != h.idx-1-2*uint64(lockstate.HistoryCapacity-1) {
		t.Errorf("oldest event %+v", first)
	}
	// Index 16 + 2*9 granted the 10th of w's grants; 14 ended no more.
	if got := m.History(&a, 0); len(got) != 0 {
		t.Errorf("a's grants should be forgotten, got %+v", got)
	}
	restored, err := lockstate.Restore(lockstate.DefaultLimits(), m.State())
	if err != nil {
		t.Fatal(err)
	}
	if got := restored.History(nil, 0); !slices.Equal(got, all) {
		t.Error("the restored ring differs")
	}
	// Both end the still-held grant 14 alike, now forgotten by the ring.
	cmd := releaseOn(c(2, uint64(4+2*n)), "a", 14)
	cmd.NowUnixMs = 99
	ra, rb := m.Apply(h.idx+1, cmd), restored.Apply(h.idx+1, cmd)
	if ra.Reason() != rNone || rb.Reason() != rNone || !proto.Equal(m.State(), restored.State()) {
		t.Errorf("release after the wrap: %s, %s", ra.Reason(), rb.Reason())
	}
}

// richState is a machine with every kind of lock state: named, shared and
// exclusive holders, waiters of both modes with delays and later seqs, a
// lock in its delay, history and a last token above the index.
func richState(t testing.TB) *lockstate.Machine {
	t.Helper()
	var h history
	return h.run(t, lockstate.New(lockstate.DefaultLimits()),
		openCmd(1), openCmd(2), openCmd(3), openCmd(4), // 1-4
		acquireOn(c(1, 1), "r", exclusive),         // 5
		acquireOn(c(2, 1), "r", shared),            // 6: queued
		delayedOn(c(3, 1), "r", shared, 200),       // 7: queued
		releaseOn(c(1, 2), "r", 5),                 // 8: grants 2 (8), 3 (9)
		delayedOn(c(4, 1), "r", exclusive, 300),    // 9: queued
		acquireOn(c(4, 2), "r", exclusive),         // 10: queued again
		delayedOn(c(1, 3), "d", exclusive, 5000),   // 11: granted 11
		acquireOn(c(2, 2), "d", shared),            // 12: queued
		expireCmd(1, 11),                           // 13: d delayed
		acquireCmd(c(2, 3)),                        // 14: granted 14
		appendCmd(c(2, 4), 14, "file_3", "staged"), // 15
		delayedOn(c(3, 2), "", shared, 100),        // 16: queued
	)
}

func TestSnapshotRoundTripOfLocks(t *testing.T) {
	m := richState(t)
	st := m.State()
	wire, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	decoded := &raftlogv1.State{}
	if err := proto.Unmarshal(wire, decoded); err != nil {
		t.Fatal(err)
	}
	// Every new field is there to be checked.
	var r, d *raftlogv1.Lock
	for _, l := range decoded.GetLocks() {
		switch l.GetName() {
		case "r":
			r = l
		case "d":
			d = l
		}
	}
	if r == nil || d == nil || len(r.GetHolders()) != 2 || r.GetHolders()[1].GetLockDelayMs() != 200 ||
		r.GetQueue()[0].GetMode() != uint32(exclusive) || r.GetQueue()[0].GetLockDelayMs() != 300 ||
		!slices.Equal(r.GetQueue()[0].GetMoreSeqs(), []uint64{2}) ||
		!d.GetDelayed() || d.GetDelayToken() != 11 || d.GetDelayMs() != 5000 || d.GetQueue()[0].GetMode() != uint32(shared) ||
		decoded.GetLastToken() != 14 || len(decoded.GetHistory()) != 5 {
		t.Fatalf("snapshot lacks a field:\n%v", decoded)
	}
	restored, err := lockstate.Restore(lockstate.DefaultLimits(), decoded)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(restored.State(), st) {
		t.Fatalf("restored state differs:\n got %v\nwant %v", restored.State(), st)
	}
	for _, v := range []func(*lockstate.Machine) any{
		func(m *lockstate.Machine) any { return m.Delays() },
		func(m *lockstate.Machine) any { l, _ := m.Locks(nil, 10); return l },
		func(m *lockstate.Machine) any { return m.Held(2) },
		func(m *lockstate.Machine) any { return m.History(nil, 0) },
	} {
		if a, b := fmt.Sprint(v(m)), fmt.Sprint(v(restored)); a != b {
			t.Errorf("views differ: %s, restored %s", a, b)
		}
	}
	// Both go on alike: the delay ends, the shared holders leave.
	idx := m.AppliedIndex()
	for _, cmd := range []*raftlogv1.Command{
		endDelayCmd("d", 11),
		releaseOn(c(2, 5), "r", 8),
		releaseOn(c(3, 3), "r", 9),
		acquireOn(c(4, 3), "r", exclusive),
		acquireOn(c(3, 4), "d", shared),
		releaseCmd(c(2, 6), 14),
	} {
		idx++
		cmd.NowUnixMs = int64(idx) * 1000
		a, b := m.Apply(idx, cmd), restored.Apply(idx, cmd)
		if d := diffResult(b, a); d != "" || a.Reason() != rNone {
			t.Fatalf("index %d (%s): %s %s", idx, cmdName(cmd), a.Reason(), d)
		}
		if !proto.Equal(m.State(), restored.State()) {
			t.Fatalf("index %d: states differ", idx)
		}
	}
	holdersAre("r", []lockstate.HolderView{hv(4, 19, exclusive)})(t, restored)
	holdersAre("d", []lockstate.HolderView{hv(2, 17, shared), hv(3, 21, shared)})(t, restored)
	holdersAre("", []lockstate.HolderView{hv(3, 22, shared)})(t, restored)
	// Session 4's second acquire learned of the grant with its first.
	if o, _ := check(restored, c(4, 2), raftlogv1.Method_METHOD_ACQUIRE); !o.GetGranted() {
		t.Errorf("acquire (4, 2) answers %s", fmtOutcome(o))
	}
}

// TestRestoreOldSnapshot restores a snapshot written before named and
// shared locks: the holder in the lock's own fields, waiters without modes,
// no history and no last token, and a waiter with two queued acquires.
func TestRestoreOldSnapshot(t *testing.T) {
	session := func(id uint64, lastToken uint64, outcomes map[uint64]*raftlogv1.Outcome) *raftlogv1.Session {
		return &raftlogv1.Session{ClientId: id, Secret: sec(id), LeaseMs: 10_000, Name: fmt.Sprintf("client-%d", id), Epoch: 7, LastToken: lastToken, Outcomes: outcomes}
	}
	old := &raftlogv1.State{
		AppliedIndex: 7, NextClientId: 3,
		Sessions: []*raftlogv1.Session{
			session(1, 5, map[uint64]*raftlogv1.Outcome{1: {Granted: true, Token: 5}}),
			session(2, 0, map[uint64]*raftlogv1.Outcome{1: {Queued: true}, 2: {Queued: true}}),
		},
		Locks: []*raftlogv1.Lock{{
			Name: "", Holder: 1, HolderSeq: 1, Token: 5, LastToken: 5, GrantedUnixMs: 5000,
			Staged: []*raftlogv1.StagedAppend{{File: "file_0", Data: []byte("old")}},
			Queue:  []*raftlogv1.Waiter{{ClientId: 2, Seq: 1}},
		}},
	}
	m, err := lockstate.Restore(lockstate.DefaultLimits(), old)
	if err != nil {
		t.Fatal(err)
	}
	if lv := m.Lock(); lv.Holder != 1 || lv.Token != 5 || lv.Mode != exclusive || lv.StagedAppends != 1 || !slices.Equal(lv.Queue, []uint64{2}) ||
		!slices.Equal(lv.QueueModes, []dlmv1.LockMode{exclusive}) {
		t.Fatalf("restored lock %+v", lv)
	}
	st := m.State()
	if l := st.GetLocks()[0]; l.GetHolder() != 0 || len(l.GetHolders()) != 1 || st.GetLastToken() != 5 {
		t.Errorf("rewritten as %v", st)
	}
	cmd := releaseCmd(c(1, 2), 5)
	cmd.NowUnixMs = 8000
	got := m.Apply(8, cmd)
	if d := diffResult(got, with(committed(1, 3, w("file_0", "old")), grant(2, 1, 8))); d != "" {
		t.Fatal(d)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		if o, _ := check(m, c(2, seq), raftlogv1.Method_METHOD_ACQUIRE); !proto.Equal(withoutMethod(o), granted(8).Outcome) {
			t.Errorf("acquire (2, %d) answers %s", seq, fmtOutcome(o))
		}
	}
}
