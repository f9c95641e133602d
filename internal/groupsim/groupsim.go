// Package groupsim runs several independent dlm lock groups in one process,
// each a real single-node hashicorp/raft group (server/node: raft-wal log,
// dlm's FSM and lock state machine) in its own folder, and routes lock
// names to them through a placement table of hash slots. It is the
// simulation behind docs/SCALING.md: how throughput grows when the locks
// are spread over G Raft groups instead of one.
package groupsim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/dlm/dlm/server/node"
)

// Slots is the number of hash slots names fall into. The placement table
// maps slots, not names, to groups, so that a group's share can move a slot
// at a time (docs/SCALING.md); 256 slots spread evenly over 1, 2, 4 and 8
// groups.
const Slots = 256

// Slot is the hash slot of a lock name: FNV-1a of its bytes modulo Slots.
func Slot(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int(h.Sum32() % Slots)
}

// Placement maps each slot to the group that owns it.
type Placement [Slots]int

// Even spreads the slots over g groups round-robin.
func Even(g int) Placement {
	var p Placement
	for s := range p {
		p[s] = s % g
	}
	return p
}

// Group is the group that owns name.
func (p *Placement) Group(name string) int { return p[Slot(name)] }

// Groups is G running lock groups and the placement of names over them.
type Groups struct {
	Placement Placement
	nodes     []*node.Node
}

// Open starts g single-node groups with their data under dir (one folder
// each) and waits until each leads.
func Open(ctx context.Context, dir string, g int) (*Groups, error) {
	if g < 1 || g > Slots {
		return nil, fmt.Errorf("groupsim: %d groups: want 1 to %d", g, Slots)
	}
	gs := &Groups{Placement: Even(g)}
	for i := range g {
		cfg := node.DefaultConfig()
		cfg.DataDir = filepath.Join(dir, fmt.Sprintf("group%d", i))
		cfg.ID = fmt.Sprintf("group%d", i)
		cfg.Logger = slog.New(slog.DiscardHandler)
		cfg.RaftLog = io.Discard
		// A small segment: G groups each preallocate one.
		cfg.LogSegmentSize = 1 << 20
		cfg.MinFreeSpace = node.DefaultMinFreeSpace(cfg.MaxSectionBytes, cfg.LogSegmentSize)
		n, err := node.Open(cfg)
		if err != nil {
			return nil, errors.Join(err, gs.Close())
		}
		gs.nodes = append(gs.nodes, n)
	}
	for _, n := range gs.nodes {
		if err := n.AwaitLeader(ctx); err != nil {
			return nil, errors.Join(err, gs.Close())
		}
	}
	return gs, nil
}

// Len is the number of groups.
func (gs *Groups) Len() int { return len(gs.nodes) }

// Node is group i's node.
func (gs *Groups) Node(i int) *node.Node { return gs.nodes[i] }

// Close stops every group.
func (gs *Groups) Close() error {
	var errs []error
	for _, n := range gs.nodes {
		errs = append(errs, n.Shutdown())
	}
	gs.nodes = nil
	return errors.Join(errs...)
}

// Session is one client's session in the group that owns its lock's name,
// as a client library holds one session per group it uses.
type Session struct {
	// Name is the lock the session cycles; Group the group that owns it.
	Name  string
	Group int
	n     *node.Node
	id    uint64
	sec   string
	seq   uint64
}

// OpenSession opens a session for name in the group that owns it.
func (gs *Groups) OpenSession(ctx context.Context, name string) (*Session, error) {
	g := gs.Placement.Group(name)
	n := gs.nodes[g]
	s, err := n.OpenSession(ctx, 0, "groupsim")
	if err != nil {
		return nil, err
	}
	return &Session{Name: name, Group: g, n: n, id: s.ClientID, sec: s.Secret}, nil
}

func (s *Session) caller() node.Caller {
	s.seq++
	return node.Caller{ClientID: s.id, Secret: s.sec, Seq: s.seq, AckedBelow: s.seq}
}

// Cycle acquires the session's lock, waiting in its queue, and releases it:
// two Raft commits in the owning group. It returns the grant's token.
func (s *Session) Cycle(ctx context.Context) (uint64, error) {
	// The acquire waits in the queue when other sessions of the group
	// hold the lock; a timed-out wait repeats with the same seq, keeping
	// its place.
	c := s.caller()
	for {
		g, err := s.n.Acquire(ctx, c, false, 5*time.Second)
		if err != nil {
			return 0, err
		}
		if g.Granted {
			if _, err := s.n.Release(ctx, s.caller(), g.Token, false, nil, nil); err != nil {
				return 0, err
			}
			return g.Token, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}

// Close ends the session.
func (s *Session) Close(ctx context.Context) error {
	return s.n.Close(ctx, s.caller())
}
