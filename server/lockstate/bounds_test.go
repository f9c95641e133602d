package lockstate_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// The cap travels in the entry, so every replica refuses the same opens
// however many raced past the leader's early check, and a refusal changes
// nothing (not even the next id).
func TestOpenSessionCap(t *testing.T) {
	m := lockstate.New(lockstate.DefaultLimits())
	capped := func(id uint64) *lockstate.Result {
		cmd := openCmd(id)
		cmd.GetOpenSession().MaxSessions = 2
		r := m.Apply(m.AppliedIndex()+1, cmd)
		return &r
	}
	for id := uint64(1); id <= 2; id++ {
		if r := capped(id); r.Reason() != rNone || r.ClientID != id {
			t.Fatalf("open %d under the cap: %s, id %d", id, r.Reason(), r.ClientID)
		}
	}
	before := m.State()
	r := capped(3)
	if r.Reason() != dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS || r.ClientID != 0 {
		t.Fatalf("open over the cap: %s, id %d; want TOO_MANY_SESSIONS and no id", r.Reason(), r.ClientID)
	}
	after := m.State()
	before.AppliedIndex = after.AppliedIndex
	if !proto.Equal(before, after) {
		t.Fatal("a refused open changed the state")
	}
	// Once a session closes there is room again, and the next id follows on.
	m.Apply(m.AppliedIndex()+1, closeCmd(c(1, 1)))
	if r := capped(3); r.Reason() != rNone || r.ClientID != 3 {
		t.Fatalf("open after a close: %s, id %d; want id 3", r.Reason(), r.ClientID)
	}
}

// Paging by id lists every open session exactly once, in id order.
func TestSessionsAfter(t *testing.T) {
	m := lockstate.New(lockstate.DefaultLimits())
	for id := uint64(1); id <= 250; id++ {
		m.Apply(id, openCmd(id))
	}
	for id := uint64(2); id <= 250; id += 7 {
		m.Apply(m.AppliedIndex()+1, closeCmd(c(id, 1)))
	}
	want := m.Sessions()
	var got []lockstate.SessionInfo
	after := uint64(0)
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		page, more := m.SessionsAfter(after, 16)
		if len(page) > 16 {
			t.Fatalf("page of %d, limit 16", len(page))
		}
		got = append(got, page...)
		if !more {
			break
		}
		after = page[len(page)-1].ClientID
	}
	if len(got) != len(want) || m.SessionCount() != len(want) {
		t.Fatalf("paged %d sessions, count %d; want %d", len(got), m.SessionCount(), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("page entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}
