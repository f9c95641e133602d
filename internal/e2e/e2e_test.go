package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/internal/leakcheck"
)

var bin string

func TestMain(m *testing.M) {
	// The nodes and the harness's calls share one admin token, as in the
	// tests that use the harness.
	os.Setenv("DLM_TOKEN", "e2e-test-admin-token-0123456789abcdef")
	dir, err := os.MkdirTemp("", "dlm-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if bin, err = Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	before := leakcheck.Goroutines()
	code := m.Run()
	code = leakcheck.After(code, before)
	os.RemoveAll(dir)
	os.Exit(code)
}

func single(t *testing.T) *Node {
	t.Helper()
	dir := t.TempDir()
	n := &Node{ID: "node1", Bin: bin, Addr: "127.0.0.1:0", Data: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, "node1.log")}
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			t.Logf("log:\n%s", Tail(n.Log(), 40))
		}
	})
	return n
}

// A node on port 0 is reached on the port it printed; after kill -9 it
// comes back on the same port and data; a paused node answers nothing until
// it is resumed; Stop ends it by SIGTERM.
func TestNodeLifecycle(t *testing.T) {
	ctx := context.Background()
	n := single(t)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(n.Addr, ":0") || !strings.HasPrefix(n.URL(), "http://127.0.0.1:") {
		t.Fatalf("address %q, URL %q: the port was not learned", n.Addr, n.URL())
	}
	if err := n.AwaitLeaderKnown(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(ctx, []string{n.URL()}, client.WithRetryBudget(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	lk, err := cl.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Append(ctx, "file_0", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatal(err)
	}
	cl.Close(ctx)

	addr, pid := n.Addr, n.Pid()
	n.Kill()
	if n.Running() {
		t.Fatal("running after Kill")
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if n.Addr != addr || n.Pid() == pid || n.Incarnation() != 2 {
		t.Fatalf("restarted on %s (pid %d, incarnation %d), want %s, a new process, incarnation 2", n.Addr, n.Pid(), n.Incarnation(), addr)
	}
	if err := n.AwaitLeaderKnown(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	// A restarted node applies its log again once it leads (its first
	// entry commits the rest), so the files come back soon after, not at once.
	if err := Await(ctx, 20*time.Second, 20*time.Millisecond, func() (bool, string) {
		files, err := ReplicaFiles(n.Data)
		return err == nil && string(files["file_0"]) == "kept", fmt.Sprintf("file_0 %q, %v", files["file_0"], err)
	}); err != nil {
		t.Fatalf("files after the restart: %v", err)
	}

	if err := n.Pause(); err != nil {
		t.Fatal(err)
	}
	if !n.Paused() {
		t.Fatal("not paused after Pause")
	}
	if _, err := n.Status(ctx); err == nil {
		t.Fatal("a paused node answered Status")
	}
	if err := n.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := n.AwaitServing(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !n.Stop(20 * time.Second) {
		t.Fatal("SIGTERM did not end the node")
	}
}

// Launch reports a node that exits at start instead of waiting out its
// limit.
func TestLaunchSeesExit(t *testing.T) {
	n := single(t)
	n.Args = []string{"--no-such-flag"}
	start := time.Now()
	if err := n.Launch(); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("Launch of a node that cannot start: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Launch took %v to see the exit", d)
	}
}

// A three-node cluster elects a leader, fails over when it is killed, and
// its replicas converge to identical files once it is back; a replica
// changed on disk is reported.
func TestClusterFailoverAndReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := NewCluster(bin, t.TempDir(), 3, "--min-lease", "100ms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Kill()
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("%s log:\n%s", n.ID, Tail(n.Log(), 30))
			}
		}
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The nodes joined on ports they chose, and the harness learned them.
	st, err := c.Nodes[0].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if strings.HasSuffix(n.Addr, ":0") || strings.HasSuffix(n.RaftAddr, ":0") || n.RaftAddr == "" {
			t.Fatalf("%s: API %s, Raft %s: a port was not learned", n.ID, n.Addr, n.RaftAddr)
		}
		found := false
		for _, m := range st.GetMembers() {
			found = found || (m.GetId() == n.ID && m.GetRaftAddress() == n.RaftAddr && m.GetSuffrage() == "voter")
		}
		if !found {
			t.Fatalf("%s at Raft %s is not a voter there: %v", n.ID, n.RaftAddr, st.GetMembers())
		}
	}
	cl, err := client.New(ctx, c.URLs(), client.WithRetryBudget(45*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close(ctx)
	section := func(text string) {
		t.Helper()
		lk, err := cl.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := lk.Append(ctx, "file_1", []byte(text)); err != nil {
			t.Fatal(err)
		}
		if err := lk.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	section("one,")
	old, err := c.AwaitLeader(ctx, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	old.Kill()
	leader, err := c.AwaitLeader(ctx, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if leader == old {
		t.Fatal("the killed node still leads")
	}
	section("two,")
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	diffs, err := c.AwaitReplicas(ctx, 30*time.Second, nil)
	if err != nil || len(diffs) > 0 {
		t.Fatalf("replicas: %v %v", diffs, err)
	}
	files, _ := ReplicaFiles(old.Data)
	if string(files["file_1"]) != "one,two," {
		t.Fatalf("file_1 on %s: %q", old.ID, files["file_1"])
	}

	// The comparison is not blind: a byte changed behind a replica's back
	// is a difference.
	f := c.Others(leader)[0]
	if err := os.WriteFile(filepath.Join(f.Data, "files", "file_1"), []byte("one,twO,"), 0o644); err != nil {
		t.Fatal(err)
	}
	diffs = CompareFiles(c.Nodes)
	if len(diffs) == 0 {
		t.Fatalf("CompareFiles after a change on %s found nothing", f.ID)
	}
	for _, d := range diffs {
		if !strings.Contains(d, "file_1") || !strings.Contains(d, f.ID) {
			t.Fatalf("CompareFiles after a change on %s: %v", f.ID, diffs)
		}
	}
}

// A node behind a Proxy is cut off while its Link is cut and black-holed
// while it is black-holed, and reachable again once the link is healed.
func TestProxyLink(t *testing.T) {
	n := single(t)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	link := NewLink()
	p, err := NewProxy(n.Addr, nil, link)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		link.Set(LinkOK, 0)
		p.Close()
	}()
	via := &Node{ID: "via-proxy", Addr: p.Addr()}
	ctx := context.Background()
	if _, err := via.Status(ctx); err != nil {
		t.Fatalf("through a healthy link: %v", err)
	}
	for _, mode := range []LinkMode{LinkCut, LinkBlackhole} {
		link.Set(mode, 0)
		if _, err := via.Status(ctx); err == nil {
			t.Fatalf("mode %d: Status crossed the link", mode)
		}
		link.Set(LinkOK, 0)
		if err := Await(ctx, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
			_, err := via.Status(ctx)
			return err == nil, fmt.Sprint(err)
		}); err != nil {
			t.Fatalf("after healing mode %d: %v", mode, err)
		}
	}
}
