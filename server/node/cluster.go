package node

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
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
			verify := n.cfg.VerifyURL
			if verify == nil {
				verify = func(context.Context, string, string) error { return errors.New("this node cannot check a URL") }
			}
			if err := verify(ctx, id, clientURL); err != nil {
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

// Self is this node's standing in its latest configuration: what a caller
// outside the node (server/membership) needs to join or announce it.
type Self struct {
	// ID, RaftAddr and ClientURL are the node's own, as configured (ID as
	// the data folder settled it).
	ID, RaftAddr, ClientURL string
	// Member says whether the configuration has this node at all;
	// MemberAddr and Voter are its address and suffrage there.
	Member     bool
	MemberAddr string
	Voter      bool
	// RecordedURL is the client URL the replicated state holds for it.
	RecordedURL string
	// LeaderURL is the leader's client URL, when known.
	LeaderURL string
}

// Self reports this node's standing in the cluster.
func (n *Node) Self() Self {
	s := Self{ID: n.cfg.ID, RaftAddr: n.cfg.RaftAddr, ClientURL: n.cfg.ClientURL, RecordedURL: n.fsm.NodeURL(n.cfg.ID), LeaderURL: n.leaderURL()}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if string(srv.ID) == n.cfg.ID {
				s.Member, s.MemberAddr, s.Voter = true, string(srv.Address), srv.Suffrage == raft.Voter
			}
		}
	}
	return s
}

// AppliedIndex is the index of the last entry this node applied.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

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
