package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/dlm/dlm/client"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
	"github.com/dlm/dlm/server/service"
)

// The conformance table, testdata/conformance/scenarios.json, is shared
// with the TypeScript client's test (client/ts/test/conformance.test.ts):
// both clients must give every scenario the same reasons, errors and retry
// decisions.

type conformanceFile struct {
	Tokens    map[string]string     `json:"tokens"`
	Scenarios []conformanceScenario `json:"scenarios"`
}

type conformanceScenario struct {
	Name   string `json:"name"`
	Family string `json:"family"`
	Server struct {
		MaxAppend   int     `json:"max_append"`
		MaxSection  int     `json:"max_section"`
		MaxFileSize int64   `json:"max_file_size"`
		MaxSessions int     `json:"max_sessions"`
		InitRate    float64 `json:"init_rate"`
		InitBurst   int     `json:"init_burst"`
		AuthTokens  bool    `json:"auth_tokens"`
		MinFree     int64   `json:"min_free_space"`
		MaxLocks    int     `json:"max_locks"`
		// Nodes, when above 1, runs a replicated cluster (with the default
		// configuration) instead of one server, so that steps can go to a
		// follower.
		Nodes int `json:"nodes"`
	} `json:"server"`
	ClientOptions struct {
		Token             string `json:"token"`
		DeadEndpointFirst bool   `json:"dead_endpoint_first"`
		FollowerFirst     bool   `json:"follower_first"`
	} `json:"client_options"`
	Steps []conformanceStep `json:"steps"`
}

type conformanceStep struct {
	RPC string `json:"rpc"`
	// At is "follower" to send a raw call to a follower, not the leader.
	At      string          `json:"at"`
	Request json.RawMessage `json:"request"`
	Save    string          `json:"save"`
	Client  string          `json:"client"`
	File    string          `json:"file"`
	Data    string          `json:"data"`
	// Lock and Mode choose the lock of a client acquire: a lock name (unset:
	// the default lock) and "shared" or "exclusive".
	Lock   *string `json:"lock"`
	Mode   string  `json:"mode"`
	Expect struct {
		OK      bool   `json:"ok"`
		Reason  string `json:"reason"`
		Code    string `json:"code"`
		Error   string `json:"error"`
		Retried *bool  `json:"retried"`
	} `json:"expect"`
}

func TestConformance(t *testing.T) {
	raw, err := os.ReadFile("../../testdata/conformance/scenarios.json")
	if err != nil {
		t.Fatal(err)
	}
	var file conformanceFile
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	families := make(map[string]bool)
	for _, sc := range file.Scenarios {
		families[sc.Family] = true
		t.Run(sc.Name, func(t *testing.T) { runScenario(t, file.Tokens, sc) })
	}
	if len(file.Scenarios) < 12 || len(families) < 7 {
		t.Errorf("%d scenarios in %d families: the table lost its coverage", len(file.Scenarios), len(families))
	}
}

func runScenario(t *testing.T, tokens map[string]string, sc conformanceScenario) {
	cfg := &node.Config{MaxAppendBytes: sc.Server.MaxAppend, MaxSectionBytes: sc.Server.MaxSection, MaxFileBytes: sc.Server.MaxFileSize, MaxSessions: sc.Server.MaxSessions, MinFreeSpace: sc.Server.MinFree, MaxLocks: sc.Server.MaxLocks}
	var (
		leaderURL string
		nodes     []*clusterNode
	)
	switch {
	case sc.Server.Nodes > 1:
		nodes = startCluster(t, sc.Server.Nodes)
		leaderURL = awaitLeader(t, nodes).url
	case sc.Server.AuthTokens:
		creds := []auth.Credential{{Role: auth.Client, Token: tokens["client"]}, {Role: auth.Read, Token: tokens["read"]}}
		leaderURL = servertest.StartGuarded(t, cfg, auth.NewGuard(servertest.AdminToken, creds, true)).URL
	default:
		var opts []service.Option
		if sc.Server.InitRate > 0 {
			opts = append(opts, service.WithInitRate(service.InitRate{Rate: sc.Server.InitRate, Burst: sc.Server.InitBurst}))
		}
		leaderURL = servertest.Start(t, cfg, opts...).URL
	}
	endpoints := []string{leaderURL}
	if sc.ClientOptions.DeadEndpointFirst {
		endpoints = append([]string{silentEndpoint(t)}, endpoints...)
	}
	if sc.ClientOptions.FollowerFirst {
		endpoints = append([]string{followerOf(t, nodes)}, endpoints...)
	}
	rawAt := func(url string) rawClients {
		return rawClients{
			lock:    dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), url),
			cluster: dlmv1connect.NewClusterServiceClient(servertest.HTTPClient(), url, connect.WithInterceptors(adminToken)),
		}
	}
	raw := rawAt(leaderURL)

	var retries atomic.Int64
	opts := []client.Option{
		client.WithLogger(slog.New(retryCounter{&retries})), client.WithRetryBudget(10 * time.Second),
		client.WithAttemptTimeout(2 * time.Second), client.WithoutKeepAlive(),
	}
	if tok := sc.ClientOptions.Token; tok != "" {
		opts = append(opts, client.WithToken(tokens[tok]))
	}
	vars := make(map[string]string)
	var (
		clients []*client.Client
		lk      *client.Lock
	)
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close(context.Background())
		}
	})
	for i, st := range sc.Steps {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		retries.Store(0)
		var err error
		what := st.RPC
		if st.RPC != "" {
			api := raw
			if st.At == "follower" {
				api = rawAt(followerOf(t, nodes))
			}
			err = rawCall(ctx, api, st, vars)
		} else {
			what = st.Client
			switch st.Client {
			case "open":
				var c *client.Client
				if c, err = client.New(ctx, endpoints, opts...); err == nil {
					clients = append(clients, c)
				}
			case "acquire":
				var lo []client.LockOption
				if st.Lock != nil {
					lo = append(lo, client.LockName(*st.Lock))
				}
				if st.Mode == "shared" {
					lo = append(lo, client.Shared())
				}
				lk, err = clients[len(clients)-1].Acquire(ctx, lo...)
			case "append":
				err = lk.Append(ctx, st.File, []byte(st.Data))
			case "release":
				err = lk.Release(ctx)
			case "close":
				err = clients[len(clients)-1].Close(ctx)
				clients = clients[:len(clients)-1]
			default:
				t.Fatalf("step %d: no client call %q", i+1, st.Client)
			}
		}
		cancel()
		retried := retries.Load() > 0
		if st.RPC != "" && err != nil {
			retried = client.AsError(err).Retryable()
		}
		x := st.Expect
		if x.Retried != nil && retried != *x.Retried {
			t.Errorf("step %d (%s): retried %v, want %v (err %v)", i+1, what, retried, *x.Retried, err)
		}
		if x.OK {
			if err != nil {
				t.Fatalf("step %d (%s): %v", i+1, what, err)
			}
			continue
		}
		if err == nil {
			t.Fatalf("step %d (%s) succeeded; want %s", i+1, what, x.Reason)
		}
		e := client.AsError(err)
		if e.Reason.String() != x.Reason || e.Code.String() != x.Code {
			t.Errorf("step %d (%s): reason %v, code %v; want %s, %s (%v)", i+1, what, e.Reason, e.Code, x.Reason, x.Code, err)
		}
		want, ok := sentinelNames[x.Error]
		if x.Error == "NotAuthorized" {
			want, ok = client.ErrNotAuthorized, true
		}
		// A raw call's error is read as the client reads the answers it
		// gets.
		got := err
		if st.RPC != "" {
			got = e
		}
		if !ok || !errors.Is(got, want) {
			t.Errorf("step %d (%s): %v is not Err%s", i+1, what, got, x.Error)
		}
	}
}

// adminToken sends the servers' admin token, which ClusterService needs.
var adminToken = connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+servertest.AdminToken)
		return next(ctx, req)
	}
})

// followerOf is the URL of a node that follows a known leader now: an
// election can move the lead (a busy machine misses heartbeats), so the
// runner picks the follower when a step needs one.
func followerOf(t *testing.T, nodes []*clusterNode) string {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for i := 0; time.Now().Before(deadline) && i < 1000; i++ {
		for _, n := range nodes {
			st, err := n.node.Status(t.Context(), node.StatusQuery{PageSize: 1})
			if err == nil && st.Node.Role == "follower" && st.Node.LeaderURL != "" {
				return n.url
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no node follows a known leader")
	return ""
}

// rawClients are the services the raw steps call.
type rawClients struct {
	lock    dlmv1connect.LockServiceClient
	cluster dlmv1connect.ClusterServiceClient
}

// rawCall sends one LockService or ClusterService request, written in protojson with
// ${name.field} taken from earlier answers, and saves the answer's ids
// (ListMembers: the first member's id and raft_address) under st.Save.
func rawCall(ctx context.Context, api rawClients, st conformanceStep, vars map[string]string) error {
	body := string(st.Request)
	for k, v := range vars {
		body = strings.ReplaceAll(body, "${"+k+"}", v)
	}
	save := func(field string, v uint64) {
		if st.Save != "" {
			vars[st.Save+"."+field] = fmt.Sprint(v)
		}
	}
	var req proto.Message
	switch st.RPC {
	case "Init":
		req = &dlmv1.InitRequest{}
	case "LockAcquire":
		req = &dlmv1.LockAcquireRequest{}
	case "LockRelease":
		req = &dlmv1.LockReleaseRequest{}
	case "AppendFile":
		req = &dlmv1.AppendFileRequest{}
	case "Close":
		req = &dlmv1.CloseRequest{}
	case "CheckToken":
		req = &dlmv1.CheckTokenRequest{}
	case "ListLocks":
		req = &dlmv1.ListLocksRequest{}
	case "LockHistory":
		req = &dlmv1.LockHistoryRequest{}
	case "AddMember":
		req = &dlmv1.AddMemberRequest{}
	case "RemoveMember":
		req = &dlmv1.RemoveMemberRequest{}
	case "ListMembers":
		req = &dlmv1.ListMembersRequest{}
	default:
		return fmt.Errorf("no rpc %q in the runner", st.RPC)
	}
	if err := protojson.Unmarshal([]byte(body), req); err != nil {
		return fmt.Errorf("request %s: %w", body, err)
	}
	switch r := req.(type) {
	case *dlmv1.InitRequest:
		res, err := api.lock.Init(ctx, connect.NewRequest(r))
		if err != nil {
			return err
		}
		save("client_id", res.Msg.GetClientId())
		if st.Save != "" {
			vars[st.Save+".secret"] = res.Msg.GetSecret()
		}
	case *dlmv1.LockAcquireRequest:
		res, err := api.lock.LockAcquire(ctx, connect.NewRequest(r))
		if err != nil {
			return err
		}
		save("token", res.Msg.GetToken())
	case *dlmv1.LockReleaseRequest:
		_, err := api.lock.LockRelease(ctx, connect.NewRequest(r))
		return err
	case *dlmv1.AppendFileRequest:
		_, err := api.lock.AppendFile(ctx, connect.NewRequest(r))
		return err
	case *dlmv1.CloseRequest:
		_, err := api.lock.Close(ctx, connect.NewRequest(r))
		return err
	case *dlmv1.CheckTokenRequest:
		_, err := api.lock.CheckToken(ctx, connect.NewRequest(r))
		return err
	case *dlmv1.ListLocksRequest:
		_, err := api.lock.ListLocks(ctx, connect.NewRequest(r))
		return err
	case *dlmv1.LockHistoryRequest:
		_, err := api.lock.LockHistory(ctx, connect.NewRequest(r))
		return err
	case *dlmv1.AddMemberRequest:
		_, err := api.cluster.AddMember(ctx, connect.NewRequest(r))
		return err
	case *dlmv1.RemoveMemberRequest:
		_, err := api.cluster.RemoveMember(ctx, connect.NewRequest(r))
		return err
	case *dlmv1.ListMembersRequest:
		res, err := api.cluster.ListMembers(ctx, connect.NewRequest(r))
		if err != nil {
			return err
		}
		if ms := res.Msg.GetMembers(); st.Save != "" && len(ms) > 0 {
			vars[st.Save+".id"] = ms[0].GetId()
			vars[st.Save+".raft_address"] = ms[0].GetRaftAddress()
		}
	}
	return nil
}

// silentEndpoint is a real listener that takes connections and closes them
// at once: a server that gives no answer.
func silentEndpoint(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return "http://" + ln.Addr().String()
}

// retryCounter counts the client's "dlm: retrying" log records.
type retryCounter struct{ n *atomic.Int64 }

func (h retryCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h retryCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "dlm: retrying" {
		h.n.Add(1)
	}
	return nil
}
func (h retryCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h retryCounter) WithGroup(string) slog.Handler      { return h }

// sentinelNames are the client errors by the names the proto's
// client_error options use (client.TestEveryReasonHasASentinel holds the
// client to the same names).
var sentinelNames = map[string]error{
	"LockExpired":          client.ErrLockExpired,
	"NotHolder":            client.ErrNotHolder,
	"FileNotFound":         client.ErrFileNotFound,
	"InvalidFileName":      client.ErrInvalidFileName,
	"SessionExpired":       client.ErrSessionExpired,
	"SessionUnknown":       client.ErrSessionUnknown,
	"BadSecret":            client.ErrBadSecret,
	"Unavailable":          client.ErrUnavailable,
	"DataEmpty":            client.ErrDataEmpty,
	"DataTooLarge":         client.ErrDataTooLarge,
	"SectionTooLarge":      client.ErrSectionTooLarge,
	"SequenceAcknowledged": client.ErrSequenceAcknowledged,
	"TooManyRequests":      client.ErrTooManyRequests,
	"DiskFull":             client.ErrDiskFull,
	"FileTooLarge":         client.ErrFileTooLarge,
	"TooManySessions":      client.ErrTooManySessions,
	"InitRateLimited":      client.ErrInitRateLimited,
	"SectionIncomplete":    client.ErrSectionIncomplete,
	"InvalidArgument":      client.ErrInvalidArgument,
	"MemberConflict":       client.ErrMemberConflict,
	"MemberUnknown":        client.ErrMemberUnknown,
	"NotExclusive":         client.ErrNotExclusive,
	"LockUnknown":          client.ErrLockUnknown,
	"TooManyLocks":         client.ErrTooManyLocks,
	"LockModeMismatch":     client.ErrLockModeMismatch,
}
