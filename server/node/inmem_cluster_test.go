package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// inmemCluster is three real nodes (raft-wal logs, files, the leader's
// memory) whose Raft runs over raft.NewInmemTransport, joined to each other.
type inmemCluster struct {
	nodes  []*Node
	trans  []*raft.InmemTransport
	closed map[*Node]bool
}

func startInmemCluster(t *testing.T, lease time.Duration) *inmemCluster {
	t.Helper()
	return startInmemClusterWith(t, lease, nil)
}

// startInmemClusterWith is startInmemCluster with each node's Config
// changed by set.
func startInmemClusterWith(t *testing.T, lease time.Duration, set func(*Config)) *inmemCluster {
	t.Helper()
	c := &inmemCluster{closed: make(map[*Node]bool)}
	var peers []Peer
	for i := range 3 {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("n%d", i+1)))
		c.trans = append(c.trans, tr)
		peers = append(peers, Peer{ID: string(addr), RaftAddr: string(addr)})
	}
	for _, a := range c.trans {
		for _, b := range c.trans {
			if a != b {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	for i, p := range peers {
		cfg := DefaultConfig()
		cfg.ID, cfg.Peers, cfg.DataDir, cfg.transport = p.ID, peers, t.TempDir(), c.trans[i]
		cfg.DefaultLease, cfg.MinFreeSpace = lease, -1
		cfg.Logger, cfg.RaftLog = slog.New(slog.DiscardHandler), io.Discard
		if set != nil {
			set(&cfg)
		}
		n, err := Open(cfg)
		if err != nil {
			t.Fatalf("open %s: %v", p.ID, err)
		}
		c.nodes = append(c.nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(t, n)
		}
	})
	return c
}

// stop shuts a node down and cuts it off, as a crashed machine is.
func (c *inmemCluster) stop(t *testing.T, n *Node) {
	t.Helper()
	if c.closed[n] {
		return
	}
	c.closed[n] = true
	for _, tr := range c.trans {
		tr.Disconnect(n.trans.LocalAddr())
	}
	if err := n.Shutdown(); err != nil {
		t.Errorf("shutdown %s: %v", n.cfg.ID, err)
	}
}

// leader waits, up to 30 s, for exactly one running node to lead, and
// returns it.
func (c *inmemCluster) leader(t *testing.T) *Node {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var leaders []*Node
		for _, n := range c.nodes {
			if t, _ := n.lead.Current(); !c.closed[n] && t != nil {
				leaders = append(leaders, n)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d leaders after 30s; want 1", len(leaders))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// replicated waits, up to 30 s, until every running node has applied the
// leader's lock state: the same applied lock-state index and lock.
func (c *inmemCluster) replicated(t *testing.T, leader *Node) {
	t.Helper()
	view := func(n *Node) (index uint64, lv lockstate.LockView) {
		n.fsm.View(func(m *lockstate.Machine) { index, lv = m.AppliedIndex(), m.Lock() })
		return index, lv
	}
	want, wantLock := view(leader)
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.nodes {
		for !c.closed[n] {
			// Watch before reading, so an apply in between is not missed.
			applied := n.watchApplied()
			index, lv := view(n)
			if index == want && lv.Holder == wantLock.Holder && lv.Token == wantLock.Token && lv.StagedAppends == wantLock.StagedAppends {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s applied lock state %d (%+v) after 30s; the leader %d (%+v)", n.cfg.ID, index, lv, want, wantLock)
			}
			select {
			case <-applied:
			case <-time.After(time.Second): // re-check the deadline
			}
		}
	}
}

func fileOn(t *testing.T, n *Node, name string) string {
	t.Helper()
	b, _, _, err := n.fsm.ReadFile(name, 0, 1<<20)
	if err != nil {
		t.Fatalf("%s: read %s: %v", n.cfg.ID, name, err)
	}
	return string(b)
}

func reasonOf(err error) dlmv1.ErrorReason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// A three-node cluster on in-memory transports elects one leader,
// replicates a whole lock cycle to every node, and after the leader crashes
// the new leader still has the lock, held by the same session under the
// same token, with a full fresh lease; the holder finishes its critical
// section there.
func TestInmemClusterKeepsTheLockAcrossLeaders(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const lease = 20 * time.Second
	c := startInmemCluster(t, lease)
	leader := c.leader(t)
	for _, n := range c.nodes {
		if n == leader {
			continue
		}
		if _, err := n.OpenSession(ctx, 0, "x"); reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER {
			t.Fatalf("a follower opened a session: %v; want NOT_LEADER", err)
		}
	}

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
		t.Fatalf("acquire = %+v, %v; want granted", g, err)
	}
	if _, err := leader.Append(ctx, call(), g.Token, "file_1", []byte("A"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Release(ctx, call(), g.Token, false, nil, nil); err != nil {
		t.Fatal(err)
	}
	c.replicated(t, leader)
	for _, n := range c.nodes {
		if got := fileOn(t, n, "file_1"); got != "A" {
			t.Fatalf("%s: file_1 = %q after a replicated lock cycle; want A", n.cfg.ID, got)
		}
	}

	// Hold the lock with a staged append across the failover.
	g, err = leader.Acquire(ctx, call(), false, 0)
	if err != nil || !g.Granted {
		t.Fatalf("second acquire = %+v, %v; want granted", g, err)
	}
	if _, err := leader.Append(ctx, call(), g.Token, "file_1", []byte("B"), 1); err != nil {
		t.Fatal(err)
	}
	c.replicated(t, leader)
	old := leader
	c.stop(t, old)
	leader = c.leader(t)
	if leader == old {
		t.Fatal("the stopped node still leads")
	}
	var lv lockstate.LockView
	leader.fsm.View(func(m *lockstate.Machine) { lv = m.Lock() })
	if lv.Holder != s.ClientID || lv.Token != g.Token || lv.StagedAppends != 0 {
		t.Fatalf("new leader's lock: holder %d token %d staged %d; want %d, %d, 0 (the append lived in the old leader's memory)", lv.Holder, lv.Token, lv.StagedAppends, s.ClientID, g.Token)
	}
	if left := leader.lead.Left(s.ClientID); left < lease-5*time.Second {
		t.Fatalf("the new leader gave the holder %v of lease; want a full fresh %v", left, lease)
	}
	r, err := leader.KeepAlive(s.ClientID, s.Secret)
	if err != nil || r.Token != g.Token || r.Lease != lease {
		t.Fatalf("keepalive on the new leader = %v, %d, %v; want %v, %d", r.Lease, r.Token, err, lease, g.Token)
	}
	// A release whose counts the new leader does not hold changes nothing.
	var ne *Error
	if _, err := leader.Release(ctx, call(), g.Token, false, &Section{Appends: 1, Bytes: 1}, nil); !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE {
		t.Fatalf("release with counts the new leader lacks = %v; want SECTION_INCOMPLETE", err)
	}
	// Closing would commit the section: refused alike.
	if err := leader.Close(ctx, call()); !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE {
		t.Fatalf("close on the new leader = %v; want SECTION_INCOMPLETE", err)
	}
	// A later place is a gap; the client re-sends from place 1.
	if _, err := leader.Append(ctx, call(), g.Token, "file_1", []byte("C"), 2); !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE || ne.Staged.Appends != 0 {
		t.Fatalf("append at place 2 on the new leader = %v; want SECTION_INCOMPLETE", err)
	}
	if _, err := leader.Append(ctx, call(), g.Token, "file_1", []byte("B"), 1); err != nil {
		t.Fatal(err)
	}
	// Memory now holds part of a grant made before this leader: a release
	// without counts cannot be vouched for.
	if _, err := leader.Release(ctx, call(), g.Token, false, nil, nil); !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE || ne.Staged.Appends != 1 {
		t.Fatalf("release without counts on the new leader = %v; want SECTION_INCOMPLETE with 1 staged", err)
	}
	if o, err := leader.Append(ctx, call(), g.Token, "file_1", []byte("B"), 1); err != nil || o.Appends != 1 {
		t.Fatalf("repeated place 1 = %+v, %v; want a repeat with 1 staged", o, err)
	}
	if o, err := leader.Release(ctx, call(), g.Token, false, &Section{Appends: 1, Bytes: 1}, nil); err != nil || o.Appends != 1 {
		t.Fatalf("release under the old token on the new leader = %+v, %v", o, err)
	}
	c.replicated(t, leader)
	for _, n := range c.nodes {
		if n == old {
			continue
		}
		if got := fileOn(t, n, "file_1"); got != "AB" {
			t.Fatalf("%s: file_1 = %q; want AB", n.cfg.ID, got)
		}
	}
}
