package service_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

// scrape reads srv's /metrics with tok (none when empty).
func scrape(t *testing.T, srv *servertest.Server, tok string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := servertest.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	return res.StatusCode, string(body)
}

// metric is the value of one series (name with its labels, as printed) in
// a scrape, and whether it is there.
func metric(body, series string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

func wantMetric(t *testing.T, body, series string, want float64) {
	t.Helper()
	if v, ok := metric(body, series); !ok || v != want {
		t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
	}
}

// Grants, a release, a repeated release (answered from the record), an
// abort, a holder's close and a holder's expiry, made by real calls on a
// real node, are each counted once, and a waiter giving up its place is
// no rollback; every stage of a call has timings; Raft's state and
// indexes are there.
func TestMetricsCountLockEvents(t *testing.T) {
	srv := servertest.Start(t, &node.Config{MinLease: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	c := lockClient(srv, nil, "")

	code, body := scrape(t, srv, "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	wantMetric(t, body, "dlm_grants_total", 0)
	wantMetric(t, body, `dlm_raft_state{state="leader"}`, 1)
	wantMetric(t, body, `dlm_raft_state{state="follower"}`, 0)

	s, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	id, secret := s.Msg.GetClientId(), s.Msg.GetSecret()
	acquire := func(seq uint64) uint64 {
		t.Helper()
		g, err := c.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: id, Secret: secret, Seq: seq}))
		if err != nil || !g.Msg.GetGranted() {
			t.Fatalf("acquire seq %d: %v %v", seq, g, err)
		}
		return g.Msg.GetToken()
	}
	release := func(seq, token uint64, abort bool) {
		t.Helper()
		if _, err := c.LockRelease(ctx, connect.NewRequest(&dlmv1.LockReleaseRequest{ClientId: id, Secret: secret, Seq: seq, Token: token, Abort: abort})); err != nil {
			t.Fatalf("release seq %d: %v", seq, err)
		}
	}
	tok := acquire(1)
	// A queued session that gives up its place rolls nothing back.
	other, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	q, err := c.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: other.Msg.GetClientId(), Secret: other.Msg.GetSecret(), Seq: 1, WaitMs: 1}))
	if err != nil || !q.Msg.GetQueued() {
		t.Fatalf("acquire by a second session: %v %v, want queued", q, err)
	}
	_, body = scrape(t, srv, "")
	wantMetric(t, body, "dlm_waiters", 1)
	if _, err := c.LockRelease(ctx, connect.NewRequest(&dlmv1.LockReleaseRequest{ClientId: other.Msg.GetClientId(), Secret: other.Msg.GetSecret(), Seq: 2})); err != nil {
		t.Fatalf("the queued session gives up: %v", err)
	}
	release(2, tok, false)
	release(2, tok, false) // a repeat: answered from the record
	tok = acquire(3)
	release(4, tok, true)
	// Closing a holder's session commits its section.
	acquire(5)
	if _, err := c.Close(ctx, connect.NewRequest(&dlmv1.CloseRequest{ClientId: id, Secret: secret, Seq: 6})); err != nil {
		t.Fatal(err)
	}

	// A session that takes the lock and goes silent expires holding it.
	short, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{LeaseMs: 300}))
	if err != nil {
		t.Fatal(err)
	}
	g, err := c.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: short.Msg.GetClientId(), Secret: short.Msg.GetSecret(), Seq: 1}))
	if err != nil || !g.Msg.GetGranted() {
		t.Fatalf("acquire by the short session: %v %v", g, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, body = scrape(t, srv, "")
		if v, _ := metric(body, "dlm_expiries_total"); v >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no expiry counted within 30s:\n%s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantMetric(t, body, "dlm_grants_total", 4)
	wantMetric(t, body, "dlm_releases_total", 2)
	wantMetric(t, body, "dlm_dedup_hits_total", 1)
	wantMetric(t, body, "dlm_expiries_total", 1)
	wantMetric(t, body, `dlm_rollbacks_total{cause="aborted"}`, 1)
	wantMetric(t, body, `dlm_rollbacks_total{cause="expired"}`, 1)
	wantMetric(t, body, "dlm_sessions", 1)
	wantMetric(t, body, "dlm_waiters", 0)
	for _, stage := range []string{"decode", "checks", "raft_commit", "fsm_apply", "reply"} {
		if v, ok := metric(body, `dlm_stage_seconds_count{stage="`+stage+`"}`); !ok || v < 1 {
			t.Errorf("stage %s has %v timings, want some", stage, v)
		}
	}
	if v, _ := metric(body, "dlm_raft_commit_index"); v < 12 {
		t.Errorf("dlm_raft_commit_index = %v, want at least the 12 changes made", v)
	}
}

// With --auth-tokens the scrape needs a read token, as Status does; a
// token of no role here is refused.
func TestMetricsNeedTheReadRoleWithAuthTokens(t *testing.T) {
	creds := []auth.Credential{{Role: auth.Read, Token: readToken}, {Role: auth.Client, Token: clientToken}}
	srv := servertest.StartGuarded(t, nil, auth.NewGuard(servertest.AdminToken, creds, true))
	if code, body := scrape(t, srv, ""); code != http.StatusUnauthorized || !strings.Contains(body, "read") {
		t.Errorf("anonymous scrape: %d %q, want 401 naming the read role", code, body)
	}
	if code, _ := scrape(t, srv, "made-up-token-0123456789abcdef"); code != http.StatusUnauthorized {
		t.Errorf("scrape with an unknown token: %d, want 401", code)
	}
	for _, tok := range []string{readToken, clientToken, servertest.AdminToken} {
		if code, body := scrape(t, srv, tok); code != http.StatusOK || !strings.Contains(body, "dlm_grants_total") {
			t.Errorf("scrape with a token of role at least read: %d %.200q", code, body)
		}
	}
	// Without --auth-tokens it is open, as Status is.
	open := servertest.Start(t, nil)
	if code, _ := scrape(t, open, ""); code != http.StatusOK {
		t.Errorf("anonymous scrape without --auth-tokens: %d, want 200", code)
	}
}

// rawCall posts msg to procedure over the Connect protocol (or gRPC) asking
// for gzip, and returns the response message's encoding: the Connect
// protocol's Content-Encoding; for gRPC, whose header only names what the
// stream may use, "gzip" when the message's envelope has its compressed
// flag.
func rawCall(t *testing.T, srv *servertest.Server, procedure string, msg proto.Message, grpc bool) string {
	t.Helper()
	body, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if grpc {
		frame := []byte{0, 0, 0, 0, 0}
		frame[1], frame[2], frame[3], frame[4] = byte(len(body)>>24), byte(len(body)>>16), byte(len(body)>>8), byte(len(body))
		body = append(frame, body...)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+procedure, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	// Set by hand, the Go transport neither adds nor undoes it.
	if grpc {
		req.Header.Set("Content-Type", "application/grpc+proto")
		req.Header.Set("Grpc-Accept-Encoding", "gzip")
		req.Header.Set("Te", "trailers")
	} else {
		req.Header.Set("Content-Type", "application/proto")
		req.Header.Set("Accept-Encoding", "gzip")
	}
	res, err := servertest.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Trailer.Get("Grpc-Status") != "" && res.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("%s: %s %v", procedure, res.Status, res.Trailer)
	}
	if grpc {
		if len(got) < 5 {
			t.Fatalf("%s: no message in %q", procedure, got)
		}
		if got[0]&1 == 1 {
			return res.Header.Get("Grpc-Encoding")
		}
		return ""
	}
	return res.Header.Get("Content-Encoding")
}

// Lock calls' small answers go uncompressed even to a client that accepts
// gzip; a large file read still goes compressed.
func TestSmallResponsesAreNotCompressed(t *testing.T) {
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := lockClient(srv, nil, "")
	s, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	id, secret := s.Msg.GetClientId(), s.Msg.GetSecret()
	g, err := c.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: id, Secret: secret, Seq: 1}))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("a compressible line of a file\n"), 200)
	if _, err := c.AppendFile(ctx, connect.NewRequest(&dlmv1.AppendFileRequest{ClientId: id, Secret: secret, Seq: 2, Token: g.Msg.GetToken(), File: "file_1", Data: data})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LockRelease(ctx, connect.NewRequest(&dlmv1.LockReleaseRequest{ClientId: id, Secret: secret, Seq: 3, Token: g.Msg.GetToken()})); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name string
		grpc bool
	}{{"connect", false}, {"grpc", true}} {
		t.Run(p.name, func(t *testing.T) {
			small := rawCall(t, srv, dlmv1connect.LockServiceInitProcedure, &dlmv1.InitRequest{}, p.grpc)
			if small != "" && small != "identity" {
				t.Errorf("Init's answer is sent with encoding %q, want none", small)
			}
			large := rawCall(t, srv, dlmv1connect.LockServiceReadFileProcedure, &dlmv1.ReadFileRequest{File: "file_1"}, p.grpc)
			if large != "gzip" {
				t.Errorf("a %d-byte file read is sent with encoding %q, want gzip", len(data), large)
			}
		})
	}
}
