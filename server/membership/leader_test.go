package membership_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/membership"
)

// member is a real HTTP server answering ListMembers as a cluster member
// would: the leader answers, a follower answers NOT_LEADER naming *hint,
// and a refusing one answers a final error.
type member struct {
	dlmv1connect.UnimplementedClusterServiceHandler
	URL   string
	calls atomic.Int32
	lead  bool
	hint  atomic.Pointer[string]
	final error
}

func startMember(t *testing.T, lead bool) *member {
	t.Helper()
	m := &member{lead: lead}
	_, h := dlmv1connect.NewClusterServiceHandler(m)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	m.URL = srv.URL
	return m
}

func (m *member) follow(leader string) { m.hint.Store(&leader) }

func (m *member) ListMembers(context.Context, *connect.Request[dlmv1.ListMembersRequest]) (*connect.Response[dlmv1.ListMembersResponse], error) {
	m.calls.Add(1)
	switch {
	case m.final != nil:
		return nil, m.final
	case m.lead:
		return connect.NewResponse(&dlmv1.ListMembersResponse{Members: []*dlmv1.MemberStatus{{Id: m.URL, Leader: true}}}), nil
	}
	e := connect.NewError(connect.CodeUnavailable, errors.New("not the leader"))
	hint := ""
	if p := m.hint.Load(); p != nil {
		hint = *p
	}
	d, err := connect.NewErrorDetail(&dlmv1.ErrorDetail{Reason: dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, LeaderUrl: hint})
	if err != nil {
		return nil, err
	}
	e.AddDetail(d)
	return nil, e
}

// deadURL is a loopback URL where nothing listens (a port bound, then
// closed).
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// list asks for the members at the leader of urls, and says who answered
// and how long it took.
func list(t *testing.T, urls ...string) (string, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: 5 * time.Second}
	start := time.Now()
	res, err := membership.AtLeader(ctx, urls, func(ctx context.Context, url string) (*dlmv1.ListMembersResponse, error) {
		r, err := dlmv1connect.NewClusterServiceClient(hc, url).ListMembers(ctx, connect.NewRequest(&dlmv1.ListMembersRequest{}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	})
	if err != nil {
		return "", time.Since(start), err
	}
	return res.GetMembers()[0].GetId(), time.Since(start), nil
}

func TestAtLeaderFollowsTheHint(t *testing.T) {
	leader, follower := startMember(t, true), startMember(t, false)
	follower.follow(leader.URL)
	got, _, err := list(t, follower.URL)
	if err != nil || got != leader.URL {
		t.Fatalf("AtLeader via a follower = %q, %v; want the leader %s", got, err, leader.URL)
	}
	if f, l := follower.calls.Load(), leader.calls.Load(); f != 1 || l != 1 {
		t.Fatalf("calls: follower %d, leader %d; want one each", f, l)
	}
}

func TestAtLeaderSkipsAnUnreachableURL(t *testing.T) {
	leader := startMember(t, true)
	got, _, err := list(t, deadURL(t), leader.URL)
	if err != nil || got != leader.URL {
		t.Fatalf("AtLeader past a dead URL = %q, %v; want the leader %s", got, err, leader.URL)
	}
}

// A follower naming a dead leader (an election under way) does not stop
// the search: the next listed URL is tried.
func TestAtLeaderPassesADeadHint(t *testing.T) {
	leader, follower := startMember(t, true), startMember(t, false)
	follower.follow(deadURL(t))
	got, _, err := list(t, follower.URL, leader.URL)
	if err != nil || got != leader.URL {
		t.Fatalf("AtLeader = %q, %v; want the leader %s", got, err, leader.URL)
	}
}

// Two followers naming each other: the search ends, bounded, with the
// NOT_LEADER error, having paused between rounds rather than spinning.
func TestAtLeaderEndsALoopOfHints(t *testing.T) {
	a, b := startMember(t, false), startMember(t, false)
	a.follow(b.URL)
	b.follow(a.URL)
	_, took, err := list(t, a.URL)
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("AtLeader in a loop of hints = %v, want the NOT_LEADER error", err)
	}
	calls := a.calls.Load() + b.calls.Load()
	if calls > membership.MaxTries {
		t.Fatalf("%d calls, want at most %d", calls, membership.MaxTries)
	}
	if calls < 3 {
		t.Fatalf("%d calls: gave up before retrying", calls)
	}
	if took > 20*time.Second {
		t.Fatalf("took %v", took)
	}
	t.Logf("%d calls in %v", calls, took.Round(time.Millisecond))
}

// Nothing answers: AtLeader gives up after MaxTries, with the transport's
// error, and ends at once when its context does.
func TestAtLeaderIsBounded(t *testing.T) {
	var tries atomic.Int32
	dead := []string{deadURL(t), deadURL(t)}
	hc := &http.Client{Timeout: 5 * time.Second}
	call := func(ctx context.Context, url string) (*dlmv1.ListMembersResponse, error) {
		tries.Add(1)
		r, err := dlmv1connect.NewClusterServiceClient(hc, url).ListMembers(ctx, connect.NewRequest(&dlmv1.ListMembersRequest{}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := membership.AtLeader(ctx, dead, call); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("AtLeader with nothing listening = %v, want Unavailable", err)
	}
	if n := tries.Load(); n != membership.MaxTries {
		t.Fatalf("%d tries, want %d", n, membership.MaxTries)
	}

	tries.Store(0)
	short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := membership.AtLeader(short, dead, call); err == nil {
		t.Fatal("AtLeader answered with nothing listening")
	}
	if took := time.Since(start); took > 5*time.Second || tries.Load() >= membership.MaxTries {
		t.Fatalf("with a 100ms context: %d tries in %v", tries.Load(), took)
	}
}

// An error that another server would answer the same way ends the search
// at once.
func TestAtLeaderStopsAtAFinalError(t *testing.T) {
	refusing, leader := startMember(t, false), startMember(t, true)
	refusing.final = connect.NewError(connect.CodePermissionDenied, errors.New("not an admin token"))
	if _, _, err := list(t, refusing.URL, leader.URL); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("AtLeader = %v, want PermissionDenied", err)
	}
	if n := leader.calls.Load(); n != 0 {
		t.Fatalf("the leader was asked %d times after a final error", n)
	}
}

func TestAtLeaderNeedsAURL(t *testing.T) {
	if _, err := membership.AtLeader(t.Context(), nil, func(context.Context, string) (int, error) { return 1, nil }); err == nil {
		t.Fatal("AtLeader with no URL answered")
	}
}
