package service_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

// protocols runs each subtest through a Connect client and a gRPC client.
var protocols = []struct {
	name string
	opts []connect.ClientOption
}{
	{"connect", nil},
	{"grpc", []connect.ClientOption{connect.WithGRPC()}},
}

func newClient(srv *servertest.Server, opts []connect.ClientOption) dlmv1connect.LockServiceClient {
	return dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), srv.URL, opts...)
}

func reasonOf(err error) dlmv1.ErrorReason {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if ed, ok := v.(*dlmv1.ErrorDetail); ok {
				return ed.GetReason()
			}
		}
	}
	return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// session is a raw session driven call by call, with explicit seqs.
type session struct {
	t      *testing.T
	c      dlmv1connect.LockServiceClient
	id     uint64
	secret string
	seq    uint64
}

func open(t *testing.T, c dlmv1connect.LockServiceClient, leaseMs uint32) *session {
	t.Helper()
	res, err := c.Init(context.Background(), connect.NewRequest(&dlmv1.InitRequest{LeaseMs: leaseMs, Name: t.Name()}))
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return &session{t: t, c: c, id: res.Msg.GetClientId(), secret: res.Msg.GetSecret()}
}

func (s *session) next() uint64 { s.seq++; return s.seq }

func (s *session) acquire(try bool, waitMs uint32) (*dlmv1.LockAcquireResponse, error) {
	res, err := s.c.LockAcquire(context.Background(), connect.NewRequest(&dlmv1.LockAcquireRequest{
		ClientId: s.id, Secret: s.secret, Seq: s.next(), Try: try, WaitMs: waitMs,
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (s *session) mustAcquire() uint64 {
	s.t.Helper()
	res, err := s.acquire(false, 5000)
	if err != nil || !res.GetGranted() {
		s.t.Fatalf("acquire: %v %v", res, err)
	}
	return res.GetToken()
}

func (s *session) append(token uint64, file, data string) (*dlmv1.AppendFileResponse, error) {
	res, err := s.c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{
		ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token, File: file, Data: []byte(data),
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (s *session) release(token uint64) error {
	_, err := s.c.LockRelease(context.Background(), connect.NewRequest(&dlmv1.LockReleaseRequest{
		ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token,
	}))
	return err
}

func read(t *testing.T, c dlmv1connect.LockServiceClient, file string) string {
	t.Helper()
	res, err := c.ReadFile(context.Background(), connect.NewRequest(&dlmv1.ReadFileRequest{File: file}))
	if err != nil {
		t.Fatalf("ReadFile %s: %v", file, err)
	}
	return string(res.Msg.GetData())
}

func status(t *testing.T, c dlmv1connect.LockServiceClient) *dlmv1.StatusResponse {
	t.Helper()
	res, err := c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{Consistent: true}))
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	return res.Msg
}

func TestCriticalSectionCommitsAtRelease(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			srv := servertest.Start(t, nil)
			c := newClient(srv, p.opts)
			s := open(t, c, 0)
			token := s.mustAcquire()
			for _, d := range []string{"hello ", "world"} {
				if _, err := s.append(token, "file_3", d); err != nil {
					t.Fatalf("append: %v", err)
				}
			}
			if got := read(t, c, "file_3"); got != "" {
				t.Fatalf("staged appends visible before release: %q", got)
			}
			if err := s.release(token); err != nil {
				t.Fatalf("release: %v", err)
			}
			if got := read(t, c, "file_3"); got != "hello world" {
				t.Fatalf("file_3 = %q, want %q", got, "hello world")
			}
			onDisk, err := os.ReadFile(filepath.Join(srv.Config.DataDir, "files", "file_3"))
			if err != nil || string(onDisk) != "hello world" {
				t.Fatalf("file_3 on disk = %q, %v", onDisk, err)
			}
		})
	}
}

func TestHandOffToNextWaiter(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	s1, s2 := open(t, c, 0), open(t, c, 0)
	t1 := s1.mustAcquire()
	// A short poll returns still queued, and the repeat keeps the place.
	res, err := s2.acquire(false, 50)
	if err != nil || res.GetGranted() || !res.GetQueued() || res.GetQueuePosition() != 1 {
		t.Fatalf("second acquire = %v, %v; want queued at 1", res, err)
	}
	seq := s2.seq
	type answer struct {
		res *connect.Response[dlmv1.LockAcquireResponse]
		err error
	}
	got := make(chan answer, 1)
	go func() {
		r, err := c.LockAcquire(context.Background(), connect.NewRequest(&dlmv1.LockAcquireRequest{
			ClientId: s2.id, Secret: s2.secret, Seq: seq, WaitMs: 20000,
		}))
		got <- answer{r, err}
	}()
	if err := s1.release(t1); err != nil {
		t.Fatalf("release: %v", err)
	}
	select {
	case a := <-got:
		if a.err != nil || !a.res.Msg.GetGranted() || a.res.Msg.GetToken() <= t1 {
			t.Fatalf("waiter got %v, %v; want a grant with a token above %d", a.res, a.err, t1)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not woken by the release")
	}
	if st := status(t, c); st.GetLock().GetHolder() != s2.id || len(st.GetLock().GetQueue()) != 0 {
		t.Fatalf("lock = %v, want held by %d with an empty queue", st.GetLock(), s2.id)
	}
}

func TestRepeatedRequestsRunOnce(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	s := open(t, c, 0)
	token := s.mustAcquire()
	// An append names its place: a repeat, under its seq or another, is
	// staged once.
	req := &dlmv1.AppendFileRequest{ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token, File: "file_1", Data: []byte("A"), Position: 1}
	for i := range 3 {
		if i == 2 {
			req.Seq = s.next()
		}
		res, err := c.AppendFile(context.Background(), connect.NewRequest(req))
		if err != nil || res.Msg.GetStagedAppends() != 1 {
			t.Fatalf("repeated append = %v, %v; want 1 staged append", res, err)
		}
	}
	one, size := uint32(1), uint64(1)
	rel := &dlmv1.LockReleaseRequest{ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token, SectionAppends: &one, SectionBytes: &size}
	for range 2 {
		if _, err := c.LockRelease(context.Background(), connect.NewRequest(rel)); err != nil {
			t.Fatalf("repeated release: %v", err)
		}
	}
	if got := read(t, c, "file_1"); got != "A" {
		t.Fatalf("file_1 = %q, want A once", got)
	}
}

func TestLeaseExpiryRollsBackAndFences(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	stalled := open(t, c, 300)
	token := stalled.mustAcquire()
	if _, err := stalled.append(token, "file_2", "lost"); err != nil {
		t.Fatalf("append: %v", err)
	}
	// No keepalive: the waiter is granted once the lease runs out.
	next := open(t, c, 0)
	res, err := next.acquire(false, 10000)
	if err != nil || !res.GetGranted() {
		t.Fatalf("waiter = %v, %v; want granted after the holder's lease", res, err)
	}
	if _, err := stalled.append(token, "file_2", "late"); connect.CodeOf(err) != connect.CodeAborted || reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_LOCK_EXPIRED {
		t.Fatalf("late append: %v; want Aborted LOCK_EXPIRED", err)
	}
	if err := next.release(res.GetToken()); err != nil {
		t.Fatalf("release: %v", err)
	}
	if got := read(t, c, "file_2"); got != "" {
		t.Fatalf("file_2 = %q: the expired section was not rolled back", got)
	}
	if _, err := stalled.acquire(false, 100); reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED {
		t.Fatalf("acquire on expired session: %v; want SESSION_EXPIRED", err)
	}
}

func TestRestartKeepsLockQueueAndFiles(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	s1, s2 := open(t, c, 0), open(t, c, 0)
	t1 := s1.mustAcquire()
	s1.append(t1, "file_5", "A")
	s1.release(t1)
	t2 := s1.mustAcquire()
	s1.append(t2, "file_5", "B")
	if res, err := s2.acquire(false, 10); err != nil || !res.GetQueued() {
		t.Fatalf("s2 not queued: %v %v", res, err)
	}
	before := status(t, c)
	srv.Restart()
	c = newClient(srv, nil)
	s1.c, s2.c = c, c
	after := status(t, c)
	if !proto.Equal(before.GetLock(), after.GetLock()) && (before.GetLock().GetHolder() != after.GetLock().GetHolder() ||
		!slicesEqual(before.GetLock().GetQueue(), after.GetLock().GetQueue()) || before.GetLock().GetToken() != after.GetLock().GetToken()) {
		t.Fatalf("lock after restart = %v, want %v", after.GetLock(), before.GetLock())
	}
	// A client that names no places (written before them) has its appends
	// in the log: they survive the restart, and its release needs no counts.
	if _, err := s1.append(t2, "file_5", "B"); err != nil {
		t.Fatalf("append under the old grant after restart: %v", err)
	}
	if err := s1.release(t2); err != nil {
		t.Fatalf("release after restart: %v", err)
	}
	if got := read(t, c, "file_5"); got != "ABB" {
		t.Fatalf("file_5 = %q, want ABB", got)
	}
}

// Appends placed in the section live in the leader's memory: after a
// restart a release that counts them is refused, changing nothing, and names
// what is staged; the client re-sends and releases again.
func TestRestartLosesPlacedAppendsSafely(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	s1 := open(t, c, 0)
	t1 := s1.mustAcquire()
	place := func(pos uint32, data string) error {
		_, err := c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{
			ClientId: s1.id, Secret: s1.secret, Seq: s1.next(), Token: t1, File: "file_5", Data: []byte(data), Position: pos,
		}))
		return err
	}
	if err := place(1, "A"); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	c = newClient(srv, nil)
	s1.c = c
	one, size := uint32(1), uint64(1)
	rel := &dlmv1.LockReleaseRequest{ClientId: s1.id, Secret: s1.secret, Seq: s1.next(), Token: t1, SectionAppends: &one, SectionBytes: &size}
	_, err := c.LockRelease(context.Background(), connect.NewRequest(rel))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE || stagedOf(err) != 0 {
		t.Fatalf("release after restart = %v; want SECTION_INCOMPLETE with 0 staged", err)
	}
	// A later place is a gap, named the same way.
	if err := place(2, "B"); reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE || stagedOf(err) != 0 {
		t.Fatalf("append at place 2 after restart = %v; want SECTION_INCOMPLETE", err)
	}
	if got := read(t, c, "file_5"); got != "" {
		t.Fatalf("file_5 = %q before the release", got)
	}
	if err := place(1, "A"); err != nil {
		t.Fatalf("re-send: %v", err)
	}
	rel.Seq = s1.next()
	if _, err := c.LockRelease(context.Background(), connect.NewRequest(rel)); err != nil {
		t.Fatalf("release after re-sending: %v", err)
	}
	if got := read(t, c, "file_5"); got != "A" {
		t.Fatalf("file_5 = %q, want A", got)
	}
}

// stagedOf is the staged appends a SECTION_INCOMPLETE error names.
func stagedOf(err error) uint32 {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0
	}
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if ed, ok := v.(*dlmv1.ErrorDetail); ok {
				return ed.GetStagedAppends()
			}
		}
	}
	return 0
}

func slicesEqual(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBadInputChangesNothing(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			srv := servertest.Start(t, &node.Config{MaxSectionBytes: 100, MaxAppendBytes: 80})
			c := newClient(srv, p.opts)
			holder, other := open(t, c, 0), open(t, c, 0)
			token := holder.mustAcquire()
			if _, err := holder.append(token, "file_0", strings.Repeat("x", 60)); err != nil {
				t.Fatalf("append: %v", err)
			}
			expired := open(t, c, 200)
			awaitSessionGone(t, c, expired.id)
			cases := []struct {
				name   string
				call   func() error
				code   connect.Code
				reason dlmv1.ErrorReason
			}{
				{"unknown file", func() error { _, err := holder.append(token, "file_100", "x"); return err },
					connect.CodeNotFound, dlmv1.ErrorReason_ERROR_REASON_FILE_NOT_FOUND},
				{"other unknown file", func() error { _, err := holder.append(token, "passwd", "x"); return err },
					connect.CodeNotFound, dlmv1.ErrorReason_ERROR_REASON_FILE_NOT_FOUND},
				{"path outside", func() error { _, err := holder.append(token, "../etc/passwd", "x"); return err },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_INVALID_FILE_NAME},
				{"empty name", func() error { _, err := holder.append(token, "", "x"); return err },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_INVALID_FILE_NAME},
				{"empty data", func() error { _, err := holder.append(token, "file_0", ""); return err },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_DATA_EMPTY},
				{"oversized append", func() error { _, err := holder.append(token, "file_0", strings.Repeat("y", 81)); return err },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_DATA_TOO_LARGE},
				{"section over limit", func() error { _, err := holder.append(token, "file_0", strings.Repeat("z", 41)); return err },
					connect.CodeResourceExhausted, dlmv1.ErrorReason_ERROR_REASON_SECTION_TOO_LARGE},
				{"unknown client", func() error {
					_, err := c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{ClientId: 999, Secret: "x", Seq: 1, Token: token, File: "file_0", Data: []byte("x")}))
					return err
				}, connect.CodeNotFound, dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN},
				{"wrong secret", func() error {
					_, err := c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{ClientId: holder.id, Secret: "wrong", Seq: 99, Token: token, File: "file_0", Data: []byte("x")}))
					return err
				}, connect.CodeUnauthenticated, dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET},
				{"expired session", func() error { _, err := expired.acquire(false, 10); return err },
					connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED},
				{"stale token", func() error { _, err := holder.append(token-1, "file_0", "x"); return err },
					connect.CodeAborted, dlmv1.ErrorReason_ERROR_REASON_LOCK_EXPIRED},
				{"append by non-holder", func() error { _, err := other.append(token, "file_0", "x"); return err },
					connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_NOT_HOLDER},
				{"release by non-holder", func() error { return other.release(token) },
					connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_NOT_HOLDER},
				{"no sequence number", func() error {
					_, err := c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{ClientId: holder.id, Secret: holder.secret, Token: token, File: "file_0", Data: []byte("x")}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_MISSING},
				{"negative read limit", func() error {
					_, err := c.ReadFile(context.Background(), connect.NewRequest(&dlmv1.ReadFileRequest{File: "file_0", Limit: -1}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT},
				{"read of unknown file", func() error {
					_, err := c.ReadFile(context.Background(), connect.NewRequest(&dlmv1.ReadFileRequest{File: "../../etc/passwd"}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_INVALID_FILE_NAME},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					before := status(t, c)
					err := tc.call()
					if connect.CodeOf(err) != tc.code || reasonOf(err) != tc.reason {
						t.Fatalf("got %v (reason %v); want code %v reason %v", err, reasonOf(err), tc.code, tc.reason)
					}
					after := status(t, c)
					// The lease left runs down between the two reads.
					before.Lock.LeaseLeftMs, after.Lock.LeaseLeftMs = 0, 0
					for _, h := range append(before.Lock.GetHolders(), after.Lock.GetHolders()...) {
						h.LeaseLeftMs = 0
					}
					if !proto.Equal(before.GetLock(), after.GetLock()) || !proto.Equal(&dlmv1.StatusResponse{Files: before.GetFiles()}, &dlmv1.StatusResponse{Files: after.GetFiles()}) {
						t.Fatalf("state changed:\nbefore %v\nafter  %v", before.GetLock(), after.GetLock())
					}
				})
			}
			if err := holder.release(token); err != nil {
				t.Fatalf("release: %v", err)
			}
			if got := read(t, c, "file_0"); got != strings.Repeat("x", 60) {
				t.Fatalf("file_0 = %q: bad input reached the file", got)
			}
			if _, err := os.Stat(filepath.Join(srv.Config.DataDir, "etc")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("something was written outside files/: %v", err)
			}
		})
	}
}

func TestMalformedMessage(t *testing.T) {
	srv := servertest.Start(t, nil)
	before := status(t, newClient(srv, nil))
	for _, body := range [][]byte{{0xff, 0xff, 0xff}, []byte("not a protobuf")} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/dlm.v1.LockService/AppendFile", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/proto")
		res, err := servertest.HTTPClient().Do(req)
		if err != nil {
			t.Fatalf("post: %v", err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Fatalf("malformed body answered %d, want 400 (invalid_argument)", res.StatusCode)
		}
	}
	after := status(t, newClient(srv, nil))
	// Compare the state, not the applied index: the leader records its own
	// address in the log on its own schedule.
	before.Node, after.Node = nil, nil
	for _, st := range []*dlmv1.StatusResponse{before, after} {
		for _, ses := range st.GetSessions() {
			ses.LeaseLeftMs = 0
		}
		st.GetLock().LeaseLeftMs = 0
		for _, h := range st.GetLock().GetHolders() {
			h.LeaseLeftMs = 0
		}
	}
	if !proto.Equal(before, after) {
		t.Fatalf("a malformed message changed the state:\nbefore %v\nafter  %v", before, after)
	}
}

// awaitSessionGone polls Status until the session has expired.
func awaitSessionGone(t *testing.T, c dlmv1connect.LockServiceClient, id uint64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		gone := true
		for _, s := range status(t, c).GetSessions() {
			if s.GetClientId() == id {
				gone = false
			}
		}
		if gone {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("session %d did not expire", id)
		}
	}
}
