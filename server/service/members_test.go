package service_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

// memberURL is the client URL the leader lists for id.
func memberURL(t *testing.T, srv *servertest.Server, id string) string {
	t.Helper()
	for _, m := range members(t, srv) {
		if m.ID == id {
			return m.ClientURL
		}
	}
	t.Fatalf("no member %s in %v", id, members(t, srv))
	return ""
}

// Even with the admin token, AddMember never rebinds: no id twice at two
// Raft addresses, no Raft address for two ids, no client URL pointed at a
// server that is not the member (the capture of session secrets
// through a rebound URL), and RemoveMember of an unknown id is NotFound.
// A member's URL may change to a server that answers as that member (a
// node restarted on a new port announces itself).
func TestAddMemberRefusesRebinding(t *testing.T) {
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c := clusterClient(srv, nil, servertest.AdminToken)
	add := func(id, raftAddr, url string, voter bool) error {
		_, err := c.AddMember(ctx, connect.NewRequest(&dlmv1.AddMemberRequest{Id: id, RaftAddress: raftAddr, ClientUrl: url, Voter: voter}))
		return err
	}
	conflict := func(what string, err error) {
		t.Helper()
		wantCode(t, what, err, connect.CodeAlreadyExists, dlmv1.ErrorReason_ERROR_REASON_MEMBER_CONFLICT)
	}
	self := members(t, srv)[0]

	conflict("the leader's id at another address", add(self.ID, "192.0.2.9:17000", "", true))
	conflict("another id at the leader's address", add("evil", self.RaftAddr, "", true))
	conflict("the leader's URL rebound", add(self.ID, self.RaftAddr, "http://127.0.0.1:9", true))
	wantCode(t, "a URL that is no URL", add("n2", "192.0.2.1:17000", "ftp://x", false), connect.CodeInvalidArgument, 0)
	// Asking for a voter as a nonvoter demotes nothing.
	if err := add(self.ID, self.RaftAddr, "", false); err != nil {
		t.Fatalf("repeating the leader as it is: %v", err)
	}
	if !members(t, srv)[0].Voter {
		t.Fatal("the leader was demoted")
	}

	// A nonvoter (it cannot weaken the quorum, so it may be unreachable).
	twin := servertest.Start(t, &node.Config{ID: "n2"})
	if err := add("n2", "192.0.2.1:17000", twin.URL, false); err != nil {
		t.Fatalf("adding n2: %v", err)
	}
	conflict("n2 at another address", add("n2", "192.0.2.1:17001", "", false))
	conflict("n3 at n2's address", add("n3", "192.0.2.1:17000", "", false))
	conflict("n2's URL to a dead port", add("n2", "192.0.2.1:17000", "http://127.0.0.1:9", false))
	other := servertest.Start(t, &node.Config{ID: "n3"})
	conflict("n2's URL to node n3", add("n2", "192.0.2.1:17000", other.URL, false))
	if got := memberURL(t, srv, "n2"); got != twin.URL {
		t.Fatalf("n2's URL is %s after refused rebinding, want %s", got, twin.URL)
	}
	moved := servertest.Start(t, &node.Config{ID: "n2"})
	if err := add("n2", "192.0.2.1:17000", moved.URL, false); err != nil {
		t.Fatalf("n2 moving to a server that is n2: %v", err)
	}
	if got := memberURL(t, srv, "n2"); got != moved.URL {
		t.Fatalf("n2's URL is %s, want %s", got, moved.URL)
	}

	before := members(t, srv)
	_, err := c.RemoveMember(ctx, connect.NewRequest(&dlmv1.RemoveMemberRequest{Id: "ghost"}))
	wantCode(t, "RemoveMember ghost", err, connect.CodeNotFound, dlmv1.ErrorReason_ERROR_REASON_MEMBER_UNKNOWN)
	if after := members(t, srv); len(after) != len(before) {
		t.Fatalf("members changed: %v, was %v", after, before)
	}
	if _, err := c.RemoveMember(ctx, connect.NewRequest(&dlmv1.RemoveMemberRequest{Id: "n2"})); err != nil {
		t.Fatalf("RemoveMember n2: %v", err)
	}
	if n := len(members(t, srv)); n != 1 {
		t.Fatalf("%d members after removing n2", n)
	}
}
