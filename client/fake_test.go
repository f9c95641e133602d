package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// fake is a scripted stand-in for the service, for behaviour of the client
// that the real server cannot be made to show on demand (a wrong token in
// a keepalive, a NOT_LEADER answer, an outage of exactly two calls). It
// grants the lock to whoever asks unless busy is set, and records every
// numbered request.
type fake struct {
	dlmv1connect.UnimplementedLockServiceHandler

	mu          sync.Mutex
	url         string
	nextID      uint64
	nextToken   uint64
	busy        bool
	kaToken     uint64            // when set, KeepAlive reports this token
	kaHeld      []*dlmv1.HeldLock // when set, KeepAlive reports these grants
	leases      map[uint64]uint32 // each session's lease, as Init granted it
	failures    map[string][]error
	failAlways  map[string]error
	calls       map[string]int
	reqs        []record
	releaseSeen chan record
}

type record struct {
	method     string
	client     uint64
	seq, acked uint64
	token      uint64
	lock       string
	abort      bool
	file, data string
	wait       bool
}

func newFake(t *testing.T) *fake {
	t.Helper()
	f := &fake{
		nextID:      1,
		nextToken:   100,
		failures:    make(map[string][]error),
		failAlways:  make(map[string]error),
		calls:       make(map[string]int),
		releaseSeen: make(chan record, 16),
	}
	mux := http.NewServeMux()
	mux.Handle(dlmv1connect.NewLockServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = p
	srv.Start()
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func reasonErr(code connect.Code, r dlmv1.ErrorReason, leader string) error {
	err := connect.NewError(code, errors.New(r.String()))
	d, _ := connect.NewErrorDetail(&dlmv1.ErrorDetail{Reason: r, LeaderUrl: leader})
	err.AddDetail(d)
	return err
}

var errUnavailable = reasonErr(connect.CodeUnavailable, dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "")

// failNext makes the next calls of method fail with errs, one each.
func (f *fake) failNext(method string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[method] = append(f.failures[method], errs...)
}

func (f *fake) setFailAlways(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.failAlways, method)
	} else {
		f.failAlways[method] = err
	}
}

// enter counts a call and returns the error it must fail with, if any.
func (f *fake) enter(method string, r *record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[method]++
	if r != nil {
		r.method = method
		f.reqs = append(f.reqs, *r)
	}
	if err := f.failAlways[method]; err != nil {
		return err
	}
	if q := f.failures[method]; len(q) > 0 {
		f.failures[method] = q[1:]
		return q[0]
	}
	return nil
}

func (f *fake) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *fake) records(method string) []record {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []record
	for _, r := range f.reqs {
		if r.method == method || method == "" {
			out = append(out, r)
		}
	}
	return out
}

func (f *fake) Init(_ context.Context, req *connect.Request[dlmv1.InitRequest]) (*connect.Response[dlmv1.InitResponse], error) {
	if err := f.enter("Init", nil); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.nextID
	f.nextID++
	lease := req.Msg.GetLeaseMs()
	if lease == 0 {
		lease = 10000
	}
	if f.leases == nil {
		f.leases = make(map[uint64]uint32)
	}
	f.leases[id] = lease
	return connect.NewResponse(&dlmv1.InitResponse{ClientId: id, Secret: "s", LeaseMs: lease}), nil
}

func (f *fake) KeepAlive(_ context.Context, req *connect.Request[dlmv1.KeepAliveRequest]) (*connect.Response[dlmv1.KeepAliveResponse], error) {
	if err := f.enter("KeepAlive", nil); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// A renewal keeps the lease Init granted: a longer one would let a
	// keepalive answered just before a test silences the service stretch
	// the time until the client reports the lock lost.
	lease, ok := f.leases[req.Msg.GetClientId()]
	if !ok {
		lease = 10000
	}
	return connect.NewResponse(&dlmv1.KeepAliveResponse{LeaseMs: lease, Token: f.kaToken, Held: f.kaHeld}), nil
}

func (f *fake) LockAcquire(ctx context.Context, req *connect.Request[dlmv1.LockAcquireRequest]) (*connect.Response[dlmv1.LockAcquireResponse], error) {
	m := req.Msg
	if err := f.enter("LockAcquire", &record{client: m.GetClientId(), seq: m.GetSeq(), acked: m.GetAckedBelow(), wait: !m.GetTry()}); err != nil {
		return nil, err
	}
	f.mu.Lock()
	busy := f.busy
	if !busy {
		f.nextToken++
	}
	token := f.nextToken
	f.mu.Unlock()
	if !busy {
		return connect.NewResponse(&dlmv1.LockAcquireResponse{Granted: true, Token: token}), nil
	}
	if m.GetTry() {
		return connect.NewResponse(&dlmv1.LockAcquireResponse{}), nil
	}
	timer := time.NewTimer(time.Duration(m.GetWaitMs()) * time.Millisecond)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	return connect.NewResponse(&dlmv1.LockAcquireResponse{Queued: true, QueuePosition: 1}), nil
}

func (f *fake) LockRelease(_ context.Context, req *connect.Request[dlmv1.LockReleaseRequest]) (*connect.Response[dlmv1.LockReleaseResponse], error) {
	m := req.Msg
	r := record{client: m.GetClientId(), seq: m.GetSeq(), acked: m.GetAckedBelow(), token: m.GetToken(), abort: m.GetAbort(), lock: m.GetLock()}
	err := f.enter("LockRelease", &r)
	r.method = "LockRelease"
	select {
	case f.releaseSeen <- r:
	default:
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dlmv1.LockReleaseResponse{}), nil
}

func (f *fake) AppendFile(_ context.Context, req *connect.Request[dlmv1.AppendFileRequest]) (*connect.Response[dlmv1.AppendFileResponse], error) {
	m := req.Msg
	if err := f.enter("AppendFile", &record{client: m.GetClientId(), seq: m.GetSeq(), acked: m.GetAckedBelow(), token: m.GetToken(), file: m.GetFile(), data: string(m.GetData())}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dlmv1.AppendFileResponse{StagedAppends: 1}), nil
}

func (f *fake) Close(_ context.Context, req *connect.Request[dlmv1.CloseRequest]) (*connect.Response[dlmv1.CloseResponse], error) {
	m := req.Msg
	if err := f.enter("Close", &record{client: m.GetClientId(), seq: m.GetSeq(), acked: m.GetAckedBelow()}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dlmv1.CloseResponse{Status: "disconnected"}), nil
}

func (f *fake) Status(context.Context, *connect.Request[dlmv1.StatusRequest]) (*connect.Response[dlmv1.StatusResponse], error) {
	if err := f.enter("Status", nil); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dlmv1.StatusResponse{Node: &dlmv1.NodeStatus{Id: f.url}}), nil
}

// quick are options that keep failing tests short.
func quick(extra ...client.Option) []client.Option {
	return append([]client.Option{
		client.WithAttemptTimeout(time.Second),
		client.WithRetryBudget(5 * time.Second),
	}, extra...)
}

func dial(t *testing.T, urls []string, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, urls, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func TestRetriesUntilAnswered(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick()...)
	f.failNext("Status", errUnavailable, errUnavailable)
	if _, err := c.Status(t.Context(), false); err != nil {
		t.Fatalf("Status: %v", err)
	}
	if n := f.count("Status"); n != 3 {
		t.Errorf("Status was called %d times, want 3", n)
	}
}

func TestDefiniteAnswerIsNotRetried(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick()...)
	lk, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f.failNext("AppendFile", reasonErr(connect.CodeNotFound, dlmv1.ErrorReason_ERROR_REASON_FILE_NOT_FOUND, ""))
	err = lk.Append(t.Context(), "file_100", []byte("x"))
	if !errors.Is(err, client.ErrFileNotFound) {
		t.Fatalf("Append = %v, want ErrFileNotFound", err)
	}
	var e *client.Error
	if !errors.As(err, &e) || e.Code != connect.CodeNotFound {
		t.Errorf("errors.As gives %+v, want code NotFound", e)
	}
	if n := f.count("AppendFile"); n != 1 {
		t.Errorf("AppendFile was called %d times, want 1", n)
	}
	select {
	case <-lk.Lost():
		t.Fatal("a bad file name lost the lock")
	default:
	}
	if err := lk.Release(t.Context()); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

func TestRetryBudgetRunsOut(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, client.WithRetryBudget(300*time.Millisecond))
	f.setFailAlways("Status", errUnavailable)
	start := time.Now()
	_, err := c.Status(t.Context(), false)
	if !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("Status = %v, want ErrUnavailable", err)
	}
	var e *client.Error
	if !errors.As(err, &e) || e.Reason != dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE {
		t.Errorf("the last cause is missing from %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("gave up after %v, want about the 300ms budget", el)
	}
	if n := f.count("Status"); n < 2 {
		t.Errorf("Status was tried %d times, want several", n)
	}
}

func TestCallerDeadlineStopsRetries(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick()...)
	f.setFailAlways("Status", errUnavailable)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Status(ctx, false)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Status = %v, want context.DeadlineExceeded", err)
	}
}

func TestFollowsLeader(t *testing.T) {
	follower, leader := newFake(t), newFake(t)
	follower.setFailAlways("Status", reasonErr(connect.CodeUnavailable, dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, leader.url))
	follower.setFailAlways("LockAcquire", reasonErr(connect.CodeUnavailable, dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, leader.url))
	c := dial(t, []string{follower.url}, quick()...)
	for range 2 {
		st, err := c.Status(t.Context(), true)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		if st.GetNode().GetId() != leader.url {
			t.Errorf("answered by %s, want the leader", st.GetNode().GetId())
		}
	}
	if n := follower.count("Status"); n != 1 {
		t.Errorf("the follower was asked %d times, want once before the client moved", n)
	}
}

func TestRotatesPastDeadEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	f := newFake(t)
	c := dial(t, []string{dead, f.url}, quick()...)
	if _, err := c.Status(t.Context(), false); err != nil {
		t.Fatalf("Status: %v", err)
	}
}

func TestAckedBelowTracksFinalAnswers(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick()...)
	lk, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Append(t.Context(), "file_1", []byte("a")); err != nil {
		t.Fatal(err)
	}
	f.failNext("AppendFile", errUnavailable)
	if err := lk.Append(t.Context(), "file_1", []byte("b")); err != nil {
		t.Fatal(err)
	}
	if err := lk.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	type sa struct{ seq, acked uint64 }
	var got []sa
	for _, r := range f.records("") {
		got = append(got, sa{r.seq, r.acked})
	}
	// Each request acknowledges everything before it, and a retry repeats
	// its own number.
	want := []sa{{1, 1}, {2, 2}, {3, 3}, {3, 3}, {4, 4}, {5, 5}}
	if !slices.Equal(got, want) {
		t.Errorf("(seq, acked_below) = %v, want %v", got, want)
	}
}

func TestRepeatedAppendAfterGivingUpReusesItsNumber(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, client.WithRetryBudget(200*time.Millisecond), client.WithAttemptTimeout(100*time.Millisecond))
	lk, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f.setFailAlways("AppendFile", errUnavailable)
	if err := lk.Append(t.Context(), "file_1", []byte("A")); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("Append = %v, want ErrUnavailable", err)
	}
	f.setFailAlways("AppendFile", nil)
	if err := lk.Append(t.Context(), "file_1", []byte("A")); err != nil {
		t.Fatalf("repeated Append: %v", err)
	}
	if err := lk.Append(t.Context(), "file_1", []byte("B")); err != nil {
		t.Fatalf("next Append: %v", err)
	}
	recs := f.records("AppendFile")
	first, repeat, next := recs[0], recs[len(recs)-2], recs[len(recs)-1]
	if repeat.seq != first.seq || repeat.data != "A" {
		t.Errorf("the repeat went out as seq %d (%q), want seq %d", repeat.seq, repeat.data, first.seq)
	}
	if next.seq <= first.seq || next.acked <= first.seq {
		t.Errorf("the next append has seq %d acked_below %d, want both past %d", next.seq, next.acked, first.seq)
	}
	if repeat.acked > first.seq {
		t.Errorf("while repeating seq %d the client acknowledged up to %d", first.seq, repeat.acked)
	}
}

func TestKeepAliveNamingAnotherGrantLosesTheLock(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick(client.WithLease(60*time.Millisecond))...)
	lk, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.kaToken = lk.Token() + 1
	f.mu.Unlock()
	select {
	case <-lk.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the lock was not reported lost")
	}
	if err := context.Cause(lk.Context()); !errors.Is(err, client.ErrLockExpired) {
		t.Errorf("context cause = %v, want ErrLockExpired", err)
	}
	before := f.count("AppendFile")
	if err := lk.Append(t.Context(), "file_1", []byte("x")); !errors.Is(err, client.ErrLockExpired) {
		t.Errorf("Append on a lost lock = %v, want ErrLockExpired", err)
	}
	if f.count("AppendFile") != before {
		t.Error("Append on a lost lock reached the service")
	}
}

func TestKeepAliveSilenceLosesTheLock(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick(client.WithLease(90*time.Millisecond))...)
	lk, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f.setFailAlways("KeepAlive", errUnavailable)
	select {
	case <-lk.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the lock was not reported lost")
	}
	if err := lk.Release(t.Context()); !errors.Is(err, client.ErrLockExpired) {
		t.Fatalf("Release of a lost lock = %v, want ErrLockExpired", err)
	}
	// Only the keepalives failed, so the service may still think the lock
	// is held: the client gives the grant up rather than commit it.
	var gaveUp bool
	for _, r := range f.records("LockRelease") {
		gaveUp = gaveUp || r.token == lk.Token() && r.abort
	}
	if !gaveUp {
		t.Errorf("no aborting release of token %d: %+v", lk.Token(), f.records("LockRelease"))
	}
}

func TestUnusedGrantIsGivenUp(t *testing.T) {
	f := newFake(t)
	f.mu.Lock()
	f.kaToken = 4242
	f.mu.Unlock()
	dial(t, []string{f.url}, quick(client.WithLease(60*time.Millisecond))...)
	select {
	case r := <-f.releaseSeen:
		if r.token != 4242 || !r.abort {
			t.Errorf("release %+v, want an abort of token 4242", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the unused grant was not given up")
	}
}

func TestAcquireRenewsAnExpiredSession(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick()...)
	first := c.ClientID()
	f.failNext("LockAcquire", reasonErr(connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED, ""))
	lk, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if c.ClientID() == first {
		t.Errorf("still session %d after it expired", first)
	}
	recs := f.records("LockAcquire")
	if last := recs[len(recs)-1]; last.client != c.ClientID() || last.seq != 1 {
		t.Errorf("the grant was asked as %+v, want seq 1 of session %d", last, c.ClientID())
	}
	if err := lk.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestAcquireDeadlineLeavesTheQueue(t *testing.T) {
	f := newFake(t)
	f.mu.Lock()
	f.busy = true
	f.mu.Unlock()
	c := dial(t, []string{f.url}, quick(client.WithPollWait(100*time.Millisecond))...)
	ctx, cancel := context.WithTimeout(t.Context(), 350*time.Millisecond)
	defer cancel()
	_, err := c.Acquire(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire = %v, want context.DeadlineExceeded", err)
	}
	recs := f.records("LockAcquire")
	if len(recs) < 2 {
		t.Fatalf("%d polls, want several", len(recs))
	}
	for _, r := range recs {
		if r.seq != recs[0].seq {
			t.Errorf("poll with seq %d, want every poll to repeat seq %d", r.seq, recs[0].seq)
		}
	}
	rel := f.records("LockRelease")
	if len(rel) != 1 || rel[0].token != 0 {
		t.Errorf("releases %+v, want one with token 0 to leave the queue", rel)
	}
}

func TestTryAcquireWhenHeld(t *testing.T) {
	f := newFake(t)
	f.mu.Lock()
	f.busy = true
	f.mu.Unlock()
	c := dial(t, []string{f.url}, quick()...)
	if _, err := c.TryAcquire(t.Context()); !errors.Is(err, client.ErrNotAvailable) {
		t.Fatalf("TryAcquire = %v, want ErrNotAvailable", err)
	}
}

func TestClosedClient(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick()...)
	if err := c.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(t.Context()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := f.count("Close"); n != 1 {
		t.Errorf("Close reached the service %d times, want 1", n)
	}
	if _, err := c.Acquire(t.Context()); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Acquire after Close = %v, want ErrClosed", err)
	}
}

func TestNewRejectsBadEndpoints(t *testing.T) {
	for _, eps := range [][]string{nil, {"127.0.0.1:7070"}, {"ftp://x"}} {
		if _, err := client.New(t.Context(), eps); err == nil {
			t.Errorf("New(%q) succeeded", eps)
		}
	}
}

func TestReaderOpensNoSession(t *testing.T) {
	f := newFake(t)
	r, err := client.NewReader([]string{f.url}, quick()...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Status(t.Context(), false); err != nil {
		t.Fatalf("Status: %v", err)
	}
	if n := f.count("Init"); n != 0 {
		t.Errorf("a Reader opened %d sessions", n)
	}
}

func TestAcquireAfterSilentLossGivesTheOldGrantUp(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick(client.WithLease(90*time.Millisecond))...)
	old, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f.setFailAlways("KeepAlive", errUnavailable)
	select {
	case <-old.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the lock was not reported lost")
	}
	f.setFailAlways("KeepAlive", nil)
	lk, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if lk.Token() == old.Token() {
		t.Errorf("got the lost grant %d back", lk.Token())
	}
	var gaveUp, acquiredAfter bool
	for _, r := range f.records("") {
		switch {
		case r.method == "LockRelease" && r.token == old.Token() && r.abort:
			gaveUp = true
		case r.method == "LockAcquire" && gaveUp:
			acquiredAfter = true
		}
	}
	if !gaveUp || !acquiredAfter {
		t.Errorf("the old grant was not given up before asking again: %+v", f.records(""))
	}
	if err := lk.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A session holds several locks; a keepalive that lists the default lock's
// grant but not a named one's loses that named Lock only.
func TestKeepAliveLosesOnlyTheNamedLockItOmits(t *testing.T) {
	f := newFake(t)
	c := dial(t, []string{f.url}, quick(client.WithLease(900*time.Millisecond))...)
	def, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	named, err := c.Acquire(t.Context(), client.LockName("jobs"))
	if err != nil {
		t.Fatal(err)
	}
	if named.Name() != "jobs" || def.Name() != "" || named.Token() <= def.Token() {
		t.Fatalf("locks %q/%d and %q/%d", def.Name(), def.Token(), named.Name(), named.Token())
	}
	f.mu.Lock()
	f.kaToken = def.Token()
	f.kaHeld = []*dlmv1.HeldLock{{Lock: "", Token: def.Token()}}
	f.mu.Unlock()
	select {
	case <-named.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the named lock was not reported lost")
	}
	if err := context.Cause(named.Context()); !errors.Is(err, client.ErrLockExpired) || !strings.Contains(err.Error(), `"jobs"`) {
		t.Errorf("cause = %v, want ErrLockExpired naming the lock", err)
	}
	// Several more keepalives: the default lock stays held.
	n := f.count("KeepAlive")
	deadline := time.Now().Add(10 * time.Second)
	for f.count("KeepAlive") < n+3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-def.Lost():
		t.Fatalf("the default lock was lost too: %v", context.Cause(def.Context()))
	default:
	}
	if err := def.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A grant of a named lock the client does not use is given up with that
// lock's name.
func TestUnusedNamedGrantIsGivenUp(t *testing.T) {
	f := newFake(t)
	f.mu.Lock()
	f.kaHeld = []*dlmv1.HeldLock{{Lock: "orphan", Token: 4343}}
	f.mu.Unlock()
	dial(t, []string{f.url}, quick(client.WithLease(60*time.Millisecond))...)
	select {
	case r := <-f.releaseSeen:
		if r.token != 4343 || r.lock != "orphan" || !r.abort {
			t.Errorf("release %+v, want an abort of token 4343 of lock orphan", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the unused grant was not given up")
	}
}
