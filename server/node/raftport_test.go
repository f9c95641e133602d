package node_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

// A node given Raft port 0 binds a port, advertises it and records it in
// its configuration; a restart with port 0 is refused (its peers know it by
// the first port), one with the learned address runs.
func TestRaftPortZeroIsLearned(t *testing.T) {
	dir := t.TempDir()
	cfg := servertest.Config(node.Config{
		ID: "n1", DataDir: dir, RaftAddr: "127.0.0.1:0", ClientURL: "http://127.0.0.1:1",
		Logger: slog.New(slog.DiscardHandler), RaftLog: io.Discard,
	})
	n := openNode(t, cfg)
	addr := n.RaftAddr()
	if addr == "" || strings.HasSuffix(addr, ":0") || !strings.HasPrefix(addr, "127.0.0.1:") {
		n.Shutdown()
		t.Fatalf("RaftAddr() = %q, want the bound 127.0.0.1 port", addr)
	}
	members, err := n.Members()
	if err != nil || len(members) != 1 || members[0].RaftAddr != addr {
		n.Shutdown()
		t.Fatalf("members %+v (%v), want n1 at %s", members, err, addr)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}

	if n, err := node.Open(cfg); err == nil {
		n.Shutdown()
		t.Fatal("a restart with Raft port 0 was accepted")
	} else if !strings.Contains(err.Error(), "port 0") {
		t.Fatalf("restart with port 0: %v, want it to explain port 0", err)
	}

	cfg.RaftAddr = addr
	n = openNode(t, cfg)
	defer n.Shutdown()
	if got := n.RaftAddr(); got != addr {
		t.Fatalf("restarted on %s, RaftAddr() = %s", addr, got)
	}
}

// Port 0 cannot be advertised on an address that names no interface.
func TestRaftPortZeroNeedsAHost(t *testing.T) {
	cfg := servertest.Config(node.Config{
		DataDir: t.TempDir(), RaftAddr: "0.0.0.0:0",
		Logger: slog.New(slog.DiscardHandler), RaftLog: io.Discard,
	})
	if n, err := node.Open(cfg); err == nil {
		n.Shutdown()
		t.Fatal("Raft on 0.0.0.0:0 was accepted")
	} else if !strings.Contains(err.Error(), "host to advertise") {
		t.Fatalf("0.0.0.0:0: %v", err)
	}
}
