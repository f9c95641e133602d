package groupsim_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dlm/dlm/internal/groupsim"
)

func TestEvenPlacementSpreadsSlots(t *testing.T) {
	for _, g := range []int{1, 2, 3, 4, 8} {
		p := groupsim.Even(g)
		per := make([]int, g)
		for _, grp := range p {
			per[grp]++
		}
		for i, k := range per {
			if want := groupsim.Slots / g; k < want || k > want+1 {
				t.Errorf("%d groups: group %d owns %d slots, want %d or %d", g, i, k, want, want+1)
			}
		}
	}
}

func TestMovingASlotMovesItsNames(t *testing.T) {
	p := groupsim.Even(4)
	name := "orders/42"
	from := p.Group(name)
	p[groupsim.Slot(name)] = (from + 1) % 4
	if got := p.Group(name); got != (from+1)%4 {
		t.Fatalf("after moving slot %d to group %d, %q routes to %d", groupsim.Slot(name), (from+1)%4, name, got)
	}
	// Names of other slots stay where they were.
	q := groupsim.Even(4)
	for i := range 1000 {
		other := fmt.Sprintf("lock-%d", i)
		if groupsim.Slot(other) != groupsim.Slot(name) && p.Group(other) != q.Group(other) {
			t.Fatalf("%q moved with slot %d though its slot is %d", other, groupsim.Slot(name), groupsim.Slot(other))
		}
	}
}

func TestSlotsSpreadNames(t *testing.T) {
	// FNV-1a over names that differ only in a counter: each of 8 groups
	// gets between 1/16 and 1/4 of 4096 names.
	p := groupsim.Even(8)
	per := make([]int, 8)
	for i := range 4096 {
		per[p.Group(fmt.Sprintf("lock-%d", i))]++
	}
	for g, k := range per {
		if k < 4096/16 || k > 4096/4 {
			t.Errorf("group %d got %d of 4096 names", g, k)
		}
	}
}

// TestGroupsCycleIndependently runs real groups: each session cycles in
// the group that owns its name, tokens rise within a group, each group's
// log holds only its own sessions' commands, and a group's followers
// apply them too.
func TestGroupsCycleIndependently(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) { cycleIndependently(t, replicas) })
	}
}

func cycleIndependently(t *testing.T, replicas int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gs, err := groupsim.Open(ctx, t.TempDir(), 3, replicas)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := gs.Close(); err != nil {
			t.Error(err)
		}
	}()
	// Sessions for names of groups 0 and 1 only: group 2 must see none of
	// their entries.
	var sessions []*groupsim.Session
	used := map[int]bool{}
	for i := 0; len(used) < 2 && i < 1000; i++ {
		name := fmt.Sprintf("lock-%d", i)
		if gs.Placement.Group(name) == 2 {
			continue
		}
		s, err := gs.OpenSession(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if s.Group != gs.Placement.Group(s.Name) {
			t.Fatalf("%q: session in group %d, placement says %d", s.Name, s.Group, gs.Placement.Group(s.Name))
		}
		used[s.Group] = true
		sessions = append(sessions, s)
	}
	if len(used) < 2 {
		t.Fatalf("1000 names reached only groups %v", used)
	}
	before := make([]uint64, gs.Len())
	for g := range gs.Len() {
		before[g] = gs.Leader(g).AppliedIndex()
	}
	last := map[int]uint64{}
	cycles := make([]int, gs.Len())
	for round := range 3 {
		for _, s := range sessions {
			tok, err := s.Cycle(ctx)
			if err != nil {
				t.Fatalf("round %d, %q in group %d: %v", round, s.Name, s.Group, err)
			}
			if tok <= last[s.Group] {
				t.Fatalf("group %d: token %d after %d", s.Group, tok, last[s.Group])
			}
			last[s.Group] = tok
			cycles[s.Group]++
		}
	}
	// A cycle is two entries (acquire, release) in its own group (the
	// leader may add its own, such as a barrier) and none in the others.
	for g := range gs.Len() {
		got, want := gs.Leader(g).AppliedIndex()-before[g], uint64(2*cycles[g])
		if got < want || (want == 0 && got != 0) {
			t.Errorf("group %d applied %d entries for %d cycles, want %d", g, got, cycles[g], want)
		}
		if n := len(gs.Members(g)); n != replicas {
			t.Fatalf("group %d has %d members, want %d", g, n, replicas)
		}
		for _, m := range gs.Members(g)[1:] {
			want := gs.Leader(g).AppliedIndex()
			for deadline := time.Now().Add(10 * time.Second); m.AppliedIndex() < want && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if got := m.AppliedIndex(); got < want {
				t.Errorf("group %d: member %s applied up to %d, the leader %d", g, m.Self().ID, got, want)
			}
			if self := m.Self(); !self.Member || !self.Voter {
				t.Errorf("group %d: %s is not a voter: %+v", g, self.ID, self)
			}
		}
	}
	for _, s := range sessions {
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
