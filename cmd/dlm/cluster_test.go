package main

// The replication scenarios of SCENARIOS.md group D, an isolated leader and
// failover timings, against clusters of real `dlm serve` processes on
// loopback: nodes are killed with SIGKILL, stalled with SIGSTOP, restarted
// on the same addresses and data, and every test ends by comparing the files
// of every replica byte for byte.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// clusterNode is one `dlm serve` process of a test cluster.
type clusterNode struct {
	t        *testing.T
	id       string
	addr     string // the API's host:port
	raftAddr string
	data     string
	args     []string
	logs     *os.File
	hc       *http.Client
	cmd      *exec.Cmd
	exited   chan struct{}
	down     bool // killed and not restarted
	stopped  bool // stalled by SIGSTOP
}

func (n *clusterNode) url() string { return "http://" + n.addr }

// api makes raw calls to this node alone, without the client's retries.
func (n *clusterNode) api() dlmv1connect.LockServiceClient {
	return dlmv1connect.NewLockServiceClient(n.hc, n.url())
}

// status asks the node for its own view (consistent=false), which every
// node gives, leader or not.
func (n *clusterNode) status() (*dlmv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := n.api().Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// start runs the process and waits until it answers Status (not until it
// knows a leader: a lone node of a cluster never does). The ports may still
// be held by the process just killed; a start that exits early is retried a
// bounded number of times.
func (n *clusterNode) start() {
	n.t.Helper()
	var err error
	for range 5 {
		cmd := exec.Command(dlmBinary, n.args...)
		cmd.Stdout, cmd.Stderr = n.logs, n.logs
		if err := cmd.Start(); err != nil {
			n.t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			close(exited)
		}()
		n.cmd, n.exited, n.down, n.stopped = cmd, exited, false, false
		if err = n.awaitAnswering(15*time.Second, exited); err == nil {
			return
		}
		n.kill()
		b, _ := os.ReadFile(n.logs.Name())
		n.t.Logf("%s did not start (%v); its log ends:\n%s", n.id, err, tailOf(string(b), 3))
		// A port may be held for a moment longer: retry after a pause.
		time.Sleep(200 * time.Millisecond)
	}
	n.t.Fatalf("%s did not come up: %v (log %s)", n.id, err, n.logs.Name())
}

func (n *clusterNode) awaitAnswering(limit time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := n.status()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer after %v: %w", limit, err)
		}
		select {
		case <-exited:
			return errors.New("the process exited")
		case <-tick.C:
		}
	}
}

// kill9 kills the node with SIGKILL: no shutdown code runs.
func (n *clusterNode) kill9() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		n.t.Fatalf("kill -9 %s: %v", n.id, err)
	}
	<-n.exited
	n.down, n.stopped = true, false
}

func (n *clusterNode) kill() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
	n.down = true
}

// stall stops the process with SIGSTOP: it keeps its sockets but answers
// nothing, to its clients or to the other nodes.
func (n *clusterNode) stall() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		n.t.Fatalf("SIGSTOP %s: %v", n.id, err)
	}
	n.stopped = true
}

func (n *clusterNode) wake() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		n.t.Fatalf("SIGCONT %s: %v", n.id, err)
	}
	n.stopped = false
}

// snapshotIndex is the index of the node's latest Raft snapshot on disk,
// 0 for none.
func (n *clusterNode) snapshotIndex() uint64 {
	n.t.Helper()
	metas, err := filepath.Glob(filepath.Join(n.data, "raft", "snapshots", "*", "meta.json"))
	if err != nil {
		n.t.Fatal(err)
	}
	var latest uint64
	for _, m := range metas {
		b, err := os.ReadFile(m)
		if err != nil {
			continue // a snapshot being written or pruned
		}
		var meta struct{ Index uint64 }
		if json.Unmarshal(b, &meta) == nil {
			latest = max(latest, meta.Index)
		}
	}
	return latest
}

// oldestLogIndex is the first index of the node's oldest log segment on
// disk (raft-wal names segment files BASEINDEX-ID.wal); 0 for none.
func (n *clusterNode) oldestLogIndex() uint64 {
	n.t.Helper()
	segs, err := filepath.Glob(filepath.Join(n.data, "raft", "wal", "*.wal"))
	if err != nil {
		n.t.Fatal(err)
	}
	var oldest uint64
	for _, s := range segs {
		var base, id uint64
		if _, err := fmt.Sscanf(filepath.Base(s), "%d-%x.wal", &base, &id); err == nil && (oldest == 0 || base < oldest) {
			oldest = base
		}
	}
	return oldest
}

// logSegments counts the node's log segment files.
func (n *clusterNode) logSegments() int {
	segs, _ := filepath.Glob(filepath.Join(n.data, "raft", "wal", "*.wal"))
	return len(segs)
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
	addrs := freeAddrs(t, 2*size)
	logDir := t.TempDir()
	// Raw calls open a new connection each, so that none is left over from
	// a process that was killed or is stalled.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	c := &testCluster{t: t}
	var peers []string
	for i := range size {
		n := &clusterNode{t: t, id: fmt.Sprintf("n%d", i+1), addr: addrs[2*i], raftAddr: addrs[2*i+1], data: t.TempDir(), hc: hc}
		logs, err := os.Create(filepath.Join(logDir, n.id+".log"))
		if err != nil {
			t.Fatal(err)
		}
		n.logs = logs
		c.nodes = append(c.nodes, n)
		peers = append(peers, n.id+"="+n.raftAddr)
	}
	for _, n := range c.nodes {
		n.args = append([]string{"serve", "-v", "--id", n.id, "--listen", n.addr, "--raft", n.raftAddr,
			"--peers", strings.Join(peers, ","), "--data", n.data, "--min-lease", "100ms"}, args...)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.kill()
		}
		for _, n := range c.nodes {
			if t.Failed() {
				b, _ := os.ReadFile(n.logs.Name())
				t.Logf("%s (%s) log, last part:\n%s", n.id, n.url(), tailOf(string(b), 60))
			}
			n.logs.Close()
		}
	})
	var err error
	if c.reader, err = client.NewReader(c.urls(), client.WithRetryBudget(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		n.start()
	}
	c.awaitLeader()
	return c
}

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago. They are taken below the kernel's ephemeral range when it is
// known: a node restarted on its ports must not find one taken by the local
// end of some outgoing connection, as happens to ports the kernel hands out.
// Every listener stays open until all are chosen, so none is given twice.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	lo, hi := 0, 0 // 0: let the kernel choose
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(b), &first, &last); err == nil && first > 12000 {
			lo, hi = 10000, first
		}
	}
	var (
		lns   []net.Listener
		addrs []string
	)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for tries := 0; len(addrs) < n; tries++ {
		port := 0
		if hi > 0 && tries < 1000 {
			port = lo + rand.IntN(hi-lo)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			if port != 0 {
				continue // taken: try another
			}
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// tailOf returns the last lines of a node's log, leaving out Raft's
// repeated complaints about a peer that is down.
func tailOf(s string, lines int) string {
	var kept []string
	skipped := 0
	for l := range strings.SplitSeq(strings.TrimRight(s, "\n"), "\n") {
		if strings.Contains(l, "failed to heartbeat") || strings.Contains(l, "failed to appendEntries") {
			skipped++
			continue
		}
		kept = append(kept, l)
	}
	return fmt.Sprintf("(%d lines about unreachable peers left out)\n%s", skipped, strings.Join(kept[max(len(kept)-lines, 0):], "\n"))
}

func (c *testCluster) urls() []string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, n.url())
	}
	return urls
}

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

// pollUntil checks cond every 20ms until it holds, failing the test with
// cond's last explanation once limit has passed.
func pollUntil(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not after %v: %s", what, limit, why)
		}
		<-tick.C
	}
}

// awaitLeader waits until every running node names the same leader and that
// node says it leads, and returns it.
func (c *testCluster) awaitLeader() *clusterNode {
	c.t.Helper()
	var leader *clusterNode
	pollUntil(c.t, 20*time.Second, "a leader every running node names", func() (bool, string) {
		leader = nil
		url := ""
		roles := make(map[*clusterNode]string)
		for _, n := range c.nodes {
			if n.down || n.stopped {
				continue
			}
			st, err := n.status()
			if err != nil {
				return false, fmt.Sprintf("%s: %v", n.id, err)
			}
			u := st.GetNode().GetLeaderUrl()
			switch {
			case u == "":
				return false, n.id + " knows no leader"
			case url != "" && u != url:
				return false, fmt.Sprintf("%s names %s, another node %s", n.id, u, url)
			}
			url = u
			roles[n] = st.GetNode().GetRole()
		}
		for n, role := range roles {
			if n.url() == url && role == "leader" {
				leader = n
				return true, ""
			}
		}
		return false, "the named leader " + url + " is not a running node that leads"
	})
	return leader
}

// commitIndex is the leader's commit index.
func (c *testCluster) commitIndex(leader *clusterNode) uint64 {
	c.t.Helper()
	st, err := leader.status()
	if err != nil {
		c.t.Fatalf("status of %s: %v", leader.id, err)
	}
	return st.GetNode().GetCommitIndex()
}

// awaitCaughtUp waits until each of nodes has applied everything the leader
// had committed when called.
func (c *testCluster) awaitCaughtUp(nodes ...*clusterNode) {
	c.t.Helper()
	commit := c.commitIndex(c.awaitLeader())
	for _, n := range nodes {
		pollUntil(c.t, 20*time.Second, n.id+" catching up to index "+fmt.Sprint(commit), func() (bool, string) {
			st, err := n.status()
			if err != nil {
				return false, err.Error()
			}
			applied := st.GetNode().GetAppliedIndex()
			return applied >= commit, fmt.Sprintf("applied %d", applied)
		})
	}
}

// awaitReplicasIdentical waits until every node, all of them running, has
// applied the leader's commit index and holds byte-identical files.
func (c *testCluster) awaitReplicasIdentical() {
	c.t.Helper()
	for _, n := range c.nodes {
		if n.down || n.stopped {
			c.t.Fatalf("%s is not running: cannot compare its files", n.id)
		}
	}
	c.awaitCaughtUp(c.nodes...)
	// The applied index counts entries handed to the state machine, which
	// may still be writing the last one: compare until equal, bounded.
	pollUntil(c.t, 10*time.Second, "byte-identical replicas", func() (bool, string) {
		diff := c.diffFiles()
		return diff == "", diff
	})
}

// diffFiles compares every node's files/file_* with the first node's and
// describes the first difference ("" for none).
func (c *testCluster) diffFiles() string {
	ref, err := replicaFiles(c.nodes[0].data)
	if err != nil {
		return err.Error()
	}
	if len(ref) == 0 {
		return c.nodes[0].id + " has no files"
	}
	for _, n := range c.nodes[1:] {
		got, err := replicaFiles(n.data)
		if err != nil {
			return err.Error()
		}
		if len(got) != len(ref) {
			return fmt.Sprintf("%s has %d files, %s %d", n.id, len(got), c.nodes[0].id, len(ref))
		}
		for name, want := range ref {
			if !bytes.Equal(got[name], want) {
				return fmt.Sprintf("%s differs: %s has %q, %s %q", name, n.id, clipForLog(got[name]), c.nodes[0].id, clipForLog(want))
			}
		}
	}
	return ""
}

func clipForLog(b []byte) []byte {
	if len(b) > 80 {
		return append(b[:80:80], "…"...)
	}
	return b
}

// replicaFiles reads a data folder's files/file_* from disk.
func replicaFiles(dataDir string) (map[string][]byte, error) {
	paths, err := filepath.Glob(filepath.Join(dataDir, "files", "file_*"))
	if err != nil {
		return nil, err
	}
	files := make(map[string][]byte, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		files[filepath.Base(p)] = b
	}
	return files, nil
}

// newClient opens a session given every node's URL, as an application
// would. Its retry budget rides out a failover.
func (c *testCluster) newClient(ctx context.Context, name string) *client.Client {
	c.t.Helper()
	cl, err := client.New(ctx, c.urls(), client.WithName(name), client.WithRetryBudget(45*time.Second))
	if err != nil {
		c.t.Fatalf("%s: %v", name, err)
	}
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		cl.Close(ctx)
	})
	return cl
}

// readFile reads a file from the leader (linearizable).
func (c *testCluster) readFile(ctx context.Context, name string) string {
	c.t.Helper()
	b, err := c.reader.ReadFile(ctx, name)
	if err != nil {
		c.t.Fatalf("ReadFile %s: %v", name, err)
	}
	return string(b)
}

// awaitQueue waits until n sessions wait in the lock's queue.
func (c *testCluster) awaitQueue(ctx context.Context, n int) {
	c.t.Helper()
	pollUntil(c.t, 10*time.Second, fmt.Sprintf("%d waiting for the lock", n), func() (bool, string) {
		st, err := c.reader.Status(ctx, true)
		if err != nil {
			return false, err.Error()
		}
		q := st.GetLock().GetQueue()
		return len(q) >= n, fmt.Sprintf("queue %v", q)
	})
}

// fileAppend is one append of a critical section.
type fileAppend struct{ file, data string }

// appendsOf appends data times times to each file in turn.
func appendsOf(data string, times int, files ...string) []fileAppend {
	var out []fileAppend
	for _, f := range files {
		for range times {
			out = append(out, fileAppend{f, data})
		}
	}
	return out
}

// sectionResult is how a critical section ended: the token of the grant
// that committed it, and how many grants it took.
type sectionResult struct {
	token    uint64
	attempts int
	err      error
}

// runSection runs one critical section: acquire, the appends, release.
// pause, when set, is called after the grant (0) and after each append (1,
// 2, …) of the first attempt, so that a test acts at exact points. A grant
// lost on the way (its lease ran out while no server answered) committed
// nothing; the section is then done again from the start, at most twice
// more.
func runSection(ctx context.Context, c *client.Client, appends []fileAppend, pause func(int)) sectionResult {
	for attempt := 1; ; attempt++ {
		token, err := sectionOnce(ctx, c, appends, pause)
		lost := errors.Is(err, client.ErrLockExpired) || errors.Is(err, client.ErrSessionExpired)
		if err == nil || !lost || attempt == 3 {
			return sectionResult{token: token, attempts: attempt, err: err}
		}
		pause = nil
	}
}

func sectionOnce(ctx context.Context, c *client.Client, appends []fileAppend, pause func(int)) (uint64, error) {
	lk, err := c.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("acquire: %w", err)
	}
	step := func(i int) {
		if pause != nil {
			pause(i)
		}
	}
	step(0)
	for i, a := range appends {
		if err := lk.Append(ctx, a.file, []byte(a.data)); err != nil {
			lk.Abort(ctx)
			return 0, fmt.Errorf("append %d under token %d: %w", i+1, lk.Token(), err)
		}
		step(i + 1)
	}
	if err := lk.Release(ctx); err != nil {
		return 0, fmt.Errorf("release of token %d: %w", lk.Token(), err)
	}
	return lk.Token(), nil
}

// goSection runs a section in the background.
func goSection(ctx context.Context, c *client.Client, appends []fileAppend, pause func(int)) <-chan sectionResult {
	done := make(chan sectionResult, 1)
	go func() { done <- runSection(ctx, c, appends, pause) }()
	return done
}

// sectionScript stops a background section at its pause points until the
// test goroutine, which injects the faults, lets it go on.
type sectionScript struct {
	ctx    context.Context
	at     chan int
	resume chan struct{}
}

func newScript(ctx context.Context) *sectionScript {
	return &sectionScript{ctx: ctx, at: make(chan int), resume: make(chan struct{})}
}

func (s *sectionScript) pause(i int) {
	select {
	case s.at <- i:
	case <-s.ctx.Done():
		return
	}
	select {
	case <-s.resume:
	case <-s.ctx.Done():
	}
}

// driveSection runs act at each pause point of the section behind done until it
// ends, and returns how it ended; a failed section fails the test.
func driveSection(t *testing.T, s *sectionScript, name string, done <-chan sectionResult, act func(i int)) sectionResult {
	t.Helper()
	for {
		select {
		case i := <-s.at:
			act(i)
			s.resume <- struct{}{}
		case r := <-done:
			if r.err != nil {
				t.Fatalf("%s: %v", name, r.err)
			}
			return r
		case <-s.ctx.Done():
			t.Fatalf("%s did not finish: %v", name, s.ctx.Err())
		}
	}
}

// awaitSection returns how a background section ended; a failed section fails the
// test.
func awaitSection(t *testing.T, ctx context.Context, name string, done <-chan sectionResult) sectionResult {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("%s: %v", name, r.err)
		}
		return r
	case <-ctx.Done():
		t.Fatalf("%s did not finish: %v", name, ctx.Err())
	}
	return sectionResult{}
}

// checkTokensGrow checks that the sections' letters, in the order they
// appear in content, have strictly growing fencing tokens: a later grant,
// under whichever leader, never has a smaller token.
func checkTokensGrow(t *testing.T, content string, tokens map[byte]uint64) {
	t.Helper()
	var order []byte
	for i := range len(content) {
		if !slices.Contains(order, content[i]) {
			order = append(order, content[i])
		}
	}
	for i := 1; i < len(order); i++ {
		if a, b := tokens[order[i-1]], tokens[order[i]]; a >= b {
			t.Fatalf("in %q, %c's section has token %d and the later %c's %d: tokens must grow", content, order[i-1], a, order[i], b)
		}
	}
}

// runsOf splits s into runs of one repeated byte.
func runsOf(s string) []string {
	var runs []string
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] == s[i] {
			j++
		}
		runs = append(runs, s[i:j])
		i = j
	}
	return runs
}

// errorDetail returns the ErrorDetail a service error carries.
func errorDetail(err error) *dlmv1.ErrorDetail {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if ed, ok := v.(*dlmv1.ErrorDetail); ok {
				return ed
			}
		}
	}
	return nil
}

// D1: a follower dies after C1's first append and returns soon.
func TestD1FollowerDownBriefly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	s1 := c.awaitLeader()
	s2 := c.others(s1)[0]
	c1, c2 := c.newClient(ctx, "C1"), c.newClient(ctx, "C2")
	files := []string{"file_1", "file_2", "file_3"}

	var d2 <-chan sectionResult
	s := newScript(ctx)
	r1 := driveSection(t, s, "C1", goSection(ctx, c1, appendsOf("A", 1, files...), s.pause), func(i int) {
		switch i {
		case 0: // C1 holds the lock: C2 waits for it
			d2 = goSection(ctx, c2, appendsOf("B", 1, files...), nil)
			c.awaitQueue(ctx, 1)
		case 1:
			s2.kill9()
		case 2:
			s2.start()
		}
	})
	r2 := awaitSection(t, ctx, "C2", d2)

	want := "AB"
	if r1.attempts > 1 {
		want = "BA" // C1's lease ran out and C1 redid its section after C2
	}
	for _, f := range files {
		if got := c.readFile(ctx, f); got != want {
			t.Fatalf("%s = %q, want %q", f, got, want)
		}
	}
	checkTokensGrow(t, want, map[byte]uint64{'A': r1.token, 'B': r2.token})
	c.awaitReplicasIdentical()
}

// D2: a follower dies after C1's first append and stays down while the
// others carry on long enough for the leader to compact its log past
// everything the follower has; it returns at the end and catches up from a
// snapshot. A client that asks a follower is pointed to the leader.
func TestD2FollowerDownLong(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const trailing = 10
	c := startCluster(t, 3, "--snapshot-threshold", "20", "--trailing-logs", fmt.Sprint(trailing), "--snapshot-interval", "200ms")
	s1 := c.awaitLeader()
	s2, s3 := c.others(s1)[0], c.others(s1)[1]
	c1, c2 := c.newClient(ctx, "C1"), c.newClient(ctx, "C2")
	files := []string{"file_1", "file_2", "file_3"}

	var (
		d2       <-chan sectionResult
		s2Before uint64 // an upper bound of S2's last log index
	)
	s := newScript(ctx)
	r1 := driveSection(t, s, "C1", goSection(ctx, c1, appendsOf("A", 1, files...), s.pause), func(i int) {
		switch i {
		case 0:
			d2 = goSection(ctx, c2, appendsOf("B", 1, files...), nil)
			c.awaitQueue(ctx, 1)
		case 1:
			s2.kill9()
			// Nothing is in flight (C1 waits here, C2 waits in the queue),
			// so S2 had nothing past what the leader has committed.
			s2Before = c.commitIndex(s1)
		}
	})
	r2 := awaitSection(t, ctx, "C2", d2)
	want := "AB"
	if r1.attempts > 1 {
		want = "BA"
	}
	for _, f := range files {
		if got := c.readFile(ctx, f); got != want {
			t.Fatalf("%s = %q, want %q", f, got, want)
		}
	}
	checkTokensGrow(t, want, map[byte]uint64{'A': r1.token, 'B': r2.token})

	// Progress never stops. Sections of 1 MiB appends go on until the
	// leader has snapshotted and deleted the log holding S2's last entry,
	// so that only a snapshot can bring S2 back. raft-wal drops compacted
	// entries a whole segment (64 MiB) at a time and still serves the rest
	// of a segment, hence the volume.
	last, sections := max(r1.token, r2.token), 0
	var logStart uint64
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	pollUntil(t, 60*time.Second, "the leader deleting its log up to S2's last entry", func() (bool, string) {
		leader := c.awaitLeader()
		if logStart = leader.oldestLogIndex(); logStart > s2Before+1 && leader.snapshotIndex() >= logStart {
			return true, ""
		}
		if sections == 200 {
			t.Fatalf("%d sections with S2 down, and the leader's log still starts at %d", sections, logStart)
		}
		// Big appends until the first segment is full and sealed, then small
		// ones until the next snapshot deletes it.
		data := big
		if leader.logSegments() > 1 {
			data = "x"
		}
		r := runSection(ctx, []*client.Client{c1, c2}[sections%2], appendsOf(data, 4, "file_10"), nil)
		if r.err != nil {
			t.Fatalf("section %d with S2 down: %v", sections, r.err)
		}
		if r.token <= last {
			t.Fatalf("section %d has token %d after token %d", sections, r.token, last)
		}
		last = r.token
		sections++
		return false, fmt.Sprintf("%d sections, leader %s's log starts at %d, S2 stopped at %d", sections, leader.id, logStart, s2Before)
	})
	t.Logf("%d sections with S2 down; the leader's log now starts at index %d, S2 stopped at %d", sections, logStart, s2Before)

	// A change asked of a follower is refused with the leader's URL.
	leader := c.awaitLeader()
	follower := s3
	if leader == s3 {
		follower = s1
	}
	_, err := follower.api().Init(ctx, connect.NewRequest(&dlmv1.InitRequest{Name: "asks a follower"}))
	if d := errorDetail(err); connect.CodeOf(err) != connect.CodeUnavailable || d.GetReason() != dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER || d.GetLeaderUrl() != leader.url() {
		t.Fatalf("Init at follower %s = %v (detail %v), want Unavailable, NOT_LEADER, leader %s", follower.id, err, d, leader.url())
	}
	// A client that knows only the follower follows the hint.
	onlyFollower, err := client.New(ctx, []string{follower.url()}, client.WithName("via follower"), client.WithRetryBudget(20*time.Second))
	if err != nil {
		t.Fatalf("client given only follower %s: %v", follower.id, err)
	}
	defer onlyFollower.Close(context.Background())
	if r := runSection(ctx, onlyFollower, appendsOf("F", 1, "file_12"), nil); r.err != nil || r.token <= last {
		t.Fatalf("section through follower %s: token %d (last %d), %v", follower.id, r.token, last, r.err)
	}
	if got := c.readFile(ctx, "file_12"); got != "F" {
		t.Fatalf("file_12 = %q, want F", got)
	}

	s2.start()
	c.awaitReplicasIdentical()
	if snap := s2.snapshotIndex(); snap < logStart-1 {
		t.Fatalf("S2's latest snapshot is at %d; it should have installed the leader's (at %d or later)", snap, logStart-1)
	}
}

// leaderDiesBetween runs D3 and D4: C1, C2 and C3 each append their letter
// n times to file_0. With killInC2 0, the leader dies right after C1's
// release (D3); otherwise after C2's killInC2-th append (D4).
func leaderDiesBetween(t *testing.T, n, killInC2 int) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	s1 := c.awaitLeader()
	c1, c2, c3 := c.newClient(ctx, "C1"), c.newClient(ctx, "C2"), c.newClient(ctx, "C3")

	var d2, d3 <-chan sectionResult
	s, s2script := newScript(ctx), newScript(ctx)
	c2pause := s2script.pause
	if killInC2 == 0 {
		c2pause = nil
	}
	r1 := driveSection(t, s, "C1", goSection(ctx, c1, appendsOf("A", n, "file_0"), s.pause), func(i int) {
		if i == 0 {
			// C2 queues first, then C3: C2 is served next.
			d2 = goSection(ctx, c2, appendsOf("B", n, "file_0"), c2pause)
			c.awaitQueue(ctx, 1)
			d3 = goSection(ctx, c3, appendsOf("C", n, "file_0"), nil)
			c.awaitQueue(ctx, 2)
		}
	})
	var r2 sectionResult
	if killInC2 == 0 {
		s1.kill9()
		r2 = awaitSection(t, ctx, "C2", d2)
	} else {
		r2 = driveSection(t, s2script, "C2", d2, func(i int) {
			if i == killInC2 {
				s1.kill9()
			}
		})
		t.Logf("C2's section took %d grant(s) across the failover", r2.attempts)
	}
	r3 := awaitSection(t, ctx, "C3", d3)
	if leader := c.awaitLeader(); leader == s1 {
		t.Fatal("the killed node leads")
	}

	got := c.readFile(ctx, "file_0")
	runs := runsOf(got)
	a, b, cc := strings.Repeat("A", n), strings.Repeat("B", n), strings.Repeat("C", n)
	if len(runs) != 3 || runs[0] != a || !(runs[1] == b && runs[2] == cc || runs[1] == cc && runs[2] == b) {
		t.Fatalf("file_0 = %q, want %d A then %d B and %d C in either order, each contiguous", got, n, n, n)
	}
	checkTokensGrow(t, got, map[byte]uint64{'A': r1.token, 'B': r2.token, 'C': r3.token})

	s1.start() // S1 rejoins and catches up
	c.awaitReplicasIdentical()
}

// D3: the leader dies between critical sections.
func TestD3LeaderDiesBetweenSections(t *testing.T) { leaderDiesBetween(t, 5, 0) }

// D4: the leader dies inside C2's critical section.
func TestD4LeaderDiesInsideSection(t *testing.T) { leaderDiesBetween(t, 20, 10) }

// D5: a follower dies and returns; later the leader and that follower die
// together and the last node refuses changes, saying so at once; when one
// returns the service resumes.
func TestD5MajorityDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	s1 := c.awaitLeader()
	s2, s3 := c.others(s1)[0], c.others(s1)[1]
	c1, c2, c3 := c.newClient(ctx, "C1"), c.newClient(ctx, "C2"), c.newClient(ctx, "C3")
	files := []string{"file_1", "file_2", "file_3", "file_4", "file_5"}

	var d2, d3 <-chan sectionResult
	s, s2script := newScript(ctx), newScript(ctx)
	r1 := driveSection(t, s, "C1", goSection(ctx, c1, appendsOf("A", 2, files...), s.pause), func(i int) {
		switch i {
		case 0:
			d2 = goSection(ctx, c2, appendsOf("B", 2, files...), s2script.pause)
			c.awaitQueue(ctx, 1)
			d3 = goSection(ctx, c3, appendsOf("C", 2, files...), nil)
			c.awaitQueue(ctx, 2)
		case 3:
			s2.kill9()
		case 6:
			s2.start()
		}
	})
	r2 := driveSection(t, s2script, "C2", d2, func(i int) {
		if i != 4 {
			return
		}
		c.awaitCaughtUp(s2) // S2 is back in step before the double failure
		s1.kill9()
		s2.kill9()
		refusesChanges(t, ctx, s3)
		s1.start() // one returns: with S3 a majority again
	})
	r3 := awaitSection(t, ctx, "C3", d3)

	first := c.readFile(ctx, files[0])
	runs := runsOf(first)
	if len(first) != 6 || len(runs) != 3 || slices.ContainsFunc(runs, func(r string) bool { return len(r) != 2 }) {
		t.Fatalf("%s = %q, want AA, BB and CC, each contiguous", files[0], first)
	}
	for _, f := range files[1:] {
		if got := c.readFile(ctx, f); got != first {
			t.Fatalf("%s = %q but %s = %q: the order must be the same", f, got, files[0], first)
		}
	}
	checkTokensGrow(t, first, map[byte]uint64{'A': r1.token, 'B': r2.token, 'C': r3.token})
	s2.start()
	c.awaitReplicasIdentical()
}

// refusesChanges checks that a node left without a majority refuses a change
// at once, with Unavailable and a reason, and soon says it knows no leader;
// and that a client given only that node fails with ErrUnavailable within
// its retry budget instead of hanging.
func refusesChanges(t *testing.T, ctx context.Context, n *clusterNode) {
	t.Helper()
	const deadline = 2 * time.Second
	pollUntil(t, 10*time.Second, n.id+" alone saying it has no leader", func() (bool, string) {
		cctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		start := time.Now()
		_, err := n.api().Init(cctx, connect.NewRequest(&dlmv1.InitRequest{Name: "no majority"}))
		took := time.Since(start)
		d := errorDetail(err)
		switch {
		case err == nil:
			t.Fatalf("%s alone opened a session", n.id)
		case connect.CodeOf(err) != connect.CodeUnavailable || d == nil || d.GetReason() == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED:
			t.Fatalf("%s alone answered %v (detail %v) after %v; want Unavailable with a reason before the %v deadline", n.id, err, d, took, deadline)
		case d.GetLeaderUrl() != "":
			return false, fmt.Sprintf("still names leader %s: %v", d.GetLeaderUrl(), err)
		}
		t.Logf("%s alone answers in %v: %v", n.id, took.Round(time.Millisecond), err)
		return true, ""
	})
	start := time.Now()
	_, err := client.New(ctx, []string{n.url()}, client.WithRetryBudget(deadline))
	if took := time.Since(start); !errors.Is(err, client.ErrUnavailable) || took > deadline+2*time.Second {
		t.Fatalf("a client of %s alone got %v after %v; want ErrUnavailable within its %v budget", n.id, err, took, deadline)
	}
}

// The leader is stalled with SIGSTOP while a client holds the lock. A new
// leader serves clients; calls sent to the stalled node get no answer; after
// SIGCONT it steps down, and it never granted or acknowledged anything
// while deposed.
func TestIsolatedLeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	old := c.awaitLeader()
	holder, other := c.newClient(ctx, "holder"), c.newClient(ctx, "other")
	lk, err := holder.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Append(ctx, "file_0", []byte("H1.")); err != nil {
		t.Fatal(err)
	}
	// A raw session on the old leader, to send it changes of its own.
	init, err := old.api().Init(ctx, connect.NewRequest(&dlmv1.InitRequest{Name: "raw", LeaseMs: 20000}))
	if err != nil {
		t.Fatal(err)
	}
	raw := init.Msg
	acquire := func(seq uint64) *connect.Request[dlmv1.LockAcquireRequest] {
		return connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: raw.GetClientId(), Secret: raw.GetSecret(), Seq: seq, Try: true})
	}

	old.stall()
	stalledAt := time.Now()
	// A change sent to the stalled node gets nothing.
	cctx, ccancel := context.WithTimeout(ctx, time.Second)
	_, err = old.api().LockAcquire(cctx, acquire(1))
	ccancel()
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("acquire at the stalled leader = %v, want no answer (deadline exceeded)", err)
	}
	// Another waits in its socket to be read when the node wakes up.
	late := make(chan error, 1)
	go func() {
		lctx, lcancel := context.WithTimeout(ctx, 30*time.Second)
		defer lcancel()
		res, err := old.api().LockAcquire(lctx, acquire(2))
		if err == nil {
			err = fmt.Errorf("answered %v", res.Msg)
		}
		late <- err
	}()

	leader := c.awaitLeader()
	if leader == old {
		t.Fatal("the stalled node still leads")
	}
	t.Logf("%s leads %v after %s was stalled", leader.id, time.Since(stalledAt).Round(time.Millisecond), old.id)
	// The holder carries on under the new leader, with the same grant.
	if err := lk.Append(ctx, "file_0", []byte("H2.")); err != nil {
		t.Fatalf("holder's append under the new leader: %v", err)
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatalf("holder's release under the new leader: %v", err)
	}
	r := runSection(ctx, other, appendsOf("Y.", 1, "file_0"), nil)
	if r.err != nil {
		t.Fatalf("other client: %v", r.err)
	}
	if r.token <= lk.Token() {
		t.Fatalf("the new leader granted token %d after token %d", r.token, lk.Token())
	}

	old.wake()
	woke := time.Now()
	pollUntil(t, 10*time.Second, "the old leader stepping down", func() (bool, string) {
		st, err := old.status()
		if err != nil {
			return false, err.Error()
		}
		n := st.GetNode()
		return n.GetRole() == "follower" && n.GetLeaderUrl() == leader.url(), fmt.Sprintf("role %s, leader %q", n.GetRole(), n.GetLeaderUrl())
	})
	t.Logf("%s follows %s %v after SIGCONT", old.id, leader.id, time.Since(woke).Round(time.Millisecond))
	select {
	case err := <-late:
		if d := errorDetail(err); connect.CodeOf(err) != connect.CodeUnavailable || d.GetReason() != dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER {
			t.Fatalf("the acquire the stalled leader read on waking = %v (detail %v), want Unavailable NOT_LEADER", err, d)
		}
	case <-ctx.Done():
		t.Fatal("the acquire sent to the stalled leader got no answer after it woke")
	}

	if got := c.readFile(ctx, "file_0"); got != "H1.H2.Y." {
		t.Fatalf("file_0 = %q, want H1.H2.Y.", got)
	}
	st, err := c.reader.Status(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if lock := st.GetLock(); lock.GetHolder() != 0 || lock.GetLastToken() != r.token {
		t.Fatalf("lock = %v, want free with last token %d (the raw session never got it)", lock, r.token)
	}
	c.awaitReplicasIdentical()
}

// The leader is killed with SIGKILL ten times in a row; each time a client
// acquires through the new leader. Fencing tokens grow across every
// failover, and the time from the kill to the first grant is logged.
func TestClusterFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	w := c.newClient(ctx, "W")
	const runs = 10
	var (
		toGrant, toLeader []time.Duration
		want              strings.Builder
		last              uint64
	)
	for run := range runs {
		leader := c.awaitLeader()
		survivors := c.others(leader)
		leader.kill9()
		killed := time.Now()
		elected := make(chan time.Duration, 1)
		go func() { elected <- awaitElected(ctx, survivors, killed) }()

		lk, err := w.Acquire(ctx)
		if err != nil {
			t.Fatalf("run %d: acquire after killing the leader: %v", run, err)
		}
		toGrant = append(toGrant, time.Since(killed))
		toLeader = append(toLeader, <-elected)
		if lk.Token() <= last {
			t.Fatalf("run %d: token %d after token %d", run, lk.Token(), last)
		}
		last = lk.Token()
		record := fmt.Sprintf("%d;", last)
		if err := lk.Append(ctx, "file_0", []byte(record)); err != nil {
			t.Fatalf("run %d: append: %v", run, err)
		}
		if err := lk.Release(ctx); err != nil {
			t.Fatalf("run %d: release: %v", run, err)
		}
		want.WriteString(record)
		leader.start()
	}
	if got := c.readFile(ctx, "file_0"); got != want.String() {
		t.Fatalf("file_0 = %q, want %q", got, want.String())
	}
	c.awaitReplicasIdentical()
	t.Logf("kill -9 of the leader to the first grant by the new one, %d runs: p50 %v, max %v (each: %v)",
		runs, percentileOf(toGrant, 50), percentileOf(toGrant, 100), roundAll(toGrant))
	t.Logf("kill -9 of the leader to a new leader named by the survivors: p50 %v, max %v",
		percentileOf(toLeader, 50), percentileOf(toLeader, 100))
}

// awaitElected polls the survivors until one of them leads, and returns the
// time since killed (or the time it gave up, bounded).
func awaitElected(ctx context.Context, survivors []*clusterNode, killed time.Time) time.Duration {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Since(killed) < 20*time.Second {
		for _, n := range survivors {
			if st, err := n.status(); err == nil && st.GetNode().GetRole() == "leader" {
				return time.Since(killed)
			}
		}
		select {
		case <-ctx.Done():
			return time.Since(killed)
		case <-tick.C:
		}
	}
	return time.Since(killed)
}

func percentileOf(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100].Round(time.Millisecond)
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// Members of a fixed --peers cluster announce their client URLs through the
// leader, so any node lists every member with its URL (and `dlm members
// list` shows them), without any membership change.
func TestMembersListEveryClientURL(t *testing.T) {
	c := startCluster(t, 3)
	follower := c.others(c.awaitLeader())[0]
	pollUntil(t, 20*time.Second, "every member's URL known to a follower", func() (bool, string) {
		st, err := follower.status()
		if err != nil {
			return false, err.Error()
		}
		for _, m := range st.GetMembers() {
			if m.GetClientUrl() == "" || m.GetSuffrage() != "voter" {
				return false, fmt.Sprint(st.GetMembers())
			}
		}
		return len(st.GetMembers()) == 3, fmt.Sprint(st.GetMembers())
	})
	out, errOut, err := cliRun(t, "", "members", "list", "--server", follower.url())
	if err != nil {
		t.Fatalf("members list: %v\n%s", err, errOut)
	}
	for _, n := range c.nodes {
		if !strings.Contains(out, n.url()) {
			t.Fatalf("members list lacks %s:\n%s", n.url(), out)
		}
	}
}
