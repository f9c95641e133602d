package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"slices"

	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

// freeLoopback returns a loopback address that was free a moment ago.
func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// currentLeader waits for one of nodes to lead.
func currentLeader(t *testing.T, nodes []*node.Node, within time.Duration) *node.Node {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			err := n.AwaitLeader(ctx)
			cancel()
			if err == nil {
				return n
			}
		}
	}
	t.Fatalf("no leader within %v", within)
	return nil
}

func storageFault(t *testing.T, n *node.Node) string {
	t.Helper()
	st, err := n.Status(context.Background(), node.StatusQuery{})
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st.Node.StorageFault
}

// TestLogDiskFullInCluster fills the leader's log disk in a three-node
// cluster: the others carry on, the full node says why it cannot follow,
// and once freed it catches up by itself and can lead a majority.
func TestLogDiskFullInCluster(t *testing.T) {
	var peers []node.Peer
	for i := range 3 {
		peers = append(peers, node.Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: freeLoopback(t)})
	}
	disks := map[*node.Node]*servertest.FullDisk{}
	var nodes []*node.Node
	for _, p := range peers {
		disk := servertest.NewFullDisk(false)
		n, err := node.Open(servertest.Config(node.Config{
			ID: p.ID, RaftAddr: p.RaftAddr, Peers: peers, DataDir: t.TempDir(),
			LogFS: disk, LogSegmentSize: 64 << 10, DefaultLease: time.Minute, MinFreeSpace: -1,
			Logger: slog.New(slog.DiscardHandler), RaftLog: io.Discard,
		}))
		if err != nil {
			t.Fatalf("open %s: %v", p.ID, err)
		}
		disks[n] = disk
		nodes = append(nodes, n)
	}
	up := map[*node.Node]bool{}
	for _, n := range nodes {
		up[n] = true
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if up[n] {
				n.Shutdown()
			}
		}
	})
	running := func() []*node.Node {
		var out []*node.Node
		for _, n := range nodes {
			if up[n] {
				out = append(out, n)
			}
		}
		return out
	}

	full := currentLeader(t, nodes, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s, err := full.OpenSession(ctx, 0, "writer")
	cancel()
	if err != nil {
		t.Fatalf("open session: %v", err)
	}
	w := &writer{n: full, id: s.ClientID, secret: s.Secret}
	i := 0
	// section runs one section on whichever node leads.
	section := func() error {
		w.n = currentLeader(t, running(), 20*time.Second)
		err := w.section(record(i))
		i++
		return err
	}
	for range 5 {
		if err := section(); err != nil {
			t.Fatalf("section: %v", err)
		}
	}

	disks[full].Full.Store(true)
	// The cluster carries on without the full node: sections commit on
	// another leader, while the full one reports its log's state.
	after, deadline := 0, time.Now().Add(60*time.Second)
	for after < 20 || !strings.Contains(storageFault(t, full), "disk is full") {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: %d sections on another leader, full node's fault %q", after, storageFault(t, full))
		}
		if err := section(); err == nil && w.n != full {
			after++
		}
	}
	if disks[full].Refused.Load() == 0 {
		t.Fatalf("no write was refused")
	}

	// Freed, the node catches up by itself.
	disks[full].Full.Store(false)
	leader := currentLeader(t, running(), 20*time.Second)
	for range 5 {
		if err := section(); err != nil {
			t.Fatalf("section: %v", err)
		}
	}
	want, err := leader.Status(context.Background(), node.StatusQuery{})
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		st, err := full.Status(context.Background(), node.StatusQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if st.Node.StorageFault == "" && st.Node.AppliedIndex >= want.Node.CommitIndex &&
			slices.Equal(st.Files, want.Files) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the freed node did not catch up: fault %q, applied %d of %d", st.Node.StorageFault, st.Node.AppliedIndex, want.Node.CommitIndex)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Its log is whole: with the leader stopped, it and the third node
	// form the majority and carry on.
	if leader != full {
		leader.Shutdown()
		up[leader] = false
	}
	for range 5 {
		if err := section(); err != nil {
			t.Fatalf("section after the leader stopped: %v", err)
		}
	}
	w.check(t)
	t.Logf("%d sections acknowledged of %d tried; %d writes refused", len(w.acked), len(w.tried), disks[full].Refused.Load())
}
