package service_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

const (
	readToken   = "read-token-0123456789abcdef"
	clientToken = "client-token-0123456789abcdef"
)

func withToken(opts []connect.ClientOption, tok string) []connect.ClientOption {
	if tok == "" {
		return opts
	}
	return append(slices.Clone(opts), connect.WithInterceptors(auth.Bearer(tok)))
}

func clusterClient(srv *servertest.Server, opts []connect.ClientOption, tok string) dlmv1connect.ClusterServiceClient {
	return dlmv1connect.NewClusterServiceClient(servertest.HTTPClient(), srv.URL, withToken(opts, tok)...)
}

func lockClient(srv *servertest.Server, opts []connect.ClientOption, tok string) dlmv1connect.LockServiceClient {
	return dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), srv.URL, withToken(opts, tok)...)
}

func members(t *testing.T, srv *servertest.Server) []node.Member {
	t.Helper()
	ms, err := srv.Node.Members()
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// wantCode fails unless err has the code (and, if not unspecified, the
// reason).
func wantCode(t *testing.T, what string, err error, code connect.Code, reason dlmv1.ErrorReason) {
	t.Helper()
	if connect.CodeOf(err) != code || (reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED && reasonOf(err) != reason) {
		t.Fatalf("%s: %v (reason %v), want %v %v", what, err, reasonOf(err), code, reason)
	}
}

// snapshotErr opens a snapshot stream and returns the error it ends with.
func snapshotErr(ctx context.Context, c dlmv1connect.ClusterServiceClient) error {
	s, err := c.SaveSnapshot(ctx, connect.NewRequest(&dlmv1.SaveSnapshotRequest{}))
	if err != nil {
		return err
	}
	defer s.Close()
	for s.Receive() {
	}
	return s.Err()
}

// The attack: anonymous calls (or calls with a made-up token) add
// voters that take the quorum away, rebind a member's client URL, remove
// the leader, and download every session's secret. Each is Unauthenticated
// and changes nothing, on every protocol, on a server with no flags.
func TestAdminCallsNeedTheAdminToken(t *testing.T) {
	srv := servertest.Start(t, nil)
	before := members(t, srv)
	self := before[0]
	for _, p := range protocols {
		for _, tok := range []string{"", "made-up-token-0123456789abcdef"} {
			t.Run(p.name+"/"+map[bool]string{true: "anonymous", false: "unknown token"}[tok == ""], func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				c := clusterClient(srv, p.opts, tok)
				_, err := c.AddMember(ctx, connect.NewRequest(&dlmv1.AddMemberRequest{Id: "evil1", RaftAddress: "192.0.2.1:17000", Voter: true}))
				wantCode(t, "AddMember evil1", err, connect.CodeUnauthenticated, 0)
				if msg := err.Error(); !strings.Contains(msg, "AddMember") || !strings.Contains(msg, "admin") {
					t.Errorf("the refusal does not say what is needed: %q", msg)
				}
				_, err = c.AddMember(ctx, connect.NewRequest(&dlmv1.AddMemberRequest{Id: self.ID, RaftAddress: self.RaftAddr, ClientUrl: "http://127.0.0.1:9999", Voter: true}))
				wantCode(t, "AddMember rebinding the URL", err, connect.CodeUnauthenticated, 0)
				_, err = c.RemoveMember(ctx, connect.NewRequest(&dlmv1.RemoveMemberRequest{Id: self.ID}))
				wantCode(t, "RemoveMember", err, connect.CodeUnauthenticated, 0)
				wantCode(t, "SaveSnapshot", snapshotErr(ctx, c), connect.CodeUnauthenticated, 0)
				// What needs no token still works with none (or a stray one).
				if _, err := c.ListMembers(ctx, connect.NewRequest(&dlmv1.ListMembersRequest{})); err != nil {
					t.Fatalf("ListMembers: %v", err)
				}
				if _, err := lockClient(srv, p.opts, tok).Init(ctx, connect.NewRequest(&dlmv1.InitRequest{})); err != nil {
					t.Fatalf("Init: %v", err)
				}
			})
		}
	}
	if after := members(t, srv); !slices.Equal(after, before) {
		t.Fatalf("the members changed: %v, was %v", after, before)
	}
	// The admin token opens them.
	if err := snapshotErr(t.Context(), clusterClient(srv, nil, servertest.AdminToken)); err != nil {
		t.Fatalf("SaveSnapshot with the admin token: %v", err)
	}
}

// With --auth-tokens, the lock API needs a client token, reads a read
// token, administration the admin token; health checks need none. A token
// of a lower role is PermissionDenied. The Go client sends its token on
// both protocols.
func TestRolesWithAuthTokens(t *testing.T) {
	creds := []auth.Credential{{Role: auth.Read, Token: readToken}, {Role: auth.Client, Token: clientToken}}
	srv := servertest.StartGuarded(t, nil, auth.NewGuard(servertest.AdminToken, creds, true))
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			initReq := func() *connect.Request[dlmv1.InitRequest] { return connect.NewRequest(&dlmv1.InitRequest{}) }
			_, err := lockClient(srv, p.opts, "").Init(ctx, initReq())
			wantCode(t, "anonymous Init", err, connect.CodeUnauthenticated, 0)
			_, err = lockClient(srv, p.opts, "").Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{}))
			wantCode(t, "anonymous Status", err, connect.CodeUnauthenticated, 0)
			_, err = lockClient(srv, p.opts, readToken).Init(ctx, initReq())
			wantCode(t, "Init with a read token", err, connect.CodePermissionDenied, 0)
			if msg := err.Error(); !strings.Contains(msg, "client role") || !strings.Contains(msg, "read role") {
				t.Errorf("the refusal does not name the roles: %q", msg)
			}
			if _, err := lockClient(srv, p.opts, readToken).Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{})); err != nil {
				t.Fatalf("Status with a read token: %v", err)
			}
			if _, err := clusterClient(srv, p.opts, readToken).ListMembers(ctx, connect.NewRequest(&dlmv1.ListMembersRequest{})); err != nil {
				t.Fatalf("ListMembers with a read token: %v", err)
			}
			// The lock views are reads too.
			reader := lockClient(srv, p.opts, readToken)
			if _, err := reader.CheckToken(ctx, connect.NewRequest(&dlmv1.CheckTokenRequest{Token: 1})); err != nil {
				t.Fatalf("CheckToken with a read token: %v", err)
			}
			if _, err := reader.ListLocks(ctx, connect.NewRequest(&dlmv1.ListLocksRequest{})); err != nil {
				t.Fatalf("ListLocks with a read token: %v", err)
			}
			if _, err := reader.LockHistory(ctx, connect.NewRequest(&dlmv1.LockHistoryRequest{})); err != nil {
				t.Fatalf("LockHistory with a read token: %v", err)
			}
			_, err = lockClient(srv, p.opts, "").ListLocks(ctx, connect.NewRequest(&dlmv1.ListLocksRequest{}))
			wantCode(t, "anonymous ListLocks", err, connect.CodeUnauthenticated, 0)
			for _, tok := range []string{clientToken, servertest.AdminToken} {
				if _, err := lockClient(srv, p.opts, tok).Init(ctx, initReq()); err != nil {
					t.Fatalf("Init with a %s token: %v", tok, err)
				}
			}
			for _, tok := range []string{readToken, clientToken} {
				_, err = clusterClient(srv, p.opts, tok).AddMember(ctx, connect.NewRequest(&dlmv1.AddMemberRequest{Id: "evil1", RaftAddress: "192.0.2.1:17000"}))
				wantCode(t, "AddMember with "+tok, err, connect.CodePermissionDenied, 0)
				wantCode(t, "SaveSnapshot with "+tok, snapshotErr(ctx, clusterClient(srv, p.opts, tok)), connect.CodePermissionDenied, 0)
			}

			// The Go client.
			copts := []client.Option{client.WithHTTPClient(servertest.HTTPClient()), client.WithRetryBudget(5 * time.Second)}
			if p.name == "grpc" {
				copts = append(copts, client.WithGRPC())
			}
			for _, tok := range []string{"", readToken} {
				_, err := client.New(ctx, []string{srv.URL}, append(copts, client.WithToken(tok))...)
				if !errors.Is(err, client.ErrNotAuthorized) {
					t.Fatalf("client.New with token %q: %v, want ErrNotAuthorized", tok, err)
				}
			}
			c, err := client.New(ctx, []string{srv.URL}, append(copts, client.WithToken(clientToken))...)
			if err != nil {
				t.Fatalf("client.New with a client token: %v", err)
			}
			defer c.Close(ctx)
			lk, err := c.Acquire(ctx)
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			if err := lk.Append(ctx, "file_1", []byte(p.name)); err != nil {
				t.Fatalf("Append: %v", err)
			}
			if err := lk.Release(ctx); err != nil {
				t.Fatalf("Release: %v", err)
			}
		})
	}
	// Load balancers probe health without a token.
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/grpc.health.v1.Health/Check", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := servertest.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "SERVING") {
		t.Fatalf("anonymous health check: %d %s", res.StatusCode, body)
	}
}
