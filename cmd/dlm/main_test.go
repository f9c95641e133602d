package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/internal/e2e"
	"github.com/dlm/dlm/internal/leakcheck"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/servertest"
)

// dlmBinary is the dlm command built once for the end-to-end tests, which
// run it as real processes and kill them.
var dlmBinary string

func TestMain(m *testing.M) {
	if os.Getenv(peerEnv) != "" {
		// This process is a client peer started by a test (see peer_test.go).
		os.Exit(runPeer(os.Stdin, os.Stdout))
	}
	// Every server a test starts (processes inherit it, and servertest's
	// use the same) and every command it runs share one admin token, as
	// an operator's exported DLM_TOKEN would. Tests of the token's other
	// sources set it empty.
	os.Setenv(tokenEnv, servertest.AdminToken)
	dir, err := os.MkdirTemp("", "dlm-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if dlmBinary, err = e2e.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Processes the tests start are not goroutines; the check counts what
	// runs in this process: the commands run in it, servertest's servers,
	// the proxies and the waits on child processes.
	before := leakcheck.Goroutines()
	code := m.Run()
	code = leakcheck.After(code, before)
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address nothing listens on, for an address
// where nothing must answer. A server gets "127.0.0.1:0" instead (the
// harness learns the port it chose).
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := e2e.UnusedAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// freeAddrs reserves n loopback addresses for nodes that must be named
// before they start (a --peers cluster) and restart on them.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs, err := e2e.ReserveAddrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// clusterNode is one `dlm serve` process (e2e.Node) whose harness failures
// fail the test.
type clusterNode struct {
	*e2e.Node
	t *testing.T
	// single: a node started alone or joining, whose start waits until
	// it knows a leader, and if it leads, until it takes writes.
	single bool
}

// newNode prepares a node with data in dir on addr (a port 0 is learned at
// the first start) with serve's args after --listen and --data; the test's
// cleanup kills it and, if the test failed, shows its log.
func newNode(t *testing.T, id, addr, dir string, args ...string) *clusterNode {
	t.Helper()
	n := &clusterNode{t: t, Node: &e2e.Node{ID: id, Bin: dlmBinary, Addr: addr, Data: dir,
		Args: append([]string{"-v", "--min-lease", "100ms"}, args...), LogPath: filepath.Join(t.TempDir(), id+".log")}}
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			t.Logf("%s (%s) log, last part:\n%s", n.ID, n.URL(), e2e.Tail(n.Log(), 60))
		}
	})
	return n
}

// startServer runs `dlm serve` on addr with data in dir (alone, or joining
// with --join in args) and waits until it is ready.
func startServer(t *testing.T, addr, dir string, args ...string) *clusterNode {
	t.Helper()
	n := newNode(t, "node1", addr, dir, args...)
	n.single = true
	n.start()
	return n
}

// singleNode is a one-node "cluster" on dir, not yet started.
func singleNode(t *testing.T, dir string, args ...string) *clusterNode {
	t.Helper()
	return newNode(t, "node1", "127.0.0.1:0", dir, args...)
}

// start runs the node (again) and waits until it serves, and for a single
// node until it is ready (e2e.Node.AwaitReady).
func (n *clusterNode) start() {
	n.t.Helper()
	if err := n.Start(); err != nil {
		n.t.Fatal(err)
	}
	if n.single {
		if err := n.AwaitReady(20 * time.Second); err != nil {
			n.t.Fatal(err)
		}
	}
}

// status is the node's own view (Status with consistent=false).
func (n *clusterNode) status() (*dlmv1.StatusResponse, error) {
	return n.Status(context.Background())
}

// testCluster is a fixed cluster of dlm serve processes on loopback.
type testCluster struct {
	t      *testing.T
	nodes  []*clusterNode
	reader *client.Reader
}

// startCluster boots size nodes with --peers and waits until they all name
// the same leader.
func startCluster(t *testing.T, size int, args ...string) *testCluster {
	t.Helper()
	ec, err := e2e.NewPeersCluster(dlmBinary, t.TempDir(), size, append([]string{"-v", "--min-lease", "100ms"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*clusterNode
	for _, n := range ec.Nodes {
		nodes = append(nodes, &clusterNode{Node: n, t: t})
	}
	c := clusterOf(t, nodes)
	for _, n := range c.nodes {
		n.start()
	}
	c.awaitLeader()
	return c
}

// clusterOf makes a test cluster of nodes (not started yet): a Reader over
// them, and a cleanup that kills them and shows their logs if the test
// failed.
func clusterOf(t *testing.T, nodes []*clusterNode) *testCluster {
	t.Helper()
	c := &testCluster{t: t, nodes: nodes}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Kill()
		}
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("%s (%s) log, last part:\n%s", n.ID, n.URL(), e2e.Tail(n.Log(), 60))
			}
		}
	})
	var err error
	if c.reader, err = client.NewReader(c.urls(), client.WithRetryBudget(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

// e2e is the harness's view of the cluster's current nodes.
func (c *testCluster) e2e() *e2e.Cluster {
	ec := &e2e.Cluster{}
	for _, n := range c.nodes {
		ec.Nodes = append(ec.Nodes, n.Node)
	}
	return ec
}

func (c *testCluster) urls() []string { return c.e2e().URLs() }

// others returns the nodes other than n, in order.
func (c *testCluster) others(n *clusterNode) []*clusterNode {
	var out []*clusterNode
	for _, o := range c.nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

func (c *testCluster) wrap(n *e2e.Node) *clusterNode {
	for _, o := range c.nodes {
		if o.Node == n {
			return o
		}
	}
	return nil
}

// awaitLeader waits until every running node names the same leader and that
// node says it leads, and returns it.
func (c *testCluster) awaitLeader() *clusterNode {
	c.t.Helper()
	l, err := c.e2e().AwaitLeader(context.Background(), 20*time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.wrap(l)
}

// commitIndex is the leader's commit index.
func (c *testCluster) commitIndex(leader *clusterNode) uint64 {
	c.t.Helper()
	st, err := leader.status()
	if err != nil {
		c.t.Fatalf("status of %s: %v", leader.ID, err)
	}
	return st.GetNode().GetCommitIndex()
}

// awaitCaughtUp waits until each of nodes has applied everything the leader
// had committed when called.
func (c *testCluster) awaitCaughtUp(nodes ...*clusterNode) {
	c.t.Helper()
	var ns []*e2e.Node
	for _, n := range nodes {
		ns = append(ns, n.Node)
	}
	if err := c.e2e().AwaitCaughtUp(context.Background(), 20*time.Second, ns...); err != nil {
		c.t.Fatal(err)
	}
}

// awaitReplicasIdentical waits until every node, all of them running, has
// applied the same index with the same state, and then requires
// byte-identical files.
func (c *testCluster) awaitReplicasIdentical() {
	c.t.Helper()
	for _, n := range c.nodes {
		if !n.Running() || n.Paused() {
			c.t.Fatalf("%s is not running: cannot compare its files", n.ID)
		}
	}
	c.awaitCaughtUp(c.nodes...)
	diffs, err := c.e2e().AwaitReplicas(context.Background(), 20*time.Second, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if len(diffs) > 0 {
		c.t.Fatalf("replicas differ: %s", strings.Join(diffs, "; "))
	}
}

// pollUntil checks cond every 20ms until it holds, failing the test with
// cond's last explanation once limit has passed.
func pollUntil(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	if err := e2e.Await(context.Background(), limit, 20*time.Millisecond, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// awaitLeaderKnown polls Status until the server names a leader (itself, for
// a single node), the process exits, or the time is up.
func awaitLeaderKnown(url string, limit time.Duration, exited <-chan struct{}) error {
	return awaitLeaderKnownVia(http.DefaultClient, url, limit, exited)
}

// awaitLeaderKnownVia is awaitLeaderKnown through hc (an https:// server's
// CA).
func awaitLeaderKnownVia(hc connect.HTTPClient, url string, limit time.Duration, exited <-chan struct{}) error {
	// With the server's admin token (DLM_TOKEN), in case it needs one for
	// reads.
	c := dlmv1connect.NewLockServiceClient(hc, url, connect.WithInterceptors(auth.Bearer(os.Getenv(tokenEnv))))
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := c.Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{}))
		cancel()
		if err == nil && res.Msg.GetNode().GetLeaderUrl() != "" {
			return nil
		}
		last = err
		select {
		case <-exited:
			return errors.New("the process exited")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("no leader after %v: %v", limit, last)
}

// readFile reads a file through the API.
func readFile(t *testing.T, url, name string) string {
	t.Helper()
	c := dlmv1connect.NewLockServiceClient(http.DefaultClient, url)
	res, err := c.ReadFile(context.Background(), connect.NewRequest(&dlmv1.ReadFileRequest{File: name}))
	if err != nil {
		t.Fatalf("ReadFile %s: %v", name, err)
	}
	return string(res.Msg.GetData())
}

// lines reads a process's output line by line into a channel.
func lines(r io.Reader) <-chan string {
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- strings.TrimSpace(sc.Text())
		}
	}()
	return ch
}
