// Package groupsim runs several independent dlm lock groups in one process,
// each a real hashicorp/raft group of one or three dlm nodes (server/node:
// raft-wal log, dlm's FSM and lock state machine, each member in its own
// folder, members joined over loopback TCP), and routes lock
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
	// nodes[i] are group i's members, its leader first.
	nodes [][]*node.Node
}

// Open starts g groups of replicas members each (1, or 3 joined over Raft
// on loopback TCP, as `dlm serve --join` grows a cluster), with their data
// under dir (one folder per member), and waits until each group's first
// member leads it.
func Open(ctx context.Context, dir string, g, replicas int) (*Groups, error) {
	switch {
	case g < 1 || g > Slots:
		return nil, fmt.Errorf("groupsim: %d groups: want 1 to %d", g, Slots)
	case replicas != 1 && replicas != 3:
		return nil, fmt.Errorf("groupsim: %d replicas: want 1 or 3", replicas)
	}
	gs := &Groups{Placement: Even(g)}
	for i := range g {
		var members []*node.Node
		for r := range replicas {
			n, err := node.Open(memberConfig(dir, i, r, replicas))
			if err != nil {
				return nil, errors.Join(err, shutdown(members), gs.Close())
			}
			members = append(members, n)
		}
		gs.nodes = append(gs.nodes, members)
		if err := members[0].AwaitLeader(ctx); err != nil {
			return nil, errors.Join(err, gs.Close())
		}
		for _, m := range members[1:] {
			if _, err := members[0].AddMember(ctx, m.Self().ID, m.RaftAddr(), "", true); err != nil {
				return nil, errors.Join(err, gs.Close())
			}
		}
	}
	return gs, nil
}

func memberConfig(dir string, group, member, replicas int) node.Config {
	cfg := node.DefaultConfig()
	cfg.ID = fmt.Sprintf("g%dn%d", group, member)
	cfg.DataDir = filepath.Join(dir, cfg.ID)
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.RaftLog = io.Discard
	// A small segment: every member preallocates one.
	cfg.LogSegmentSize = 1 << 20
	cfg.MinFreeSpace = node.DefaultMinFreeSpace(cfg.MaxSectionBytes, cfg.LogSegmentSize)
	if replicas > 1 {
		// Slower than serve's timings: G groups of three members share a
		// busy machine, and a missed heartbeat must not start an election
		// in the middle of a run.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, time.Second
		cfg.RaftAddr = "127.0.0.1:0"
		cfg.Join = member > 0
	}
	return cfg
}

func shutdown(members []*node.Node) error {
	var errs []error
	for _, n := range members {
		errs = append(errs, n.Shutdown())
	}
	return errors.Join(errs...)
}

// Len is the number of groups.
func (gs *Groups) Len() int { return len(gs.nodes) }

// Leader is group i's leader (its first member, which no test stops).
func (gs *Groups) Leader(i int) *node.Node { return gs.nodes[i][0] }

// Members is group i's members, its leader first.
func (gs *Groups) Members(i int) []*node.Node { return gs.nodes[i] }

// Close stops every group.
func (gs *Groups) Close() error {
	var errs []error
	for _, members := range gs.nodes {
		errs = append(errs, shutdown(members))
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
	n := gs.nodes[g][0]
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

// Cycle acquires the session's named lock exclusively, waiting in its
// queue, and releases it: two Raft commits in the owning group. It returns
// the grant's token.
func (s *Session) Cycle(ctx context.Context) (uint64, error) {
	want := node.Want{Lock: &s.Name}
	// The acquire waits in the queue when other sessions hold the lock; a
	// timed-out wait repeats with the same seq, keeping its place.
	c := s.caller()
	for {
		g, err := s.n.AcquireLock(ctx, c, want, false, 5*time.Second)
		if err != nil {
			return 0, err
		}
		if g.Granted {
			if _, err := s.n.ReleaseLock(ctx, s.caller(), &s.Name, g.Token, false, nil, nil); err != nil {
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
