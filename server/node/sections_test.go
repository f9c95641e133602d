package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

func wantIncomplete(t *testing.T, what string, err error, staged uint32) *Error {
	t.Helper()
	var ne *Error
	if !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE || ne.Staged.Appends != staged {
		t.Fatalf("%s = %v; want SECTION_INCOMPLETE with %d staged", what, err, staged)
	}
	return ne
}

// A section past the leader's memory bound moves to the log, where it
// survives a change of leader: the new leader holds that prefix, the client
// re-sends only what followed, and the section commits once, in order.
func TestSectionPastTheMemoryBoundSurvivesTheLeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startInmemClusterWith(t, 20*time.Second, func(cfg *Config) { cfg.sectionMemory = 8 })
	leader := c.leader(t)
	s, err := leader.OpenSession(ctx, 0, "holder")
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	call := func() Caller {
		seq++
		return Caller{ClientID: s.ClientID, Secret: s.Secret, Seq: seq, AckedBelow: seq}
	}
	g, err := leader.Acquire(ctx, call(), false, 0)
	if err != nil || !g.Granted {
		t.Fatalf("acquire = %+v, %v", g, err)
	}
	parts := []string{"aaa", "bbb", "ccc", "ddd", "eee"}
	for i, p := range parts {
		o, err := leader.Append(ctx, call(), g.Token, "file_2", []byte(p), uint32(i+1))
		if err != nil || o.Appends != uint32(i+1) {
			t.Fatalf("append %d = %+v, %v", i+1, o, err)
		}
	}
	// 3 + 3 fit the bound of 8; the third moved all three to the log;
	// the fourth and fifth are in memory again.
	var lv lockstate.LockView
	leader.fsm.View(func(m *lockstate.Machine) { lv = m.Lock() })
	if lv.StagedAppends != 3 {
		t.Fatalf("the log holds %d appends of the section; want 3", lv.StagedAppends)
	}
	st, err := leader.Status(ctx, StatusQuery{})
	if err != nil || st.Lock.StagedAppends != 5 || st.Lock.StagedBytes != 15 {
		t.Fatalf("status staged = %d, %d, %v; want the leader's view, 5 and 15", st.Lock.StagedAppends, st.Lock.StagedBytes, err)
	}
	// A repeat of the moved append, and of one in memory, stages nothing.
	for _, pos := range []uint32{3, 5} {
		if o, err := leader.Append(ctx, call(), g.Token, "file_2", []byte(parts[pos-1]), pos); err != nil || o.Appends != 5 {
			t.Fatalf("repeat of place %d = %+v, %v", pos, o, err)
		}
	}
	c.replicated(t, leader)
	old := leader
	c.stop(t, old)
	leader = c.leader(t)
	counts := &Section{Appends: 5, Bytes: 15}
	ne := wantIncomplete(t, "release on the new leader", func() error {
		_, err := leader.Release(ctx, call(), g.Token, false, counts, nil)
		return err
	}(), 3)
	for p := ne.Staged.Appends + 1; p <= 5; p++ {
		if _, err := leader.Append(ctx, call(), g.Token, "file_2", []byte(parts[p-1]), p); err != nil {
			t.Fatalf("re-send place %d: %v", p, err)
		}
	}
	o, err := leader.Release(ctx, call(), g.Token, false, counts, []lockstate.Write{{File: "file_2", Data: []byte("!")}})
	if err != nil || o.Appends != 6 || o.Bytes != 16 {
		t.Fatalf("release = %+v, %v; want 6 appends, 16 bytes", o, err)
	}
	c.replicated(t, leader)
	for _, n := range c.nodes {
		if c.closed[n] {
			continue
		}
		if got := fileOn(t, n, "file_2"); got != strings.Join(parts, "")+"!" {
			t.Fatalf("%s: file_2 = %q", n.cfg.ID, got)
		}
	}
}

// Bad input to a release, and counts the leader does not hold, change
// nothing: the grant stands, the section stays, and a good release commits.
func TestReleaseRefusalsChangeNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := startInmemClusterWith(t, 20*time.Second, func(cfg *Config) { cfg.MaxSectionBytes = 10 })
	leader := c.leader(t)
	s, err := leader.OpenSession(ctx, 0, "holder")
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	call := func() Caller {
		seq++
		return Caller{ClientID: s.ClientID, Secret: s.Secret, Seq: seq, AckedBelow: seq}
	}
	g, err := leader.Acquire(ctx, call(), false, 0)
	if err != nil || !g.Granted {
		t.Fatalf("acquire = %+v, %v", g, err)
	}
	if _, err := leader.Append(ctx, call(), g.Token, "file_0", []byte("12345"), 1); err != nil {
		t.Fatal(err)
	}
	// A place already staged with other data is refused.
	var ne *Error
	if _, err := leader.Append(ctx, call(), g.Token, "file_0", []byte("1234"), 1); !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT {
		t.Fatalf("repeat with other data = %v; want INVALID_ARGUMENT", err)
	}
	wantIncomplete(t, "release counting 2", func() error {
		_, err := leader.Release(ctx, call(), g.Token, false, &Section{Appends: 2, Bytes: 10}, nil)
		return err
	}(), 1)
	wantIncomplete(t, "release with the right count but other bytes", func() error {
		_, err := leader.Release(ctx, call(), g.Token, false, &Section{Appends: 1, Bytes: 4}, nil)
		return err
	}(), 1)
	one := &Section{Appends: 1, Bytes: 5}
	for _, bad := range []struct {
		w    lockstate.Write
		want dlmv1.ErrorReason
	}{
		{lockstate.Write{File: "../x", Data: []byte("1")}, dlmv1.ErrorReason_ERROR_REASON_INVALID_FILE_NAME},
		{lockstate.Write{File: "file_1"}, dlmv1.ErrorReason_ERROR_REASON_DATA_EMPTY},
		{lockstate.Write{File: "file_1", Data: []byte("123456")}, dlmv1.ErrorReason_ERROR_REASON_SECTION_TOO_LARGE},
	} {
		if _, err := leader.Release(ctx, call(), g.Token, false, one, []lockstate.Write{bad.w}); !errors.As(err, &ne) || ne.Reason != bad.want {
			t.Fatalf("release carrying %q to %q = %v; want %v", bad.w.Data, bad.w.File, err, bad.want)
		}
	}
	if h := leader.heldToken(s.ClientID); h != g.Token {
		t.Fatalf("after refusals the session holds %d; want %d", h, g.Token)
	}
	o, err := leader.Release(ctx, call(), g.Token, false, one, []lockstate.Write{{File: "file_1", Data: []byte("12345")}})
	if err != nil || o.Appends != 2 || o.Bytes != 10 {
		t.Fatalf("release = %+v, %v", o, err)
	}
	if got := fileOn(t, leader, "file_0") + "|" + fileOn(t, leader, "file_1"); got != "12345|12345" {
		t.Fatalf("files = %q", got)
	}
}

func (n *Node) heldToken(id uint64) uint64 {
	var tok uint64
	n.fsm.View(func(m *lockstate.Machine) { tok = m.HeldToken(id) })
	return tok
}
