package robustness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
)

// buildDLM builds the dlm binary into dir, with the mutation hooks when
// mutations is set. Both have the disk-fault hook (dlm_faults), which does
// nothing unless DLM_FAULT_DISK is set.
func buildDLM(dir string, mutations bool) (string, error) {
	name := "dlm"
	args := []string{"build", "-o"}
	if mutations {
		name = "dlm-mutations"
	}
	bin := filepath.Join(dir, name)
	args = append(args, bin)
	tags := "dlm_faults"
	if mutations {
		tags += ",dlm_mutations"
	}
	args = append(args, "-tags", tags)
	cmd := exec.Command("go", append(args, "github.com/dlm/dlm/cmd/dlm")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// node is one dlm serve process with its proxies.
type node struct {
	id       string
	idx      int
	apiAddr  string // the real API address (the harness's own calls use it)
	raftAddr string // the real Raft address
	data     string
	args     []string
	env      []string
	logPath  string

	raftProxy   *proxy // in front of raftAddr; peers reach the node through it
	clientProxy *proxy // in front of apiAddr; clients reach the node through it
	clientLink  *link

	mu          sync.Mutex
	cmd         *exec.Cmd
	exited      chan struct{}
	incarnation int
	stopped     bool // SIGSTOPped
}

// cluster is three dlm processes on loopback whose every Raft link and
// client link runs through a proxy the harness controls.
type cluster struct {
	bin   string
	nodes []*node
	// raftLinks[i][j] (i<j) carries Raft traffic between nodes i and j in
	// both directions.
	raftLinks [][]*link
	unknown   *link
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startCluster starts n nodes with data under dir and waits until they
// agree on a leader.
func startCluster(ctx context.Context, bin, dir string, n int, mutation string) (*cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &cluster{bin: bin, unknown: newLink()}
	c.raftLinks = make([][]*link, n)
	for i := range c.raftLinks {
		c.raftLinks[i] = make([]*link, n)
		for j := i + 1; j < n; j++ {
			c.raftLinks[i][j] = newLink()
		}
	}
	for i := 0; i < n; i++ {
		api, err := freeAddr()
		if err != nil {
			return nil, err
		}
		raftAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		nd := &node{id: fmt.Sprintf("n%d", i+1), idx: i, apiAddr: api, raftAddr: raftAddr,
			data: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)),
			clientLink: newLink()}
		nd.env = []string{"DLM_FAULT_DISK=" + nd.diskFullFile(), "DLM_TOKEN=" + adminToken}
		if mutation != "" {
			nd.env = append(nd.env, "DLM_MUTATION="+mutation)
		}
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		var err error
		if nd.raftProxy, err = newProxy(nd.raftAddr, c.classifier(nd.idx), c.unknown); err != nil {
			c.close()
			return nil, err
		}
		if nd.clientProxy, err = newProxy(nd.apiAddr, nil, nd.clientLink); err != nil {
			c.close()
			return nil, err
		}
	}
	var peers []string
	for _, nd := range c.nodes {
		peers = append(peers, nd.id+"="+nd.raftProxy.addr())
	}
	for _, nd := range c.nodes {
		nd.args = []string{"serve", "--id", nd.id, "--listen", nd.apiAddr, "--raft", nd.raftAddr,
			"--peers", strings.Join(peers, ","), "--data", nd.data,
			"--min-lease", "100ms",
			// Small and frequent snapshots, so that kills land mid-snapshot
			// and restarted followers catch up by snapshot.
			"--snapshot-threshold", "64", "--snapshot-interval", "250ms", "--trailing-logs", "32"}
		if err := nd.start(bin); err != nil {
			c.close()
			return nil, err
		}
	}
	_, err := c.awaitLeader(ctx, 30*time.Second)
	if err == nil {
		err = c.awaitPinned(ctx, 30*time.Second)
	}
	if err != nil {
		c.close()
		var tails []string
		for _, nd := range c.nodes {
			b, _ := os.ReadFile(nd.logPath)
			if len(b) > 2000 {
				b = b[len(b)-2000:]
			}
			tails = append(tails, fmt.Sprintf("--- %s log:\n%s", nd.id, b))
		}
		return nil, fmt.Errorf("%w\n%s", err, strings.Join(tails, "\n"))
	}
	return c, nil
}

// adminToken is the admin token every node of a test cluster shares.
const adminToken = "robustness-admin-token-0123456789"

// pinAddresses records, through the leader, the client URL of every member
// that has none yet, and reports whether every member is named by its
// proxy's Raft address (the --peers configuration names the proxies; a
// member's own announcement repeats the configured address, never its
// --raft one, and the leader refuses to rebind an address, so Raft traffic
// never bypasses the proxies and the partition faults cut it).
func (c *cluster) pinAddresses(ctx context.Context, leader *node, members []*dlmv1.MemberStatus) bool {
	pinned := true
	for _, m := range members {
		var nd *node
		for _, o := range c.nodes {
			if o.id == m.GetId() {
				nd = o
			}
		}
		if nd == nil {
			continue
		}
		url := "http://" + nd.apiAddr
		if m.GetRaftAddress() == nd.raftProxy.addr() && m.GetClientUrl() == url {
			continue
		}
		pinned = false
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		dlmv1connect.NewClusterServiceClient(http.DefaultClient, "http://"+leader.apiAddr, connect.WithInterceptors(auth.Bearer(adminToken))).AddMember(actx,
			connect.NewRequest(&dlmv1.AddMemberRequest{Id: nd.id, RaftAddress: nd.raftProxy.addr(), ClientUrl: url, Voter: true}))
		cancel()
	}
	return pinned
}

// awaitPinned waits until the leader's configuration names every member by
// its proxy address and knows every member's client URL.
func (c *cluster) awaitPinned(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if l := c.leader(ctx); l != nil {
			if st, err := l.status(ctx); err == nil && len(st.GetMembers()) == len(c.nodes) && c.pinAddresses(ctx, l, st.GetMembers()) {
				return nil
			}
		}
		if err := pollPause(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("the Raft configuration did not name every node by its proxy within %v", limit)
}

// classifier tells which peer a Raft connection into node to comes from:
// every Raft RPC starts with a header carrying the sender's advertised
// address, which is its real Raft address.
func (c *cluster) classifier(to int) func([]byte) *link {
	return func(first []byte) *link {
		for _, from := range c.nodes {
			if from.idx != to && bytes.Contains(first, []byte(from.raftAddr)) {
				return c.raftLink(from.idx, to)
			}
		}
		return nil
	}
}

func (c *cluster) raftLink(a, b int) *link {
	if a > b {
		a, b = b, a
	}
	return c.raftLinks[a][b]
}

// urls are the client URLs of the nodes' client proxies.
func (c *cluster) urls() []string {
	var u []string
	for _, nd := range c.nodes {
		u = append(u, "http://"+nd.clientProxy.addr())
	}
	return u
}

// hostMap maps each node's real API address to its client proxy, so that a
// leader named in a NOT_LEADER answer is reached through the proxy too.
func (c *cluster) hostMap() map[string]string {
	m := make(map[string]string)
	for _, nd := range c.nodes {
		m[nd.apiAddr] = nd.clientProxy.addr()
	}
	return m
}

// heal restores every link.
func (c *cluster) heal() {
	for i := range c.raftLinks {
		for j := i + 1; j < len(c.raftLinks); j++ {
			c.raftLinks[i][j].set(linkOK, 0)
		}
	}
	for _, nd := range c.nodes {
		nd.clientLink.set(linkOK, 0)
	}
	c.unknown.set(linkOK, 0)
}

func (c *cluster) close() {
	c.heal()
	for _, nd := range c.nodes {
		nd.kill()
		if nd.raftProxy != nil {
			nd.raftProxy.close()
		}
		if nd.clientProxy != nil {
			nd.clientProxy.close()
		}
	}
}

func (nd *node) start(bin string) error {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	logs, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logs.Close()
	fmt.Fprintf(logs, "=== start %s incarnation %d at %s\n", nd.id, nd.incarnation+1, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(bin, nd.args...)
	cmd.Env = append(os.Environ(), nd.env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	nd.cmd, nd.exited, nd.stopped = cmd, exited, false
	nd.incarnation++
	return nil
}

// kill sends SIGKILL and waits for the process to end.
func (nd *node) kill() {
	nd.mu.Lock()
	cmd, exited := nd.cmd, nd.exited
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

func (nd *node) signal(sig syscall.Signal) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		nd.cmd.Process.Signal(sig)
		nd.stopped = sig == syscall.SIGSTOP
	}
}

func (nd *node) alive() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	select {
	case <-nd.exited:
		return false
	default:
		return true
	}
}

// api returns a Connect client straight to the node (not through its
// proxy), for the harness's own status polls.
func (nd *node) api() dlmv1connect.LockServiceClient {
	return dlmv1connect.NewLockServiceClient(http.DefaultClient, "http://"+nd.apiAddr)
}

// status asks the node for its own view, bounded by a short timeout.
func (nd *node) status(ctx context.Context) (*dlmv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	// The largest page: the comparison needs every session.
	r, err := nd.api().Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{PageSize: 1000}))
	if err != nil {
		return nil, err
	}
	return r.Msg, nil
}

// leader returns the node that says it leads in the highest term, or nil.
func (c *cluster) leader(ctx context.Context) *node {
	var (
		best *node
		term uint64
	)
	for _, nd := range c.nodes {
		st, err := nd.status(ctx)
		if err == nil && st.GetNode().GetRole() == "leader" && st.GetNode().GetTerm() >= term {
			best, term = nd, st.GetNode().GetTerm()
		}
	}
	return best
}

// awaitLeader polls until a node leads and every node knows a leader.
func (c *cluster) awaitLeader(ctx context.Context, limit time.Duration) (*node, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if l := c.leader(ctx); l != nil {
			known := true
			for _, nd := range c.nodes {
				st, err := nd.status(ctx)
				if err != nil || st.GetNode().GetLeaderUrl() == "" {
					known = false
				}
			}
			if known {
				return l, nil
			}
		}
		if err := pollPause(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no leader known to every node within %v", limit)
}

// pollPause waits between two polls of a condition (not a synchronisation
// by sleeping: the caller re-checks the condition after it).
func pollPause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// snapshotsInProgress lists the snapshot folders being written
// (hashicorp/raft writes a snapshot into a ".tmp" folder and renames it
// when done; a kill leaves its ".tmp" behind for good).
func (nd *node) snapshotsInProgress() map[string]bool {
	entries, err := os.ReadDir(filepath.Join(nd.data, "raft", "snapshots"))
	if err != nil {
		return nil
	}
	tmp := make(map[string]bool)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			tmp[e.Name()] = true
		}
	}
	return tmp
}

// snapshotStarted reports whether a snapshot not in before is being
// written now.
func (nd *node) snapshotStarted(before map[string]bool) bool {
	for name := range nd.snapshotsInProgress() {
		if !before[name] {
			return true
		}
	}
	return false
}

// converge waits until every node runs, knows the leader and has applied
// the same index with the same lock state, then compares the nodes' files
// on disk byte for byte. It returns the differences found.
func (c *cluster) converge(ctx context.Context, limit time.Duration) ([]string, error) {
	deadline := time.Now().Add(limit)
	var last []string
	for time.Now().Before(deadline) {
		for _, nd := range c.nodes {
			if !nd.alive() {
				// A restart whose process died at once (say, its port was
				// taken in the meantime): start it again.
				c.restart(ctx, nd)
			}
		}
		var sts []*dlmv1.StatusResponse
		ok := true
		for _, nd := range c.nodes {
			st, err := nd.status(ctx)
			if err != nil || st.GetNode().GetLeaderUrl() == "" {
				ok = false
				break
			}
			sts = append(sts, st)
		}
		if ok {
			last = compareStates(c.nodes, sts)
			if len(last) == 0 {
				diffs := c.compareFiles()
				// Re-read the applied index: the comparison is valid only
				// if nothing was applied while the files were read.
				again := true
				for i, nd := range c.nodes {
					st, err := nd.status(ctx)
					if err != nil || st.GetNode().GetAppliedIndex() != sts[i].GetNode().GetAppliedIndex() {
						again = false
					}
				}
				if again {
					return diffs, nil
				}
			}
		}
		if err := pollPause(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if len(last) == 0 {
		last = []string{"the nodes did not reach a common applied index"}
	}
	return nil, fmt.Errorf("replicas did not converge within %v: %s", limit, strings.Join(last, "; "))
}

// compareStates lists how the nodes' replicated states differ.
func compareStates(nodes []*node, sts []*dlmv1.StatusResponse) []string {
	var diffs []string
	a := sts[0]
	for i := 1; i < len(sts); i++ {
		b := sts[i]
		if a.GetNode().GetAppliedIndex() != b.GetNode().GetAppliedIndex() {
			diffs = append(diffs, fmt.Sprintf("applied index %s=%d %s=%d", nodes[0].id, a.GetNode().GetAppliedIndex(), nodes[i].id, b.GetNode().GetAppliedIndex()))
			continue
		}
		la, lb := a.GetLock(), b.GetLock()
		if la.GetHolder() != lb.GetHolder() || la.GetToken() != lb.GetToken() || la.GetLastToken() != lb.GetLastToken() ||
			la.GetStagedAppends() != lb.GetStagedAppends() || fmt.Sprint(la.GetQueue()) != fmt.Sprint(lb.GetQueue()) {
			diffs = append(diffs, fmt.Sprintf("lock state %s=%v %s=%v", nodes[0].id, la, nodes[i].id, lb))
		}
		if a.GetSessionCount() != b.GetSessionCount() || fmt.Sprint(sessionIDs(a)) != fmt.Sprint(sessionIDs(b)) {
			diffs = append(diffs, fmt.Sprintf("sessions %s=%v %s=%v", nodes[0].id, sessionIDs(a), nodes[i].id, sessionIDs(b)))
		}
		for k, f := range a.GetFiles() {
			if k < len(b.GetFiles()) && f.GetSize() != b.GetFiles()[k].GetSize() {
				diffs = append(diffs, fmt.Sprintf("%s size %s=%d %s=%d", f.GetName(), nodes[0].id, f.GetSize(), nodes[i].id, b.GetFiles()[k].GetSize()))
			}
		}
	}
	return diffs
}

func sessionIDs(st *dlmv1.StatusResponse) []uint64 {
	var ids []uint64
	for _, s := range st.GetSessions() {
		ids = append(ids, s.GetClientId())
	}
	return ids
}

// compareFiles compares DATA/files of every node with the first node's.
func (c *cluster) compareFiles() []string {
	var diffs []string
	ref := c.nodes[0]
	entries, err := os.ReadDir(filepath.Join(ref.data, "files"))
	if err != nil {
		return []string{err.Error()}
	}
	for _, e := range entries {
		want, err := os.ReadFile(filepath.Join(ref.data, "files", e.Name()))
		if err != nil {
			diffs = append(diffs, err.Error())
			continue
		}
		for _, nd := range c.nodes[1:] {
			got, err := os.ReadFile(filepath.Join(nd.data, "files", e.Name()))
			if err != nil || !bytes.Equal(got, want) {
				diffs = append(diffs, fmt.Sprintf("files/%s differs: %s has %d bytes, %s has %d", e.Name(), ref.id, len(want), nd.id, len(got)))
			}
		}
	}
	return diffs
}

// readFiles returns the first node's files (after converge they are every
// node's).
func (c *cluster) readFiles(names []string) (map[string][]byte, error) {
	out := make(map[string][]byte)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(c.nodes[0].data, "files", n))
		if err != nil {
			return nil, err
		}
		out[n] = b
	}
	return out, nil
}

// restart starts a killed node again, retrying a few times if it cannot
// be started at once.
func (c *cluster) restart(ctx context.Context, nd *node) {
	for attempt := 0; attempt < 10; attempt++ {
		if err := nd.start(c.bin); err == nil {
			return
		}
		pollPause(ctx, 100*time.Millisecond)
	}
}
