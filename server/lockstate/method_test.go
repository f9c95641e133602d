package lockstate_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

const rSeqReused = dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_REUSED

// TestSeqReusedByAnotherMethod checks that a seq names one request: a
// repeat of it by another method is refused, in Apply and in Check alike,
// and changes nothing, instead of being answered with the first request's
// outcome.
func TestSeqReusedByAnotherMethod(t *testing.T) {
	m := lockstate.New(lockstate.Limits{Files: 2, MaxOutstanding: 8, MaxEnded: 4})
	idx := uint64(0)
	apply := func(cmd *raftlogv1.Command) lockstate.Result {
		idx++
		cmd.NowUnixMs = 1_700_000_000_000
		return m.Apply(idx, cmd)
	}
	apply(openCmd(1))
	tok := apply(acquireCmd(c(1, 1))).Outcome.GetToken()
	if tok == 0 {
		t.Fatal("no grant")
	}
	before := m.State()
	for _, cmd := range []*raftlogv1.Command{
		appendCmd(c(1, 1), tok, "file_0", "x"),
		releaseCmd(c(1, 1), tok),
		abortCmd(c(1, 1), tok),
		closeCmd(c(1, 1)),
	} {
		method := lockstate.MethodOf(cmd)
		if o, r := check(m, c(1, 1), method); o != nil || r != rSeqReused {
			t.Errorf("Check of seq 1 for %v = %s, %s; want SEQUENCE_REUSED", method, fmtOutcome(o), r)
		}
		if r := apply(cmd).Reason(); r != rSeqReused {
			t.Errorf("%s with the acquire's seq = %s, want SEQUENCE_REUSED", cmdName(cmd), r)
		}
	}
	// Only the applied index moved.
	after := m.State()
	after.AppliedIndex = before.AppliedIndex
	if !proto.Equal(before, after) {
		t.Fatalf("refused repeats changed the state:\nbefore %v\nafter  %v", before, after)
	}
	if r := apply(acquireCmd(c(1, 1))); r.Outcome.GetToken() != tok || !r.Outcome.GetGranted() {
		t.Fatalf("a true repeat of the acquire = %s, want its grant", fmtOutcome(r.Outcome))
	}
	// An ended session's outcomes keep the rule.
	if r := apply(closeCmd(c(1, 2))); r.Reason() != rNone || len(r.Ended) != 1 {
		t.Fatalf("close: %v", r)
	}
	if r := apply(acquireCmd(c(1, 2))).Reason(); r != rSeqReused {
		t.Fatalf("acquire with the close's seq after the end = %s, want SEQUENCE_REUSED", r)
	}
	if _, r := check(m, c(1, 2), raftlogv1.Method_METHOD_ACQUIRE); r != rSeqReused {
		t.Fatalf("Check of an acquire with the close's seq = %s, want SEQUENCE_REUSED", r)
	}
	if r := apply(closeCmd(c(1, 2))); r.Reason() != rNone {
		t.Fatalf("a true repeat of the close = %s", r.Reason())
	}
}

// TestOutcomesWithoutMethodStayValid restores a state recorded before
// outcomes kept their method: its repeats are answered as before.
func TestOutcomesWithoutMethodStayValid(t *testing.T) {
	m := lockstate.New(lockstate.Limits{Files: 2, MaxOutstanding: 8, MaxEnded: 4})
	m.Apply(1, openCmd(1))
	tok := m.Apply(2, acquireCmd(c(1, 1))).Outcome.GetToken()
	st := m.State()
	for _, s := range st.GetSessions() {
		for _, o := range s.GetOutcomes() {
			o.Method = raftlogv1.Method_METHOD_UNSPECIFIED
		}
	}
	old, err := lockstate.Restore(lockstate.Limits{Files: 2, MaxOutstanding: 8, MaxEnded: 4}, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []raftlogv1.Method{raftlogv1.Method_METHOD_ACQUIRE, raftlogv1.Method_METHOD_APPEND} {
		if o, r := check(old, c(1, 1), method); r != rNone || o.GetToken() != tok {
			t.Fatalf("Check of an old outcome for %v = %s, %s; want the grant", method, fmtOutcome(o), r)
		}
	}
	if r := old.Apply(3, acquireCmd(c(1, 1))); r.Outcome.GetToken() != tok {
		t.Fatalf("repeat of an old acquire = %s, want its grant", fmtOutcome(r.Outcome))
	}
}
