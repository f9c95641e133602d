package node

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// recordAddress replicates a member's client URL, retrying while this node
// leads.
func (n *Node) recordAddress(id, url string) {
	for attempt := 0; attempt < 10; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.propose(ctx, &raftlogv1.Command{Op: &raftlogv1.Command_NodeAddress{NodeAddress: &raftlogv1.NodeAddress{Id: id, ClientUrl: url}}})
		cancel()
		if err == nil {
			return
		}
		var ne *Error
		if errors.As(err, &ne) && ne.Reason == dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER {
			return
		}
		select {
		case <-n.stop:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Member is one member of the cluster.
type Member struct {
	ID        string
	RaftAddr  string
	ClientURL string
	Voter     bool
	Leader    bool
}

// Members lists the members of this node's latest configuration.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "configuration: %v", err)
	}
	_, leader := n.raft.LeaderWithID()
	var out []Member
	for _, srv := range f.Configuration().Servers {
		url := n.fsm.NodeURL(string(srv.ID))
		if srv.ID == raft.ServerID(n.cfg.ID) {
			url = n.cfg.ClientURL
		}
		out = append(out, Member{
			ID: string(srv.ID), RaftAddr: string(srv.Address), ClientURL: url,
			Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leader,
		})
	}
	return out, nil
}

// AddMember adds a node as a nonvoter or a voter (promoting a nonvoter), and
// records its client URL. It returns the commit index after the change.
func (n *Node) AddMember(ctx context.Context, id, raftAddr, clientURL string, voter bool) (uint64, error) {
	if id == "" || raftAddr == "" {
		return 0, fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "a member needs an id and a raft address")
	}
	if _, err := n.leading(); err != nil {
		return 0, err
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if !n.isMember(id, raftAddr, voter) {
		var f raft.IndexFuture
		if voter {
			f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeout)
		} else {
			f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeout)
		}
		if err := f.Error(); err != nil {
			return 0, n.raftError(err)
		}
	}
	if clientURL != "" && n.fsm.NodeURL(id) != clientURL {
		if _, err := n.propose(ctx, &raftlogv1.Command{Op: &raftlogv1.Command_NodeAddress{NodeAddress: &raftlogv1.NodeAddress{Id: id, ClientUrl: clientURL}}}); err != nil {
			return 0, err
		}
	}
	n.log.Info("member added", "id", id, "raft", raftAddr, "voter", voter)
	return n.raft.CommitIndex(), nil
}

// isMember reports whether the configuration already has the member as
// asked, so that announcing a client URL changes no membership.
func (n *Node) isMember(id, raftAddr string, voter bool) bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id {
			return string(srv.Address) == raftAddr && (srv.Suffrage == raft.Voter) == voter
		}
	}
	return false
}

// announce records this member's client URL through the leader, for members
// that did not join through one (a fixed --peers cluster): then every node
// can list every member's URL.
func (n *Node) announce() {
	defer n.done.Done()
	hc := n.clusterClient(5 * time.Second)
	backoff := 200 * time.Millisecond
	for n.fsm.NodeURL(n.cfg.ID) != n.cfg.ClientURL {
		if target := n.leaderURL(); target != "" && target != n.cfg.ClientURL {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c := dlmv1connect.NewClusterServiceClient(hc, target)
			_, err := c.AddMember(ctx, connect.NewRequest(&dlmv1.AddMemberRequest{
				Id: n.cfg.ID, RaftAddress: n.cfg.RaftAddr, ClientUrl: n.cfg.ClientURL, Voter: n.isMember(n.cfg.ID, n.cfg.RaftAddr, true),
			}))
			cancel()
			if err != nil {
				n.log.Debug("announcing the client URL", "via", target, "err", err)
			}
		}
		select {
		case <-n.stop:
			return
		case <-time.After(backoff + rand.N(backoff)):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// RemoveMember removes a node from the cluster.
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	if id == "" {
		return fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "a member id is required")
	}
	if _, err := n.leading(); err != nil {
		return err
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, timeout).Error(); err != nil {
		return n.raftError(err)
	}
	n.log.Info("member removed", "id", id)
	return nil
}

func (n *Node) raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return &Error{Reason: dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, LeaderURL: n.leaderURL(), Msg: "leadership lost: retry at the leader"}
	default:
		return fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "membership change failed: %v", err)
	}
}

// join adds this node to the cluster named by cfg.Join: first as a
// nonvoter, so that its catch-up never weakens the quorum, then as a voter
// once it has applied what was committed when it was added. Both steps are
// idempotent, so a node that restarts mid-way simply joins again.
func (n *Node) join() {
	defer n.done.Done()
	hc := n.clusterClient(10 * time.Second)
	backoff := 100 * time.Millisecond
	target := n.cfg.Join[0]
	for attempt := 0; ; attempt++ {
		err := n.joinOnce(hc, &target)
		if err == nil {
			n.log.Info("joined the cluster as a voter")
			return
		}
		n.log.Warn("joining the cluster", "via", target, "err", err)
		if url := leaderHint(err); url != "" {
			target = url
		} else {
			target = n.cfg.Join[attempt%len(n.cfg.Join)]
		}
		select {
		case <-n.stop:
			return
		case <-time.After(backoff + rand.N(backoff)):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (n *Node) joinOnce(hc *http.Client, target *string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	add := func(voter bool) (uint64, error) {
		c := dlmv1connect.NewClusterServiceClient(hc, *target)
		res, err := c.AddMember(ctx, connect.NewRequest(&dlmv1.AddMemberRequest{
			Id: n.cfg.ID, RaftAddress: n.cfg.RaftAddr, ClientUrl: n.cfg.ClientURL, Voter: voter,
		}))
		if err != nil {
			return 0, err
		}
		return res.Msg.GetCommitIndex(), nil
	}
	commit, err := add(false)
	if err != nil {
		return err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n.raft.AppliedIndex() < commit {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	_, err = add(true)
	return err
}

// leaderHint returns the leader URL carried by a NOT_LEADER error.
func leaderHint(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if ed, ok := v.(*dlmv1.ErrorDetail); ok {
				return ed.GetLeaderUrl()
			}
		}
	}
	return ""
}

// clusterClient is the HTTP client of this node's calls to other members,
// trusting the CA of their https:// URLs.
func (n *Node) clusterClient(timeout time.Duration) *http.Client {
	hc := &http.Client{Timeout: timeout}
	if n.cfg.ClusterTLS != nil {
		hc.Transport = &http.Transport{TLSClientConfig: n.cfg.ClusterTLS.Clone(), ForceAttemptHTTP2: true}
	}
	return hc
}
