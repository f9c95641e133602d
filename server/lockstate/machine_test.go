package lockstate_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// lockIs checks the default lock's holder, token and queue.
func lockIs(holder, token uint64, queue ...uint64) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		lv := m.Lock()
		if lv.Holder != holder || lv.Token != token || !slices.Equal(lv.Queue, queue) {
			t.Errorf("lock held by %d with token %d, queue %v; want %d, %d, %v", lv.Holder, lv.Token, lv.Queue, holder, token, queue)
		}
		if got := m.HeldToken(holder); holder != 0 && got != token {
			t.Errorf("HeldToken(%d) = %d, want %d", holder, got, token)
		}
		for i, id := range queue {
			if got := m.QueuePosition(id); got != i+1 {
				t.Errorf("QueuePosition(%d) = %d, want %d", id, got, i+1)
			}
		}
	}
}

// sizesAre checks committed file sizes as name, size pairs; every other file
// must be empty.
func sizesAre(pairs ...any) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		want := make(map[string]int64)
		for i := 0; i < len(pairs); i += 2 {
			want[pairs[i].(string)] = int64(pairs[i+1].(int))
		}
		for _, name := range m.FileNames() {
			if got := m.FileSize(name); got != want[name] {
				t.Errorf("FileSize(%s) = %d, want %d", name, got, want[name])
			}
		}
	}
}

func stagedIs(appends int, bytes uint64) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		if lv := m.Lock(); lv.StagedAppends != appends || lv.StagedBytes != bytes {
			t.Errorf("staged %d appends, %d bytes; want %d, %d", lv.StagedAppends, lv.StagedBytes, appends, bytes)
		}
	}
}

func all(checks ...func(*testing.T, *lockstate.Machine)) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		for _, c := range checks {
			c(t, m)
		}
	}
}

func TestSessions(t *testing.T) {
	runScripts(t, []script{{
		name:  "open hands out ids 1, 2, 3",
		steps: opens(3),
		check: func(t *testing.T, m *lockstate.Machine) {
			want := []lockstate.SessionInfo{
				{ClientID: 1, Name: "client-1", LeaseMs: 10_000, Epoch: 1},
				{ClientID: 2, Name: "client-2", LeaseMs: 10_000, Epoch: 2},
				{ClientID: 3, Name: "client-3", LeaseMs: 10_000, Epoch: 3},
			}
			if got := m.Sessions(); !slices.Equal(got, want) {
				t.Errorf("Sessions() = %+v, want %+v", got, want)
			}
			if got, ok := m.Session(2); !ok || got != want[1] {
				t.Errorf("Session(2) = %+v, %t", got, ok)
			}
			if _, ok := m.Session(4); ok {
				t.Error("Session(4) found before it was opened")
			}
			st := m.State()
			if st.GetNextClientId() != 4 || st.GetSessions()[2].GetOpenedUnixMs() != 3000 || st.GetSessions()[2].GetSecret() != sec(3) {
				t.Errorf("state %v", st)
			}
		},
	}, {
		name: "unknown, expired and bad-secret sessions",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireCmd(c(3, 1)), want: fails(rSessionUnk), effect: noEffect},
			step{idx: 4, now: 4000, cmd: acquireCmd(c(0, 1)), want: fails(rSessionUnk), effect: noEffect},
			step{idx: 5, now: 5000, cmd: acquireCmd(cSecret(1, 1, "guess")), want: fails(rBadSecret), effect: noEffect},
			step{idx: 6, now: 6000, cmd: acquireCmd(cSecret(1, 1, "")), want: fails(rBadSecret), effect: noEffect},
			step{idx: 7, now: 7000, cmd: closeCmd(c(2, 1)), want: with(ok(), ended(2))},
			step{idx: 8, now: 8000, cmd: acquireCmd(c(2, 2)), want: fails(rSessionExp), effect: noEffect},
			step{idx: 9, now: 9000, cmd: acquireCmd(cSecret(2, 2, "guess")), want: fails(rSessionExp), effect: noEffect},
			// The bad-secret calls did not count as activity: epoch 1 is current.
			step{idx: 10, now: 10_000, cmd: expireCmd(1, 1), want: with(ok(), ended(1))},
			step{idx: 11, now: 11_000, cmd: acquireCmd(c(1, 1)), want: fails(rSessionExp), effect: noEffect},
			step{idx: 12, now: 12_000, cmd: closeCmd(c(1, 2)), want: fails(rSessionExp), effect: noEffect},
			// Ids are never reused.
			step{idx: 13, now: 13_000, cmd: openCmd(3), want: opened(3)},
			step{idx: 14, now: 14_000, cmd: acquireCmd(c(4, 1)), want: fails(rSessionUnk), effect: noEffect},
		),
		check: func(t *testing.T, m *lockstate.Machine) {
			for id, want := range map[uint64]string{1: "SESSION_EXPIRED", 2: "SESSION_EXPIRED", 3: "UNSPECIFIED", 4: "SESSION_UNKNOWN", 0: "SESSION_UNKNOWN"} {
				if got := m.Authenticate(id, sec(id)).String(); got != "ERROR_REASON_"+want {
					t.Errorf("Authenticate(%d) = %s, want %s", id, got, want)
				}
			}
			if got := m.Authenticate(3, "guess"); got != rBadSecret {
				t.Errorf("Authenticate(3, guess) = %s", got)
			}
		},
	}, {
		name: "sequence 0 is refused",
		steps: then(opens(1),
			step{idx: 2, now: 2000, cmd: acquireCmd(c(1, 0)), want: fails(rSeqMissing), effect: noEffect},
			step{idx: 3, now: 3000, cmd: appendCmd(c(1, 0), 0, "file_0", "x"), want: fails(rSeqMissing), effect: noEffect},
			step{idx: 4, now: 4000, cmd: releaseCmd(c(1, 0), 0), want: fails(rSeqMissing), effect: noEffect},
			step{idx: 5, now: 5000, cmd: releaseCmd(c(1, 0), 7), want: fails(rSeqMissing), effect: noEffect},
			step{idx: 6, now: 6000, cmd: closeCmd(c(1, 0)), want: fails(rSeqMissing), effect: noEffect},
		),
	}})
}

func TestAtMostOnce(t *testing.T) {
	runScripts(t, []script{{
		name: "a repeated append is staged once",
		steps: then(opens(1),
			step{idx: 2, now: 2000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 2)},
			step{idx: 3, now: 3000, cmd: appendCmd(c(1, 2), 2, "file_0", "hello "), want: staged(1, 6)},
			step{idx: 4, now: 4000, cmd: appendCmd(c(1, 2), 2, "file_0", "hello "), want: staged(1, 6), effect: noEffect},
			step{idx: 5, now: 5000, cmd: appendCmd(c(1, 3), 2, "file_0", "world"), want: staged(2, 11)},
			step{idx: 6, now: 6000, cmd: releaseCmd(c(1, 4), 2), want: committed(2, 11, w("file_0", "hello "), w("file_0", "world"))},
			// The repeat learns the outcome and writes nothing.
			step{idx: 7, now: 7000, cmd: releaseCmd(c(1, 4), 2), want: committed(2, 11), effect: noEffect},
			step{idx: 8, now: 8000, cmd: appendCmd(c(1, 3), 2, "file_0", "world"), want: staged(2, 11), effect: noEffect},
		),
		check: sizesAre("file_0", 11),
	}, {
		name: "a repeated acquire is queued once",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 3)},
			step{idx: 4, now: 4000, cmd: acquireCmd(c(2, 1)), want: queued()},
			step{idx: 5, now: 5000, cmd: acquireCmd(c(2, 1)), want: queued(), effect: noEffect},
			// A new sequence while waiting keeps the one place in the queue.
			step{idx: 6, now: 6000, cmd: acquireCmd(c(2, 2)), want: queued(), check: lockIs(1, 3, 2)},
			step{idx: 7, now: 7000, cmd: releaseCmd(c(1, 2), 3), want: with(committed(0, 0), grant(2, 1, 7))},
			// Both waiting requests learn of the grant.
			step{idx: 8, now: 8000, cmd: acquireCmd(c(2, 1)), want: granted(7), effect: noEffect},
			step{idx: 9, now: 9000, cmd: acquireCmd(c(2, 2)), want: granted(7), effect: noEffect},
		),
		check: lockIs(2, 7),
	}, {
		name: "a late release does not release the next holder",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 3)},
			step{idx: 4, now: 4000, cmd: acquireCmd(c(2, 1)), want: queued()},
			step{idx: 5, now: 5000, cmd: releaseCmd(c(1, 2), 3), want: with(committed(0, 0), grant(2, 1, 5))},
			step{idx: 6, now: 6000, cmd: releaseCmd(c(1, 2), 3), want: committed(0, 0), effect: noEffect, check: lockIs(2, 5)},
			// The same token under a new sequence is stale.
			step{idx: 7, now: 7000, cmd: releaseCmd(c(1, 3), 3), want: fails(rLockExpired), effect: recordOnly},
			// Giving up "whatever I have" gives up nothing of session 2's.
			step{idx: 8, now: 8000, cmd: releaseCmd(c(1, 4), 0), want: ok(), effect: recordOnly},
		),
		check: lockIs(2, 5),
	}, {
		name: "acknowledged sequences are forgotten",
		steps: then(opens(1),
			step{idx: 2, now: 2000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 2)},
			step{idx: 3, now: 3000, cmd: appendCmd(c(1, 2), 2, "file_0", "a"), want: staged(1, 1)},
			step{idx: 4, now: 4000, cmd: appendCmd(c(1, 3), 2, "file_0", "b"), want: staged(2, 2)},
			step{idx: 5, now: 5000, cmd: appendCmd(cAck(1, 4, 3), 2, "file_0", "c"), want: staged(3, 3), check: outcomeSeqs(1, 3, 3, 4)},
			step{idx: 6, now: 6000, cmd: appendCmd(c(1, 2), 2, "file_0", "a"), want: fails(rSeqAcked), effect: noEffect},
			step{idx: 7, now: 7000, cmd: acquireCmd(c(1, 1)), want: fails(rSeqAcked), effect: noEffect},
			step{idx: 8, now: 8000, cmd: appendCmd(c(1, 3), 2, "file_0", "b"), want: staged(2, 2), effect: noEffect},
			// A client cannot acknowledge the request it sends: the mark stops at 5.
			step{idx: 9, now: 9000, cmd: appendCmd(cAck(1, 5, 99), 2, "file_0", "d"), want: staged(4, 4), check: outcomeSeqs(1, 5, 5)},
			step{idx: 10, now: 10_000, cmd: appendCmd(c(1, 5), 2, "file_0", "d"), want: staged(4, 4), effect: noEffect},
			step{idx: 11, now: 11_000, cmd: appendCmd(c(1, 4), 2, "file_0", "c"), want: fails(rSeqAcked), effect: noEffect},
			// A lower mark than the session's does not lower it.
			step{idx: 12, now: 12_000, cmd: appendCmd(cAck(1, 6, 2), 2, "file_0", "e"), want: staged(5, 5), check: outcomeSeqs(1, 5, 5, 6)},
		),
		check: stagedIs(5, 5),
	}, {
		name:   "too many outstanding requests",
		limits: lockstate.Limits{Files: 100, MaxOutstanding: 3},
		steps: then(opens(1),
			step{idx: 2, now: 2000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 2)},
			step{idx: 3, now: 3000, cmd: appendCmd(c(1, 2), 2, "file_0", "a"), want: staged(1, 1), check: saturated(1, false)},
			step{idx: 4, now: 4000, cmd: appendCmd(c(1, 3), 2, "file_0", "b"), want: staged(2, 2), check: saturated(1, true)},
			step{idx: 5, now: 5000, cmd: appendCmd(c(1, 4), 2, "file_0", "c"), want: fails(rTooMany), effect: noEffect, check: saturated(1, true)},
			// Refused, not recorded: the retry is refused again.
			step{idx: 6, now: 6000, cmd: appendCmd(c(1, 4), 2, "file_0", "c"), want: fails(rTooMany), effect: noEffect},
			step{idx: 7, now: 7000, cmd: releaseCmd(c(1, 4), 2), want: fails(rTooMany), effect: noEffect},
			// Acknowledging frees room; the same sequence now runs.
			step{idx: 8, now: 8000, cmd: appendCmd(cAck(1, 4, 3), 2, "file_0", "c"), want: staged(3, 3), check: both(outcomeSeqs(1, 3, 3, 4), saturated(1, false))},
			// A repeat of a recorded request is answered even when the table is full.
			step{idx: 9, now: 9000, cmd: appendCmd(c(1, 5), 2, "file_0", "d"), want: staged(4, 4), check: both(saturated(1, true), saturated(2, false))},
			step{idx: 10, now: 10_000, cmd: appendCmd(c(1, 5), 2, "file_0", "d"), want: staged(4, 4), effect: noEffect},
		),
	}})
}

// saturated checks whether the session's outcome table is full.
func saturated(id uint64, want bool) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		if got := m.Saturated(id); got != want {
			t.Errorf("Saturated(%d) = %v, want %v", id, got, want)
		}
	}
}

// both runs two checks.
func both(a, b func(*testing.T, *lockstate.Machine)) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		a(t, m)
		b(t, m)
	}
}

// outcomeSeqs checks the session's acknowledged mark and the sequences of
// its recorded outcomes.
func outcomeSeqs(id, mark uint64, seqs ...uint64) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		for _, s := range m.State().GetSessions() {
			if s.GetClientId() != id {
				continue
			}
			var got []uint64
			for q := range s.GetOutcomes() {
				got = append(got, q)
			}
			slices.Sort(got)
			if s.GetAckedBelow() != mark || !slices.Equal(got, seqs) {
				t.Errorf("session %d: mark %d, outcomes %v; want %d, %v", id, s.GetAckedBelow(), got, mark, seqs)
			}
			return
		}
		t.Errorf("session %d not open", id)
	}
}

func TestGrants(t *testing.T) {
	runScripts(t, []script{{
		// Indexes jump as Raft's own entries (configuration, no-ops) would:
		// the token is the index of the granting entry, not a counter.
		name: "FIFO order, hand-off in the release, growing tokens",
		steps: then(opens(4),
			step{idx: 5, now: 5000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 5)},
			step{idx: 6, now: 6000, cmd: acquireCmd(c(3, 1)), want: queued()},
			step{idx: 7, now: 7000, cmd: acquireCmd(c(2, 1)), want: queued()},
			step{idx: 8, now: 8000, cmd: acquireCmd(c(4, 7)), want: queued(), check: lockIs(1, 5, 3, 2, 4)},
			step{idx: 10, now: 10_000, cmd: releaseCmd(c(1, 2), 5), want: with(committed(0, 0), grant(3, 1, 10)), check: lockIs(3, 10, 2, 4)},
			step{idx: 11, now: 11_000, cmd: releaseCmd(c(3, 2), 10), want: with(committed(0, 0), grant(2, 1, 11)), check: lockIs(2, 11, 4)},
			step{idx: 15, now: 15_000, cmd: releaseCmd(c(2, 2), 11), want: with(committed(0, 0), grant(4, 7, 15)), check: grantedAt(15_000)},
			step{idx: 16, now: 16_000, cmd: acquireCmd(c(3, 3)), want: queued()},
			step{idx: 17, now: 17_000, cmd: releaseCmd(c(4, 8), 15), want: with(committed(0, 0), grant(3, 3, 17))},
			step{idx: 18, now: 18_000, cmd: releaseCmd(c(3, 4), 17), want: committed(0, 0), check: lockIs(0, 0)},
			// The free lock goes to the first to ask, in its own entry.
			step{idx: 20, now: 20_000, cmd: acquireCmd(c(2, 3)), want: grantedNow(2, 3, 20), check: grantedAt(20_000)},
		),
		check: func(t *testing.T, m *lockstate.Machine) {
			lockIs(2, 20)(t, m)
			if lv := m.Lock(); lv.LastToken != 20 {
				t.Errorf("last token %d", lv.LastToken)
			}
			// Every waiter's recorded acquire now says granted, with its token.
			for _, q := range []struct{ id, seq, token uint64 }{{3, 1, 10}, {2, 1, 11}, {4, 7, 15}, {3, 3, 17}} {
				o, r := check(m, c(q.id, q.seq), raftlogv1.Method_METHOD_ACQUIRE)
				if r != rNone || !proto.Equal(withoutMethod(o), granted(q.token).Outcome) {
					t.Errorf("Check(%d, %d) = %s, %s; want granted %d", q.id, q.seq, fmtOutcome(o), r, q.token)
				}
			}
		},
	}, {
		name: "hand-off commits the section and grants in one entry",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 3)},
			step{idx: 4, now: 4000, cmd: acquireCmd(c(2, 1)), want: queued()},
			step{idx: 5, now: 5000, cmd: appendCmd(c(1, 2), 3, "file_5", "x"), want: staged(1, 1)},
			step{idx: 6, now: 6000, cmd: releaseCmd(c(1, 3), 3), want: with(committed(1, 1, w("file_5", "x")), grant(2, 1, 6))},
		),
		check: all(lockIs(2, 6), grantedAt(6000), stagedIs(0, 0), sizesAre("file_5", 1)),
	}, {
		name: "try mode never queues",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: tryCmd(c(1, 1)), want: grantedNow(1, 1, 3)},
			step{idx: 4, now: 4000, cmd: tryCmd(c(2, 1)), want: ok(), effect: recordOnly, check: lockIs(1, 3)},
			step{idx: 5, now: 5000, cmd: acquireCmd(c(2, 2)), want: queued()},
			// Already waiting: the try reports the place it has.
			step{idx: 6, now: 6000, cmd: tryCmd(c(2, 3)), want: queued(), check: lockIs(1, 3, 2)},
			step{idx: 7, now: 7000, cmd: releaseCmd(c(1, 2), 3), want: with(committed(0, 0), grant(2, 2, 7))},
			// The refused try keeps its original answer.
			step{idx: 8, now: 8000, cmd: tryCmd(c(2, 1)), want: ok(), effect: noEffect},
			step{idx: 9, now: 9000, cmd: tryCmd(c(2, 3)), want: granted(7), effect: noEffect},
		),
		check: lockIs(2, 7),
	}, {
		name: "re-entrant acquire",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 3)},
			step{idx: 4, now: 4000, cmd: acquireCmd(c(1, 2)), want: granted(3), effect: recordOnly},
			step{idx: 5, now: 5000, cmd: tryCmd(c(1, 3)), want: granted(3), effect: recordOnly},
			step{idx: 6, now: 6000, cmd: acquireCmd(c(2, 1)), want: queued(), check: all(lockIs(1, 3, 2), grantedAt(3000))},
			step{idx: 7, now: 7000, cmd: releaseCmd(c(1, 4), 3), want: with(committed(0, 0), grant(2, 1, 7))},
		),
		check: lockIs(2, 7),
	}, {
		name: "release with token 0 leaves the queue",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 3)},
			step{idx: 4, now: 4000, cmd: acquireCmd(c(2, 1)), want: queued()},
			step{idx: 5, now: 5000, cmd: releaseCmd(c(2, 2), 0), want: ok(), check: lockIs(1, 3)},
			// The acquire's answer is now "neither granted nor queued".
			step{idx: 6, now: 6000, cmd: acquireCmd(c(2, 1)), want: ok(), effect: noEffect},
			step{idx: 7, now: 7000, cmd: releaseCmd(c(1, 2), 3), want: committed(0, 0)},
		),
		check: lockIs(0, 0),
	}, {
		name: "release with token 0 aborts a grant the client never learned of",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 3)},
			step{idx: 4, now: 4000, cmd: appendCmd(c(1, 2), 3, "file_0", "lost"), want: staged(1, 4)},
			step{idx: 5, now: 5000, cmd: acquireCmd(c(2, 1)), want: queued()},
			step{idx: 6, now: 6000, cmd: releaseCmd(c(1, 3), 0), want: with(ok(), grant(2, 1, 6))},
		),
		check: all(lockIs(2, 6), sizesAre(), stagedIs(0, 0)),
	}, {
		name: "stale and never-held tokens",
		steps: then(opens(3),
			step{idx: 4, now: 4000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 4)},
			step{idx: 5, now: 5000, cmd: releaseCmd(c(1, 2), 4), want: committed(0, 0)},
			step{idx: 6, now: 6000, cmd: acquireCmd(c(2, 1)), want: grantedNow(2, 1, 6)},
			// Session 1 held token 4 once: it is stale.
			step{idx: 7, now: 7000, cmd: appendCmd(c(1, 3), 4, "file_0", "late"), want: fails(rLockExpired), effect: recordOnly},
			step{idx: 8, now: 8000, cmd: releaseCmd(c(1, 4), 4), want: fails(rLockExpired), effect: recordOnly},
			step{idx: 9, now: 9000, cmd: abortCmd(c(1, 5), 4), want: fails(rLockExpired), effect: recordOnly},
			// Session 3 never held anything; session 2 never held token 99 or 0.
			step{idx: 10, now: 10_000, cmd: appendCmd(c(3, 1), 6, "file_0", "x"), want: fails(rNotHolder), effect: recordOnly},
			step{idx: 11, now: 11_000, cmd: releaseCmd(c(3, 2), 6), want: fails(rNotHolder), effect: recordOnly},
			step{idx: 12, now: 12_000, cmd: appendCmd(c(2, 2), 99, "file_0", "x"), want: fails(rNotHolder), effect: recordOnly},
			step{idx: 13, now: 13_000, cmd: appendCmd(c(2, 3), 0, "file_0", "x"), want: fails(rNotHolder), effect: recordOnly},
			step{idx: 14, now: 14_000, cmd: releaseCmd(c(2, 4), 7), want: fails(rNotHolder), effect: recordOnly},
		),
		check: all(lockIs(2, 6), stagedIs(0, 0)),
	}})
}

// grantedAt checks the time of the current grant.
func grantedAt(ms int64) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		if got := m.Lock().GrantedUnixMs; got != ms {
			t.Errorf("granted at %d ms, want %d", got, ms)
		}
	}
}

func TestCriticalSections(t *testing.T) {
	runScripts(t, []script{{
		name: "appends are staged and written at release",
		steps: then(opens(1),
			step{idx: 2, now: 2000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 2)},
			step{idx: 3, now: 3000, cmd: appendCmd(c(1, 2), 2, "file_0", "one\n"), want: staged(1, 4)},
			step{idx: 4, now: 4000, cmd: appendCmd(c(1, 3), 2, "file_99", "two\n"), want: staged(2, 8)},
			step{idx: 5, now: 5000, cmd: appendCmd(c(1, 4), 2, "file_0", "three\n"), want: staged(3, 14), check: all(stagedIs(3, 14), sizesAre())},
			step{idx: 6, now: 6000, cmd: releaseCmd(c(1, 5), 2), want: committed(3, 14, w("file_0", "one\n"), w("file_99", "two\n"), w("file_0", "three\n"))},
		),
		check: all(sizesAre("file_0", 10, "file_99", 4), stagedIs(0, 0), lockIs(0, 0)),
	}, {
		name: "abort drops the section",
		steps: then(opens(1),
			step{idx: 2, now: 2000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 2)},
			step{idx: 3, now: 3000, cmd: appendCmd(c(1, 2), 2, "file_3", "x"), want: staged(1, 1)},
			step{idx: 4, now: 4000, cmd: abortCmd(c(1, 3), 2), want: ok(), check: all(sizesAre(), stagedIs(0, 0))},
			// The next section starts empty.
			step{idx: 5, now: 5000, cmd: acquireCmd(c(1, 4)), want: grantedNow(1, 4, 5)},
			step{idx: 6, now: 6000, cmd: appendCmd(c(1, 5), 5, "file_3", "yz"), want: staged(1, 2)},
			step{idx: 7, now: 7000, cmd: releaseCmd(c(1, 6), 5), want: committed(1, 2, w("file_3", "yz"))},
		),
		check: sizesAre("file_3", 2),
	}, {
		name: "expiry aborts the section and hands the lock on",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 3)},
			step{idx: 4, now: 4000, cmd: appendCmd(c(1, 2), 3, "file_1", "doomed"), want: staged(1, 6)},
			step{idx: 5, now: 5000, cmd: acquireCmd(c(2, 1)), want: queued()},
			step{idx: 6, now: 6000, cmd: expireCmd(1, 4), want: with(ok(), grant(2, 1, 6), ended(1)), check: all(lockIs(2, 6), sizesAre(), stagedIs(0, 0))},
			// The expired holder wakes up: with its token it learns the lock
			// is gone, without one that the session is; a repeat of a request
			// it made before still gets its original answer.
			step{idx: 7, now: 7000, cmd: appendCmd(c(1, 3), 3, "file_1", "late"), want: fails(rLockExpired), effect: noEffect},
			step{idx: 8, now: 8000, cmd: appendCmd(c(1, 2), 3, "file_1", "doomed"), want: staged(1, 6), effect: noEffect},
			step{idx: 9, now: 9000, cmd: releaseCmd(c(1, 4), 3), want: fails(rLockExpired), effect: noEffect},
			step{idx: 10, now: 10_000, cmd: releaseCmd(c(1, 5), 0), want: fails(rSessionExp), effect: noEffect},
			step{idx: 11, now: 11_000, cmd: acquireCmd(c(1, 6)), want: fails(rSessionExp), effect: noEffect},
			step{idx: 12, now: 12_000, cmd: closeCmd(c(1, 7)), want: fails(rSessionExp), effect: noEffect},
		),
		check: func(t *testing.T, m *lockstate.Machine) {
			if _, ok := m.Session(1); ok {
				t.Error("session 1 still open")
			}
		},
	}, {
		name: "close commits the section and hands the lock on",
		steps: then(opens(3),
			step{idx: 4, now: 4000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 4)},
			step{idx: 5, now: 5000, cmd: acquireCmd(c(2, 1)), want: queued()},
			step{idx: 6, now: 6000, cmd: acquireCmd(c(3, 1)), want: queued()},
			step{idx: 7, now: 7000, cmd: appendCmd(c(1, 2), 4, "file_2", "kept"), want: staged(1, 4)},
			step{idx: 8, now: 8000, cmd: closeCmd(c(3, 2)), want: with(ok(), ended(3)), check: lockIs(1, 4, 2)},
			step{idx: 9, now: 9000, cmd: closeCmd(c(1, 3)), want: with(committed(1, 4, w("file_2", "kept")), grant(2, 1, 9), ended(1))},
			step{idx: 10, now: 10_000, cmd: appendCmd(c(1, 4), 4, "file_2", "late"), want: fails(rLockExpired), effect: noEffect},
			// A retried close gets its original answer, and nothing more.
			step{idx: 11, now: 11_000, cmd: closeCmd(c(1, 3)), want: staged(1, 4), effect: noEffect},
			step{idx: 12, now: 12_000, cmd: closeCmd(c(1, 5)), want: fails(rSessionExp), effect: noEffect},
		),
		check: all(lockIs(2, 9), sizesAre("file_2", 4)),
	}, {
		name: "expiry with an outdated epoch is ignored",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 3)},
			step{idx: 4, now: 4000, cmd: appendCmd(c(1, 2), 3, "file_4", "ab"), want: staged(1, 2)},
			// Decided at epoch 1 or 3, but the session acted at 4 since.
			step{idx: 5, now: 5000, cmd: expireCmd(1, 1), want: ok(), effect: noEffect},
			step{idx: 6, now: 6000, cmd: expireCmd(1, 3), want: ok(), effect: noEffect},
			step{idx: 7, now: 7000, cmd: expireCmd(1, 9), want: ok(), effect: noEffect},
			step{idx: 8, now: 8000, cmd: expireCmd(9, 1), want: ok(), effect: noEffect},
			step{idx: 9, now: 9000, cmd: expireCmd(0, 0), want: ok(), effect: noEffect},
			// A repeat is not new activity, a refused request is.
			step{idx: 10, now: 10_000, cmd: appendCmd(c(1, 2), 3, "file_4", "ab"), want: staged(1, 2), effect: noEffect},
			step{idx: 11, now: 11_000, cmd: expireCmd(1, 10), want: ok(), effect: noEffect},
			step{idx: 12, now: 12_000, cmd: appendCmd(c(1, 3), 3, "nope", "ab"), want: fails(rFileNotFound), effect: recordOnly},
			step{idx: 13, now: 13_000, cmd: expireCmd(1, 4), want: ok(), effect: noEffect},
			step{idx: 14, now: 14_000, cmd: expireCmd(1, 12), want: with(ok(), ended(1))},
			step{idx: 15, now: 15_000, cmd: expireCmd(1, 12), want: ok(), effect: noEffect},
		),
		check: all(lockIs(0, 0), sizesAre(), func(t *testing.T, m *lockstate.Machine) {
			if got := m.Sessions(); len(got) != 1 || got[0].ClientID != 2 {
				t.Errorf("sessions %+v, want only 2", got)
			}
		}),
	}, {
		name: "an expired waiter leaves the queue",
		steps: then(opens(3),
			step{idx: 4, now: 4000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 4)},
			step{idx: 5, now: 5000, cmd: acquireCmd(c(2, 1)), want: queued()},
			step{idx: 6, now: 6000, cmd: acquireCmd(c(3, 1)), want: queued()},
			step{idx: 7, now: 7000, cmd: expireCmd(2, 5), want: with(ok(), ended(2)), check: lockIs(1, 4, 3)},
			step{idx: 8, now: 8000, cmd: releaseCmd(c(1, 2), 4), want: with(committed(0, 0), grant(3, 1, 8))},
		),
		check: lockIs(3, 8),
	}})
}

func TestBadInput(t *testing.T) {
	// Every step after the grant is refused and changes nothing but its
	// recorded outcome (or nothing at all).
	held := then(opens(1), step{idx: 2, now: 2000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 2)})
	bad := func(idx uint64, cmd *raftlogv1.Command, want lockstate.Result) step {
		return step{idx: idx, now: int64(idx) * 1000, cmd: cmd, want: want, effect: recordOnly}
	}
	runScripts(t, []script{{
		name: "file names",
		steps: then(held,
			bad(3, appendCmd(c(1, 2), 2, "file_100", "x"), fails(rFileNotFound)),
			bad(4, appendCmd(c(1, 3), 2, "file_03", "x"), fails(rFileNotFound)),
			bad(5, appendCmd(c(1, 4), 2, "foo", "x"), fails(rFileNotFound)),
			bad(6, appendCmd(c(1, 5), 2, "", "x"), fails(rInvalidFile)),
			bad(7, appendCmd(c(1, 6), 2, "../etc/passwd", "x"), fails(rInvalidFile)),
			bad(8, appendCmd(c(1, 7), 2, "a/b", "x"), fails(rInvalidFile)),
			bad(9, appendCmd(c(1, 8), 2, "..", "x"), fails(rInvalidFile)),
			bad(10, appendCmd(c(1, 9), 2, "file_1\n", "x"), fails(rInvalidFile)),
			bad(11, appendCmd(c(1, 10), 2, "file_\x001", "x"), fails(rInvalidFile)),
			step{idx: 12, now: 12_000, cmd: appendCmd(c(1, 11), 2, "file_0", "ok"), want: staged(1, 2)},
			step{idx: 13, now: 13_000, cmd: appendCmd(c(1, 12), 2, "file_99", "ok"), want: staged(2, 4)},
		),
		check: stagedIs(2, 4),
	}, {
		name: "empty data",
		steps: then(held,
			bad(3, appendCmd(c(1, 2), 2, "file_0", ""), fails(rDataEmpty)),
			bad(4, appendMax(c(1, 3), 2, "file_0", "", 0), fails(rDataEmpty)),
		),
		check: stagedIs(0, 0),
	}, {
		name: "a section over its limit stages nothing",
		steps: then(held,
			step{idx: 3, now: 3000, cmd: appendMax(c(1, 2), 2, "file_0", "123456", 10), want: staged(1, 6)},
			bad(4, appendMax(c(1, 3), 2, "file_0", "12345", 10), fails(rSectionLarge)),
			step{idx: 5, now: 5000, cmd: appendMax(c(1, 4), 2, "file_0", "1234", 10), want: staged(2, 10)},
			bad(6, appendMax(c(1, 5), 2, "file_0", "1", 10), fails(rSectionLarge)),
			step{idx: 7, now: 7000, cmd: releaseCmd(c(1, 6), 2), want: committed(2, 10, w("file_0", "123456"), w("file_0", "1234"))},
			// The limit is per section.
			step{idx: 8, now: 8000, cmd: acquireCmd(c(1, 7)), want: grantedNow(1, 7, 8)},
			step{idx: 9, now: 9000, cmd: appendMax(c(1, 8), 8, "file_0", "12345", 10), want: staged(1, 5)},
			// The limit travels in each command: a leader with another one applies it.
			bad(10, appendMax(c(1, 9), 8, "file_0", "1", 5), fails(rSectionLarge)),
		),
		check: all(sizesAre("file_0", 10), stagedIs(1, 5)),
	}, {
		name: "a file over its limit stages nothing",
		steps: then(held,
			step{idx: 3, now: 3000, cmd: appendFileMax(c(1, 2), 2, "file_0", "1234", 6), want: staged(1, 4)},
			// Staged bytes count: 4 + 3 > 6.
			bad(4, appendFileMax(c(1, 3), 2, "file_0", "123", 6), fails(rFileLarge)),
			// The limit is per file: another file has its own room.
			step{idx: 5, now: 5000, cmd: appendFileMax(c(1, 4), 2, "file_1", "123456", 6), want: staged(2, 10)},
			step{idx: 6, now: 6000, cmd: appendFileMax(c(1, 5), 2, "file_0", "12", 6), want: staged(3, 12)},
			bad(7, appendFileMax(c(1, 6), 2, "file_1", "1", 6), fails(rFileLarge)),
			step{idx: 8, now: 8000, cmd: releaseCmd(c(1, 7), 2), want: committed(3, 12, w("file_0", "1234"), w("file_1", "123456"), w("file_0", "12"))},
			// Committed bytes count in the next section.
			step{idx: 9, now: 9000, cmd: acquireCmd(c(1, 8)), want: grantedNow(1, 8, 9)},
			bad(10, appendFileMax(c(1, 9), 9, "file_0", "1", 6), fails(rFileLarge)),
			// The limit travels in each command: a leader with a larger one
			// applies it, and 0 (an entry from before the limit) means none.
			step{idx: 11, now: 11_000, cmd: appendFileMax(c(1, 10), 9, "file_0", "1", 7), want: staged(1, 1)},
			step{idx: 12, now: 12_000, cmd: appendFileMax(c(1, 11), 9, "file_0", "123", 0), want: staged(2, 4)},
		),
		check: all(sizesAre("file_0", 6, "file_1", 6), stagedIs(2, 4)),
	}, {
		name: "the token is checked before the file and the data",
		steps: then(opens(2),
			bad(3, appendCmd(c(1, 1), 0, "../x", ""), fails(rNotHolder)),
			bad(4, appendCmd(c(2, 1), 5, "nope", "x"), fails(rNotHolder)),
		),
	}, {
		name: "malformed commands",
		steps: then(held,
			step{idx: 3, now: 3000, cmd: &raftlogv1.Command{}, want: fails(rInvalidArg), effect: noEffect},
			step{idx: 4, now: 4000, cmd: &raftlogv1.Command{Op: &raftlogv1.Command_Acquire{}}, want: fails(rSessionUnk), effect: noEffect},
			step{idx: 5, now: 5000, cmd: acquireCmd(nil), want: fails(rSessionUnk), effect: noEffect},
			step{idx: 6, now: 6000, cmd: &raftlogv1.Command{Op: &raftlogv1.Command_Release{}}, want: fails(rSessionUnk), effect: noEffect},
			step{idx: 7, now: 7000, cmd: &raftlogv1.Command{Op: &raftlogv1.Command_Append{}}, want: fails(rSessionUnk), effect: noEffect},
			step{idx: 8, now: 8000, cmd: &raftlogv1.Command{Op: &raftlogv1.Command_CloseSession{}}, want: fails(rSessionUnk), effect: noEffect},
			step{idx: 9, now: 9000, cmd: &raftlogv1.Command{Op: &raftlogv1.Command_ExpireSession{}}, want: ok(), effect: noEffect},
			// An empty OpenSession is still a session.
			step{idx: 10, now: 10_000, cmd: &raftlogv1.Command{Op: &raftlogv1.Command_OpenSession{}}, want: lockstate.Result{Outcome: &raftlogv1.Outcome{}, ClientID: 2}},
		),
		check: lockIs(1, 2),
	}})
}

const rFileLarge = dlmv1.ErrorReason_ERROR_REASON_FILE_TOO_LARGE

func appendFileMax(cl *raftlogv1.Caller, token uint64, file, data string, maxFile uint64) *raftlogv1.Command {
	cmd := appendCmd(cl, token, file, data)
	cmd.GetAppend().MaxFileBytes = maxFile
	return cmd
}

func TestApplyNilCommand(t *testing.T) {
	m := lockstate.New(lockstate.DefaultLimits())
	if got := m.Apply(1, nil); got.Reason() != rInvalidArg {
		t.Errorf("Apply(nil) = %s", fmtOutcome(got.Outcome))
	}
	if (lockstate.Result{}).Reason() != rNone {
		t.Error("a result without outcome has a reason")
	}
}

// TestResultsAreSnapshots checks that a Result does not change once Apply
// has returned it, and that changing it does not change the machine: the FSM
// hands Results to other goroutines while it applies the next entries.
func TestResultsAreSnapshots(t *testing.T) {
	var h history
	m := h.run(t, lockstate.New(lockstate.DefaultLimits()),
		openCmd(1), openCmd(2),
		acquireCmd(c(1, 1)),
	)
	waiting := m.Apply(4, acquireCmd(c(2, 1)))
	repeat := m.Apply(5, acquireCmd(c(2, 1)))
	m.Apply(6, releaseCmd(c(1, 2), 3)) // grants session 2
	for name, r := range map[string]lockstate.Result{"first": waiting, "repeat": repeat} {
		if d := diffResult(r, queued()); d != "" {
			t.Errorf("%s queued result changed after the grant: %s", name, d)
		}
	}
	// A caller scribbling on its result does not rewrite history.
	later := m.Apply(7, acquireCmd(c(2, 1)))
	later.Outcome.Token, later.Outcome.ErrorReason = 999, 1
	if d := diffResult(m.Apply(8, acquireCmd(c(2, 1))), granted(6)); d != "" {
		t.Errorf("repeat after the caller changed its result: %s", d)
	}
	o, _ := check(m, c(2, 1), raftlogv1.Method_METHOD_ACQUIRE)
	o.Token = 12345
	if d := diffResult(m.Apply(9, acquireCmd(c(2, 1))), granted(6)); d != "" {
		t.Errorf("repeat after the caller changed Check's outcome: %s", d)
	}
}

// history applies commands at indexes 1, 2, 3… with times 1000 ms apart.
type history struct{ idx uint64 }

func (h *history) run(t testing.TB, m *lockstate.Machine, cmds ...*raftlogv1.Command) *lockstate.Machine {
	t.Helper()
	for _, cmd := range cmds {
		h.idx++
		cmd.NowUnixMs = int64(h.idx) * 1000
		if r := m.Apply(h.idx, cmd); r.Reason() != rNone {
			t.Fatalf("index %d (%s): %s", h.idx, cmdName(cmd), r.Reason())
		}
	}
	return m
}

func TestCheck(t *testing.T) {
	var h history
	m := h.run(t, lockstate.New(lockstate.DefaultLimits()),
		openCmd(1), openCmd(2),
		acquireCmd(c(1, 1)),
		acquireCmd(c(2, 1)),
		appendCmd(cAck(1, 3, 2), 3, "file_0", "x"),
	)
	before := m.State()
	for _, tc := range []struct {
		name   string
		caller *raftlogv1.Caller
		want   *raftlogv1.Outcome
		reason string
	}{
		{"staged", c(1, 3), staged(1, 1).Outcome, ""},
		{"queued", c(2, 1), queued().Outcome, ""},
		{"new request", c(2, 2), nil, ""},
		{"acknowledged", c(1, 1), nil, "SEQUENCE_ACKNOWLEDGED"},
		{"no sequence", c(1, 0), nil, "SEQUENCE_MISSING"},
		{"bad secret", cSecret(1, 3, "x"), nil, "BAD_SECRET"},
		{"unknown", c(3, 1), nil, "SESSION_UNKNOWN"},
	} {
		method := raftlogv1.Method_METHOD_ACQUIRE
		if tc.name == "staged" {
			method = raftlogv1.Method_METHOD_APPEND
		}
		o, r := check(m, tc.caller, method)
		o = withoutMethod(o)
		want := "ERROR_REASON_UNSPECIFIED"
		if tc.reason != "" {
			want = "ERROR_REASON_" + tc.reason
		}
		if !proto.Equal(o, tc.want) || r.String() != want {
			t.Errorf("%s: Check = %s, %s; want %s, %s", tc.name, fmtOutcome(o), r, fmtOutcome(tc.want), want)
		}
	}
	if !proto.Equal(before, m.State()) {
		t.Error("Check changed the state")
	}
}

// Ended sessions keep their outcomes, but only the newest MaxEnded of them.
func TestEndedSessionsAreBounded(t *testing.T) {
	m := lockstate.New(lockstate.Limits{Files: 1, MaxOutstanding: 8, MaxEnded: 2})
	idx := uint64(0)
	apply := func(cmd *raftlogv1.Command) lockstate.Result {
		idx++
		return m.Apply(idx, cmd)
	}
	closeCmd := func(id uint64) *raftlogv1.Command {
		return &raftlogv1.Command{Op: &raftlogv1.Command_CloseSession{CloseSession: &raftlogv1.CloseSession{
			Caller: &raftlogv1.Caller{ClientId: id, Secret: "s", Seq: 1},
		}}}
	}
	for range 3 {
		apply(&raftlogv1.Command{Op: &raftlogv1.Command_OpenSession{OpenSession: &raftlogv1.OpenSession{Secret: "s", LeaseMs: 1000}}})
	}
	for id := uint64(1); id <= 3; id++ {
		if r := apply(closeCmd(id)); r.Reason() != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			t.Fatalf("close %d: %v", id, r.Reason())
		}
	}
	if got := len(m.State().GetEndedSessions()); got != 2 {
		t.Fatalf("%d ended sessions kept, want 2", got)
	}
	if r := apply(closeCmd(1)); r.Reason() != dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED {
		t.Fatalf("repeat for a forgotten session: %v, want SESSION_EXPIRED", r.Reason())
	}
	for id := uint64(2); id <= 3; id++ {
		if r := apply(closeCmd(id)); r.Reason() != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED || len(r.Ended) != 0 {
			t.Fatalf("repeat of close %d = %v, want its original answer and no effect", id, r)
		}
	}
	restored, err := lockstate.Restore(lockstate.Limits{Files: 1, MaxOutstanding: 8, MaxEnded: 2}, m.State())
	if err != nil {
		t.Fatal(err)
	}
	if o, r := check(restored, &raftlogv1.Caller{ClientId: 3, Secret: "s", Seq: 1}, raftlogv1.Method_METHOD_CLOSE); o == nil || r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		t.Fatalf("restored machine forgot the ended session's outcome: %v %v", o, r)
	}
}
