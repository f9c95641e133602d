package lockstate_test

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// admitDisagrees applies cmd to a copy of m and says how the result
// contradicts what m.Admit(cmd) promised, or "". Admit is the leader's fast
// path: a refusal or a repeat it answers must be what Apply answers, with
// nothing changed; a request it lets through must run and be recorded.
func admitDisagrees(t testing.TB, limits lockstate.Limits, m *lockstate.Machine, idx uint64, cmd *raftlogv1.Command) string {
	t.Helper()
	before := m.State()
	cp, err := lockstate.Restore(limits, before)
	if err != nil {
		t.Fatal(err)
	}
	prior, reason := m.Admit(cmd)
	res := cp.Apply(idx, cmd)
	after := cp.State()
	before.AppliedIndex = idx
	switch {
	case reason != rNone:
		if d := diffResult(res, fails(reason)); d != "" {
			return fmt.Sprintf("Admit refused with %s, Apply: %s", reason, d)
		}
		// A refusal for room still moves the acknowledgement it carries
		// (logs written before Admit did), and changes nothing else.
		if reason != rTooMany && !proto.Equal(before, after) {
			return fmt.Sprintf("Admit refused with %s, but Apply changed the state", reason)
		}
	case prior != nil:
		if d := diffResult(res, lockstate.Result{Outcome: prior}); d != "" {
			return fmt.Sprintf("Admit answered %s, Apply: %s", fmtOutcome(prior), d)
		}
		if !proto.Equal(before, after) {
			return "Admit answered a repeat, but Apply changed the state"
		}
	case callerOf(cmd) != nil && len(res.Ended) == 0:
		if res.Reason() == rTooMany {
			return "Admit let the request through, Apply refused it for room"
		}
		if o, r := cp.Admit(cmd); r != rNone || !proto.Equal(o, res.Outcome) {
			return fmt.Sprintf("Admit let the request through, but Apply did not record it: Admit after = %s, %s; Apply returned %s", fmtOutcome(o), r, fmtOutcome(res.Outcome))
		}
	}
	return ""
}

// TestAdmitAgreesWithApply runs a table of requests, one per rule of
// admission, through Admit and through Apply from the same state.
func TestAdmitAgreesWithApply(t *testing.T) {
	limits := lockstate.Limits{Files: 2, MaxOutstanding: 4, MaxEnded: 4}
	var h history
	// Session 1 holds the lock with token 3 and has acknowledged below seq 2
	// and recorded seqs 2 (append) and 3, 4 (acquire). Session 2 waits.
	// Session 3 closed with its answer kept. Session 4's table is full.
	m := h.run(t, lockstate.New(limits),
		openCmd(1), openCmd(2), // 1, 2
		acquireCmd(c(1, 1)),                        // 3: token 3
		appendCmd(cAck(1, 2, 2), 3, "file_0", "x"), // 4
		acquireCmd(c(1, 3)),                        // 5
		acquireCmd(c(1, 4)),                        // 6
		acquireCmd(c(2, 1)),                        // 7: queued
		openCmd(3), closeCmd(c(3, 1)),              // 8, 9
		openCmd(4), // 10
		acquireCmd(cAck(4, 1, 1)), acquireCmd(cAck(4, 2, 1)), acquireCmd(cAck(4, 3, 1)), acquireCmd(cAck(4, 4, 1)),
	)
	if !m.Saturated(4) {
		t.Fatal("session 4 is not at its limit")
	}
	open := func(max uint64) *raftlogv1.Command {
		cmd := openCmd(5)
		cmd.GetOpenSession().MaxSessions = max
		return cmd
	}
	for _, tc := range []struct {
		name string
		cmd  *raftlogv1.Command
	}{
		{"unknown session", acquireCmd(c(9, 1))},
		{"session 0", acquireCmd(c(0, 1))},
		{"bad secret", releaseCmd(cSecret(1, 5, "guess"), 3)},
		{"ended session, new seq", acquireCmd(c(3, 2))},
		{"ended session, stale token", appendCmd(c(3, 2), 3, "file_0", "y")},
		{"ended session, repeat", closeCmd(c(3, 1))},
		{"ended session, repeat by another method", acquireCmd(c(3, 1))},
		{"ended session, bad secret", closeCmd(cSecret(3, 1, "guess"))},
		{"no seq", acquireCmd(c(1, 0))},
		{"acknowledged seq", acquireCmd(c(1, 1))},
		{"repeat", acquireCmd(c(1, 3))},
		{"repeat of an append", appendCmd(c(1, 2), 3, "file_0", "x")},
		{"seq reused by another method", releaseCmd(c(1, 3), 3)},
		{"repeat while queued", acquireCmd(c(2, 1))},
		{"new append", appendCmd(c(1, 5), 3, "file_1", "z")},
		{"new append, wrong token", appendCmd(c(1, 5), 7, "file_1", "z")},
		{"new release", releaseCmd(cAck(1, 5, 5), 3)},
		{"new close", closeCmd(c(2, 2))},
		{"full table, no acknowledgement", acquireCmd(cAck(4, 5, 1))},
		{"full table, acknowledgement past the request", acquireCmd(cAck(4, 5, 9))},
		{"full table, acknowledgement frees one", acquireCmd(cAck(4, 5, 2))},
		{"full table, repeat", acquireCmd(c(4, 2))},
		{"open under the cap", open(5)},
		{"open at the cap", open(3)},
		{"expire", expireCmd(2, 7)},
		{"no op", &raftlogv1.Command{}},
		{"end of a delay", endDelayCmd("", 3)},
		{"named acquire", acquireOn(c(1, 5), "a", shared)},
		{"named acquire, bad name", acquireOn(c(1, 5), "a\x00", shared)},
		{"named acquire, bad mode", acquireOn(c(1, 5), "a", 5)},
		{"named acquire, live locks under the cap", func() *raftlogv1.Command {
			cmd := acquireOn(c(1, 5), "a", shared)
			cmd.GetAcquire().MaxLocks = 1
			return cmd
		}()},
		{"mode mismatch while holding", acquireOn(c(1, 5), "", shared)},
		{"named release, not held", releaseOn(c(1, 5), "a", 3)},
		{"named release, token 0", releaseOn(c(1, 5), "a", 0)},
		{"release of a shared grant carrying writes", releaseOnWith(c(1, 5), "a", 3, "file_0", "x")},
	} {
		if d := admitDisagrees(t, limits, m, h.idx+1, tc.cmd); d != "" {
			t.Errorf("%s: %s", tc.name, d)
		}
	}
}
