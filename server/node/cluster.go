package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
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

// AddMember adds a node as a nonvoter or a voter, promotes a nonvoter, or
// records a member's client URL, and returns the commit index after the
// change. It never rebinds: an id that is a member at another Raft address,
// or a Raft address that is another member's, is refused (MEMBER_CONFLICT),
// as is a new client URL for a member unless the server at that URL answers
// as that member (a node that moved to a new port announces itself; nobody
// can point a member's clients at a server of their own). It never demotes
// a voter: asking for a nonvoter that is a voter changes nothing.
func (n *Node) AddMember(ctx context.Context, id, raftAddr, clientURL string, voter bool) (uint64, error) {
	if id == "" || raftAddr == "" {
		return 0, fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "a member needs an id and a raft address")
	}
	if clientURL != "" {
		if u, err := url.Parse(clientURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return 0, fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "the client URL %q is not an http:// or https:// URL", clientURL)
		}
	}
	if _, err := n.leading(); err != nil {
		return 0, err
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "configuration: %v", err)
	}
	var member *raft.Server
	for _, srv := range f.Configuration().Servers {
		switch {
		case string(srv.ID) == id:
			member = &srv
		case string(srv.Address) == raftAddr:
			return 0, fail(dlmv1.ErrorReason_ERROR_REASON_MEMBER_CONFLICT, "raft address %s is member %s's: one address, one member", raftAddr, srv.ID)
		}
	}
	if member != nil && string(member.Address) != raftAddr {
		return 0, fail(dlmv1.ErrorReason_ERROR_REASON_MEMBER_CONFLICT, "member %s is at raft address %s, not %s: to move it, remove it and add it again", id, member.Address, raftAddr)
	}
	if member != nil && clientURL != "" {
		if old := n.memberURL(id); old != "" && old != clientURL {
			if err := n.verifyURL(ctx, id, clientURL); err != nil {
				return 0, fail(dlmv1.ErrorReason_ERROR_REASON_MEMBER_CONFLICT, "member %s's client URL is %s; %s does not answer as %s (%v)", id, old, clientURL, id, err)
			}
		}
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	var change raft.IndexFuture
	switch {
	case member == nil && voter:
		change = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeout)
	case member == nil:
		change = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeout)
	case voter && member.Suffrage != raft.Voter:
		change = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeout)
	}
	if change != nil {
		if err := change.Error(); err != nil {
			return 0, n.raftError(err)
		}
		n.log.Info("member added", "id", id, "raft", raftAddr, "voter", voter)
	}
	if clientURL != "" && n.fsm.NodeURL(id) != clientURL {
		if _, err := n.propose(ctx, &raftlogv1.Command{Op: &raftlogv1.Command_NodeAddress{NodeAddress: &raftlogv1.NodeAddress{Id: id, ClientUrl: clientURL}}}); err != nil {
			return 0, err
		}
		n.log.Info("member's client URL recorded", "id", id, "url", clientURL)
	}
	return n.raft.CommitIndex(), nil
}

// memberURL is the client URL recorded for a member (this node's own is its
// configured one).
func (n *Node) memberURL(id string) string {
	if id == n.cfg.ID {
		return n.cfg.ClientURL
	}
	return n.fsm.NodeURL(id)
}

// verifyURL checks that the server at u is the member id, by asking it for
// its status.
func (n *Node) verifyURL(ctx context.Context, id, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c := dlmv1connect.NewLockServiceClient(n.clusterClient(3*time.Second), u, connect.WithInterceptors(auth.Bearer(n.cfg.AdminToken)))
	res, err := c.Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{}))
	if err != nil {
		return err
	}
	if got := res.Msg.GetNode().GetId(); got != id {
		return fmt.Errorf("it is node %q", got)
	}
	return nil
}

// ownMembership returns this node's Raft address and suffrage as its latest
// configuration has them, and whether it is a member at all.
func (n *Node) ownMembership() (addr string, voter, ok bool) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return "", false, false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == n.cfg.ID {
			return string(srv.Address), srv.Suffrage == raft.Voter, true
		}
	}
	return "", false, false
}

// announce records this member's client URL through the leader, for members
// that did not join through one (a fixed --peers cluster): then every node
// can list every member's URL. It repeats the member's id, Raft address and
// suffrage exactly as the configuration has them, so that it only ever
// records the URL: not its own --raft address (which may differ from the
// one its peers use, behind a proxy or NAT), not a demotion, and not a
// re-adding of a node that was removed.
func (n *Node) announce() {
	defer n.done.Done()
	hc := n.clusterClient(5 * time.Second)
	backoff := 200 * time.Millisecond
	for n.fsm.NodeURL(n.cfg.ID) != n.cfg.ClientURL {
		addr, voter, member := n.ownMembership()
		if target := n.leaderURL(); member && target != "" && target != n.cfg.ClientURL {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c := dlmv1connect.NewClusterServiceClient(hc, target, connect.WithInterceptors(auth.Bearer(n.cfg.AdminToken)))
			_, err := c.AddMember(ctx, connect.NewRequest(&dlmv1.AddMemberRequest{
				Id: n.cfg.ID, RaftAddress: addr, ClientUrl: n.cfg.ClientURL, Voter: voter,
			}))
			cancel()
			if err != nil {
				level := slog.LevelDebug
				if c := connect.CodeOf(err); c == connect.CodeUnauthenticated || c == connect.CodePermissionDenied || c == connect.CodeAlreadyExists {
					// Retrying will not help: the operator must act.
					level = slog.LevelWarn
				}
				n.log.Log(context.Background(), level, "announcing the client URL", "via", target, "err", err)
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

// RemoveMember removes a node from the cluster. An id that is not a member
// is MEMBER_UNKNOWN.
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	if id == "" {
		return fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "a member id is required")
	}
	if _, err := n.leading(); err != nil {
		return err
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "configuration: %v", err)
	}
	if !slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == id }) {
		return fail(dlmv1.ErrorReason_ERROR_REASON_MEMBER_UNKNOWN, "no member has the id %q", id)
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
		c := dlmv1connect.NewClusterServiceClient(hc, *target, connect.WithInterceptors(auth.Bearer(n.cfg.AdminToken)))
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
