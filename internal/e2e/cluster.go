package e2e

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// Cluster is a cluster of nodes, grown by joining (NewCluster) or fixed
// (NewPeersCluster).
type Cluster struct {
	Nodes []*Node
	// joined: the first node bootstraps and the others join it, each
	// through the URLs of the nodes before it (learned as they start).
	joined bool
}

// NewCluster lays out size nodes n1…nSIZE under dir (data folders and logs)
// that learn their ports: each listens and runs Raft on 127.0.0.1:0, n1
// starts a new cluster and the others join it. args follow for every
// node. Nothing runs yet: Start runs them, or the caller adjusts a node
// first. A node restarts on the ports it printed at its first start.
func NewCluster(bin, dir string, size int, args ...string) (*Cluster, error) {
	c := &Cluster{joined: true}
	for i := range size {
		id := fmt.Sprintf("n%d", i+1)
		c.Nodes = append(c.Nodes, &Node{ID: id, Bin: bin, Addr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
			Data: filepath.Join(dir, id), LogPath: filepath.Join(dir, id+".log"),
			Args: append([]string{"--id", id}, args...)})
	}
	return c, nil
}

// NewSingle lays out one node, n1, without a Raft port (a lone server, as
// `dlm serve` runs by default) under dir, listening on 127.0.0.1:0, with
// args. Start runs it until it leads.
func NewSingle(bin, dir string, args ...string) *Cluster {
	return &Cluster{Nodes: []*Node{{ID: "n1", Bin: bin, Addr: "127.0.0.1:0",
		Data: filepath.Join(dir, "n1"), LogPath: filepath.Join(dir, "n1.log"), Args: args}}}
}

// NewPeersCluster is NewCluster for a fixed cluster booted with --peers,
// for tests of --peers itself: every Raft address must be named before any
// node starts, so they are reserved (ReserveAddrs), as are the API's. The
// nodes may start in any order, each by itself.
func NewPeersCluster(bin, dir string, size int, args ...string) (*Cluster, error) {
	addrs, err := ReserveAddrs(2 * size)
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	var peers []string
	for i := range size {
		id := fmt.Sprintf("n%d", i+1)
		c.Nodes = append(c.Nodes, &Node{ID: id, Bin: bin, Addr: addrs[2*i], RaftAddr: addrs[2*i+1],
			Data: filepath.Join(dir, id), LogPath: filepath.Join(dir, id+".log")})
		peers = append(peers, id+"="+addrs[2*i+1])
	}
	for _, n := range c.Nodes {
		n.Args = append([]string{"--id", n.ID, "--peers", strings.Join(peers, ",")}, args...)
	}
	return c, nil
}

// Start runs every node (each until it serves) and waits until they agree
// on a leader. A joined cluster starts its first node until it leads, then
// the others, joining through the nodes already up, and waits until every
// node is a voter.
func (c *Cluster) Start(ctx context.Context) error {
	if !c.joined {
		for _, n := range c.Nodes {
			if err := n.Start(); err != nil {
				c.Kill()
				return err
			}
		}
	} else if err := c.startJoined(ctx); err != nil {
		c.Kill()
		return err
	}
	if _, err := c.AwaitLeader(ctx, 30*time.Second); err != nil {
		c.Kill()
		return err
	}
	return nil
}

func (c *Cluster) startJoined(ctx context.Context) error {
	first := c.Nodes[0]
	if err := first.Start(); err != nil {
		return err
	}
	if err := first.AwaitLeading(30 * time.Second); err != nil {
		return err
	}
	var urls []string
	for i, n := range c.Nodes {
		urls = append(urls, n.URL())
		if i == 0 {
			continue
		}
		if n.Incarnation() == 0 {
			// Later starts keep the flag: joining again is a no-op.
			n.Args = append(n.Args, "--join", strings.Join(urls[:i], ","))
		}
		if err := n.Start(); err != nil {
			return err
		}
		urls[i] = n.URL()
	}
	return c.AwaitVoters(ctx, 30*time.Second)
}

// AwaitVoters waits until the leader lists every node of the cluster as a
// voter, bounded by limit.
func (c *Cluster) AwaitVoters(ctx context.Context, limit time.Duration) error {
	err := Await(ctx, limit, 50*time.Millisecond, func() (bool, string) {
		leader := c.Leader(ctx)
		if leader == nil {
			return false, "no leader"
		}
		st, err := leader.Status(ctx)
		if err != nil {
			return false, err.Error()
		}
		voters := make(map[string]bool)
		for _, m := range st.GetMembers() {
			voters[m.GetId()] = m.GetSuffrage() == "voter"
		}
		for _, n := range c.Nodes {
			if !voters[n.ID] {
				return false, fmt.Sprintf("%s is not a voter: members %v", n.ID, st.GetMembers())
			}
		}
		return true, ""
	})
	if err != nil {
		return fmt.Errorf("every node a voter: %w", err)
	}
	return nil
}

// Kill kills every node.
func (c *Cluster) Kill() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}

// URLs are the nodes' client URLs.
func (c *Cluster) URLs() []string {
	var urls []string
	for _, n := range c.Nodes {
		urls = append(urls, n.URL())
	}
	return urls
}

// Node returns the node with the given id, or nil.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Others returns the nodes other than n, in order.
func (c *Cluster) Others(n *Node) []*Node {
	var out []*Node
	for _, o := range c.Nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

// Up returns the nodes that run and are not paused.
func (c *Cluster) Up() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Running() && !n.Paused() {
			out = append(out, n)
		}
	}
	return out
}

// Leader returns the running node that says it leads in the highest term,
// or nil.
func (c *Cluster) Leader(ctx context.Context) *Node {
	var (
		best *Node
		term uint64
	)
	for _, n := range c.Up() {
		st, err := n.Status(ctx)
		if err == nil && st.GetNode().GetRole() == "leader" && st.GetNode().GetTerm() >= term {
			best, term = n, st.GetNode().GetTerm()
		}
	}
	return best
}

// LeaderAgreed checks once that every running, unpaused node names the same
// leader and that node says it leads; it returns the leader, or why not.
func (c *Cluster) LeaderAgreed(ctx context.Context) (*Node, string) {
	url := ""
	roles := make(map[*Node]string)
	for _, n := range c.Up() {
		st, err := n.Status(ctx)
		if err != nil {
			return nil, fmt.Sprintf("%s: %v", n.ID, err)
		}
		u := st.GetNode().GetLeaderUrl()
		switch {
		case u == "":
			return nil, n.ID + " knows no leader"
		case url != "" && u != url:
			return nil, fmt.Sprintf("%s names %s, another node %s", n.ID, u, url)
		}
		url = u
		roles[n] = st.GetNode().GetRole()
	}
	for n, role := range roles {
		if n.URL() == url && role == "leader" {
			return n, ""
		}
	}
	return nil, "the named leader " + url + " is not a running node that leads"
}

// AwaitLeader waits until LeaderAgreed finds a leader, bounded by limit.
func (c *Cluster) AwaitLeader(ctx context.Context, limit time.Duration) (*Node, error) {
	var leader *Node
	err := Await(ctx, limit, 20*time.Millisecond, func() (bool, string) {
		var why string
		leader, why = c.LeaderAgreed(ctx)
		return leader != nil, why
	})
	if err != nil {
		return nil, fmt.Errorf("a leader every running node names: %w", err)
	}
	return leader, nil
}

// AwaitCaughtUp waits until each of nodes has applied everything the
// leader had committed when called.
func (c *Cluster) AwaitCaughtUp(ctx context.Context, limit time.Duration, nodes ...*Node) error {
	leader, err := c.AwaitLeader(ctx, limit)
	if err != nil {
		return err
	}
	st, err := leader.Status(ctx)
	if err != nil {
		return fmt.Errorf("status of %s: %w", leader.ID, err)
	}
	commit := st.GetNode().GetCommitIndex()
	for _, n := range nodes {
		err := Await(ctx, limit, 20*time.Millisecond, func() (bool, string) {
			st, err := n.Status(ctx)
			if err != nil {
				return false, err.Error()
			}
			applied := st.GetNode().GetAppliedIndex()
			return applied >= commit, fmt.Sprintf("applied %d", applied)
		})
		if err != nil {
			return fmt.Errorf("%s catching up to index %d: %w", n.ID, commit, err)
		}
	}
	return nil
}

// Await checks cond every interval until it holds, ctx ends or limit has
// passed; the error carries cond's last explanation.
func Await(ctx context.Context, limit, interval time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still not after %v: %s", limit, why)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), why)
		}
	}
}

// errNotSettled is a replica comparison made while something was applied.
var errNotSettled = errors.New("the nodes did not reach a common applied index")

// AwaitReplicas waits until every node runs, knows the leader and has
// applied the same index with the same lock state, sessions and file sizes
// (Status), then compares the nodes' data folders' files byte for byte. It
// returns the differences found in the files; an error if the states did
// not converge within limit. beforePoll, if not nil, runs before each poll
// (the robustness suite restarts a node whose restart died there).
func (c *Cluster) AwaitReplicas(ctx context.Context, limit time.Duration, beforePoll func()) ([]string, error) {
	var diffs []string
	err := Await(ctx, limit, 100*time.Millisecond, func() (bool, string) {
		if beforePoll != nil {
			beforePoll()
		}
		var why []string
		diffs, why = c.compareOnce(ctx)
		if why != nil {
			return false, strings.Join(why, "; ")
		}
		return true, ""
	})
	if err != nil {
		return nil, fmt.Errorf("replicas did not converge: %w", err)
	}
	return diffs, nil
}

// compareOnce compares the nodes' states once; why says what kept them
// apart (nil when they agree, and diffs lists the files' differences).
func (c *Cluster) compareOnce(ctx context.Context) (diffs, why []string) {
	var sts []*dlmv1.StatusResponse
	for _, n := range c.Nodes {
		st, err := n.Status(ctx)
		if err != nil {
			return nil, []string{fmt.Sprintf("%s: %v", n.ID, err)}
		}
		if st.GetNode().GetLeaderUrl() == "" {
			return nil, []string{n.ID + " knows no leader"}
		}
		sts = append(sts, st)
	}
	if d := CompareStatus(c.Nodes, sts); len(d) > 0 {
		return nil, d
	}
	diffs = CompareFiles(c.Nodes)
	// The comparison holds only if nothing was applied while the files were
	// read.
	for i, n := range c.Nodes {
		st, err := n.Status(ctx)
		if err != nil || st.GetNode().GetAppliedIndex() != sts[i].GetNode().GetAppliedIndex() {
			return nil, []string{errNotSettled.Error()}
		}
	}
	return diffs, nil
}
