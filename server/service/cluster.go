package service

import (
	"context"
	"io"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/node"
)

// Membership is what the cluster service needs of a node.
type Membership interface {
	AddMember(ctx context.Context, id, raftAddr, clientURL string, voter bool) (uint64, error)
	RemoveMember(ctx context.Context, id string) error
	Members() ([]node.Member, error)
	SaveSnapshot(ctx context.Context, send func(node.SnapshotInfo, io.Reader) error) error
}

var _ Membership = (*node.Node)(nil)

// Cluster implements the ClusterService handler.
type Cluster struct {
	m Membership
}

var _ dlmv1connect.ClusterServiceHandler = (*Cluster)(nil)

// NewCluster returns the cluster service for m.
func NewCluster(m Membership) *Cluster { return &Cluster{m: m} }

// AddMember adds a node or promotes it to voter.
func (c *Cluster) AddMember(ctx context.Context, req *connect.Request[dlmv1.AddMemberRequest]) (*connect.Response[dlmv1.AddMemberResponse], error) {
	m := req.Msg
	commit, err := c.m.AddMember(ctx, m.GetId(), m.GetRaftAddress(), m.GetClientUrl(), m.GetVoter())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&dlmv1.AddMemberResponse{CommitIndex: commit}), nil
}

// RemoveMember removes a node.
func (c *Cluster) RemoveMember(ctx context.Context, req *connect.Request[dlmv1.RemoveMemberRequest]) (*connect.Response[dlmv1.RemoveMemberResponse], error) {
	if err := c.m.RemoveMember(ctx, req.Msg.GetId()); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&dlmv1.RemoveMemberResponse{}), nil
}

// ListMembers lists the members.
func (c *Cluster) ListMembers(context.Context, *connect.Request[dlmv1.ListMembersRequest]) (*connect.Response[dlmv1.ListMembersResponse], error) {
	members, err := c.m.Members()
	if err != nil {
		return nil, toConnect(err)
	}
	res := &dlmv1.ListMembersResponse{}
	for _, m := range members {
		res.Members = append(res.Members, memberStatus(m))
	}
	return connect.NewResponse(res), nil
}

// clientURLs lists the members' client URLs; none when the membership
// cannot be read.
func (c *Cluster) clientURLs() []string {
	members, err := c.m.Members()
	if err != nil {
		return nil
	}
	urls := make([]string, 0, len(members))
	for _, m := range members {
		if m.ClientURL != "" {
			urls = append(urls, m.ClientURL)
		}
	}
	return urls
}
