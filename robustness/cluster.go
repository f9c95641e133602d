package robustness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/internal/e2e"
	"github.com/dlm/dlm/server/auth"
)

// buildDLM builds the dlm binary into dir, with the mutation hooks when
// mutations is set. Both have the disk-fault hook (dlm_faults), which does
// nothing unless DLM_FAULT_DISK is set.
func buildDLM(dir string, mutations bool) (string, error) {
	if mutations {
		return e2e.Build(dir, "dlm_faults", "dlm_mutations")
	}
	return e2e.Build(dir, "dlm_faults")
}

// node is one dlm serve process (its real API and Raft addresses are
// Addr and RaftAddr, which the harness's own calls use) with its proxies.
type node struct {
	*e2e.Node
	idx int

	raftProxy   *e2e.Proxy // in front of RaftAddr; peers reach the node through it
	clientProxy *e2e.Proxy // in front of Addr; clients reach the node through it
	clientLink  *e2e.Link
}

// cluster is three dlm processes on loopback whose every Raft link and
// client link runs through a proxy the harness controls.
type cluster struct {
	bin   string
	nodes []*node
	// raftLinks[i][j] (i<j) carries Raft traffic between nodes i and j in
	// both directions.
	raftLinks [][]*e2e.Link
	unknown   *e2e.Link
}

// startCluster starts n nodes with data under dir and waits until they
// agree on a leader.
func startCluster(ctx context.Context, bin, dir string, n int, mutation string) (*cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &cluster{bin: bin, unknown: e2e.NewLink()}
	c.raftLinks = make([][]*e2e.Link, n)
	for i := range c.raftLinks {
		c.raftLinks[i] = make([]*e2e.Link, n)
		for j := i + 1; j < n; j++ {
			c.raftLinks[i][j] = e2e.NewLink()
		}
	}
	addrs, err := e2e.ReserveAddrs(2 * n)
	if err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("n%d", i+1)
		nd := &node{idx: i, clientLink: e2e.NewLink(), Node: &e2e.Node{ID: id, Bin: bin, Addr: addrs[2*i], RaftAddr: addrs[2*i+1],
			Data: filepath.Join(dir, id), LogPath: filepath.Join(dir, id+".log"), Token: adminToken}}
		nd.Env = []string{"DLM_FAULT_DISK=" + nd.diskFullFile(), "DLM_TOKEN=" + adminToken}
		if mutation != "" {
			nd.Env = append(nd.Env, "DLM_MUTATION="+mutation)
		}
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		var err error
		if nd.raftProxy, err = e2e.NewProxy(nd.RaftAddr, c.classifier(nd.idx), c.unknown); err != nil {
			c.close()
			return nil, err
		}
		if nd.clientProxy, err = e2e.NewProxy(nd.Addr, nil, nd.clientLink); err != nil {
			c.close()
			return nil, err
		}
	}
	var peers []string
	for _, nd := range c.nodes {
		peers = append(peers, nd.ID+"="+nd.raftProxy.Addr())
	}
	for _, nd := range c.nodes {
		nd.Args = []string{"--id", nd.ID, "--peers", strings.Join(peers, ","),
			"--min-lease", "100ms",
			// Small and frequent snapshots, so that kills land mid-snapshot
			// and restarted followers catch up by snapshot.
			"--snapshot-threshold", "64", "--snapshot-interval", "250ms", "--trailing-logs", "32"}
		if err := nd.Spawn(); err != nil {
			c.close()
			return nil, err
		}
	}
	_, err = c.e2e().AwaitLeader(ctx, 30*time.Second)
	if err == nil {
		err = c.awaitPinned(ctx, 30*time.Second)
	}
	if err != nil {
		c.close()
		var tails []string
		for _, nd := range c.nodes {
			tails = append(tails, fmt.Sprintf("--- %s log:\n%s", nd.ID, e2e.Tail(nd.Log(), 30)))
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
			if o.ID == m.GetId() {
				nd = o
			}
		}
		if nd == nil {
			continue
		}
		url := nd.URL()
		if m.GetRaftAddress() == nd.raftProxy.Addr() && m.GetClientUrl() == url {
			continue
		}
		pinned = false
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		dlmv1connect.NewClusterServiceClient(leader.HTTPClient(), leader.URL(), connect.WithInterceptors(auth.Bearer(adminToken))).AddMember(actx,
			connect.NewRequest(&dlmv1.AddMemberRequest{Id: nd.ID, RaftAddress: nd.raftProxy.Addr(), ClientUrl: url, Voter: true}))
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
func (c *cluster) classifier(to int) func([]byte) *e2e.Link {
	return func(first []byte) *e2e.Link {
		for _, from := range c.nodes {
			if from.idx != to && bytes.Contains(first, []byte(from.RaftAddr)) {
				return c.raftLink(from.idx, to)
			}
		}
		return nil
	}
}

func (c *cluster) raftLink(a, b int) *e2e.Link {
	if a > b {
		a, b = b, a
	}
	return c.raftLinks[a][b]
}

// urls are the client URLs of the nodes' client proxies.
func (c *cluster) urls() []string {
	var u []string
	for _, nd := range c.nodes {
		u = append(u, "http://"+nd.clientProxy.Addr())
	}
	return u
}

// hostMap maps each node's real API address to its client proxy, so that a
// leader named in a NOT_LEADER answer is reached through the proxy too.
func (c *cluster) hostMap() map[string]string {
	m := make(map[string]string)
	for _, nd := range c.nodes {
		m[nd.Addr] = nd.clientProxy.Addr()
	}
	return m
}

// heal restores every link.
func (c *cluster) heal() {
	for i := range c.raftLinks {
		for j := i + 1; j < len(c.raftLinks); j++ {
			c.raftLinks[i][j].Set(e2e.LinkOK, 0)
		}
	}
	for _, nd := range c.nodes {
		nd.clientLink.Set(e2e.LinkOK, 0)
	}
	c.unknown.Set(e2e.LinkOK, 0)
}

func (c *cluster) close() {
	c.heal()
	for _, nd := range c.nodes {
		nd.Kill()
		if nd.raftProxy != nil {
			nd.raftProxy.Close()
		}
		if nd.clientProxy != nil {
			nd.clientProxy.Close()
		}
	}
}

// e2e is the harness's view of the cluster's nodes.
func (c *cluster) e2e() *e2e.Cluster {
	ec := &e2e.Cluster{}
	for _, nd := range c.nodes {
		ec.Nodes = append(ec.Nodes, nd.Node)
	}
	return ec
}

// status asks the node for its own view, bounded by a short timeout (the
// polls must not wait long for a stopped node).
func (nd *node) status(ctx context.Context) (*dlmv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	return nd.Status(ctx)
}

// leader returns the node that says it leads in the highest term, or nil.
func (c *cluster) leader(ctx context.Context) *node {
	l := c.e2e().Leader(ctx)
	for _, nd := range c.nodes {
		if nd.Node == l {
			return nd
		}
	}
	return nil
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

// snapshotStarted reports whether a snapshot not in before is being
// written now.
func (nd *node) snapshotStarted(before map[string]bool) bool {
	for name := range nd.SnapshotsInProgress() {
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
	return c.e2e().AwaitReplicas(ctx, limit, func() {
		for _, nd := range c.nodes {
			if !nd.Running() {
				// A restart whose process died at once (say, its port was
				// taken in the meantime): start it again.
				c.restart(ctx, nd)
			}
		}
	})
}

// readFiles returns the first node's files (after converge they are every
// node's).
func (c *cluster) readFiles(names []string) (map[string][]byte, error) {
	out := make(map[string][]byte)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(c.nodes[0].Data, "files", n))
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
		if err := nd.Spawn(); err == nil {
			return
		}
		pollPause(ctx, 100*time.Millisecond)
	}
}
