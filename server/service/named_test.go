package service_test

import (
	"context"
	"slices"
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

const (
	exclusive = dlmv1.LockMode_LOCK_MODE_EXCLUSIVE
	shared    = dlmv1.LockMode_LOCK_MODE_SHARED
)

func (s *session) mustAcquireLock(lock *string, mode dlmv1.LockMode) uint64 {
	s.t.Helper()
	res, err := s.acquireLock(lock, mode, false, 5000)
	if err != nil || !res.GetGranted() || res.GetLock() != derefName(lock) || res.GetMode() != mode {
		s.t.Fatalf("acquire %q %v: %v %v", derefName(lock), mode, res, err)
	}
	return res.GetToken()
}

func derefName(lock *string) string {
	if lock == nil {
		return ""
	}
	return *lock
}

func checkToken(t *testing.T, c dlmv1connect.LockServiceClient, lock *string, token uint64) *dlmv1.CheckTokenResponse {
	t.Helper()
	res, err := c.CheckToken(context.Background(), connect.NewRequest(&dlmv1.CheckTokenRequest{Lock: lock, Token: token}))
	if err != nil {
		t.Fatalf("CheckToken %q %d: %v", derefName(lock), token, err)
	}
	return res.Msg
}

func lockStatusOf(t *testing.T, c dlmv1connect.LockServiceClient, lock *string) *dlmv1.StatusResponse {
	t.Helper()
	res, err := c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{Consistent: true, Lock: lock}))
	if err != nil {
		t.Fatalf("Status %q: %v", derefName(lock), err)
	}
	return res.Msg
}

func listLocks(t *testing.T, c dlmv1connect.LockServiceClient, size uint32, page string) *dlmv1.ListLocksResponse {
	t.Helper()
	res, err := c.ListLocks(context.Background(), connect.NewRequest(&dlmv1.ListLocksRequest{PageSize: size, PageToken: page, Consistent: true}))
	if err != nil {
		t.Fatalf("ListLocks: %v", err)
	}
	return res.Msg
}

// A named lock is held beside the default lock; a shared request waits
// behind its exclusive holder and is woken by its release; shared holders
// share it with their own tokens; KeepAlive lists every grant; CheckToken
// follows each grant; the lock leaves no state once free.
func TestNamedAndSharedLocks(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			srv := servertest.Start(t, nil)
			c := newClient(srv, p.opts)
			a, b, r := open(t, c, 0), open(t, c, 0), open(t, c, 0)
			jobs := proto.String("jobs")
			t1 := a.mustAcquireLock(jobs, exclusive)
			t0 := a.mustAcquireLock(nil, dlmv1.LockMode_LOCK_MODE_UNSPECIFIED|exclusive)
			if t0 <= t1 {
				t.Fatalf("tokens %d then %d: they grow across locks", t1, t0)
			}
			if res, err := b.acquireLock(jobs, shared, true, 0); err != nil || res.GetGranted() || res.GetQueued() {
				t.Fatalf("try shared while held exclusively = %v, %v; want not granted, not queued", res, err)
			}
			// b waits, first with a short poll that leaves it queued.
			waitSeq := b.next()
			waitReq := func(ms uint32) *connect.Request[dlmv1.LockAcquireRequest] {
				return connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: b.id, Secret: b.secret, Seq: waitSeq, Lock: jobs, Mode: shared, WaitMs: ms})
			}
			q, err := c.LockAcquire(context.Background(), waitReq(1))
			if err != nil || !q.Msg.GetQueued() || q.Msg.GetQueuePosition() != 1 || q.Msg.GetLock() != "jobs" || q.Msg.GetMode() != shared {
				t.Fatalf("shared acquire behind the holder = %v, %v; want queued first for jobs, SHARED", q, err)
			}
			st := lockStatusOf(t, c, jobs)
			if l := st.GetLock(); l.GetName() != "jobs" || l.GetHolder() != a.id || l.GetToken() != t1 || l.GetMode() != exclusive ||
				!slices.Equal(l.GetQueue(), []uint64{b.id}) || !slices.Equal(l.GetQueueModes(), []dlmv1.LockMode{shared}) ||
				len(l.GetHolders()) != 1 || l.GetHolders()[0].GetLeaseLeftMs() <= 0 || st.GetLockCount() != 2 {
				t.Fatalf("Status of jobs = %v (lock_count %d)", l, st.GetLockCount())
			}
			ka, err := c.KeepAlive(context.Background(), connect.NewRequest(&dlmv1.KeepAliveRequest{ClientId: a.id, Secret: a.secret}))
			want := []*dlmv1.HeldLock{{Lock: "", Token: t0, Mode: exclusive}, {Lock: "jobs", Token: t1, Mode: exclusive}}
			if err != nil || ka.Msg.GetToken() != t0 || !heldEqual(ka.Msg.GetHeld(), want) {
				t.Fatalf("KeepAlive of a = %v, %v; want token %d, held %v", ka, err, t0, want)
			}
			if ct := checkToken(t, c, jobs, t1); !ct.GetCurrent() || ct.GetMode() != exclusive || ct.GetLatestToken() != t1 || ct.GetStateIndex() == 0 {
				t.Fatalf("CheckToken jobs %d = %v; want current", t1, ct)
			}
			if ct := checkToken(t, c, nil, t1); ct.GetCurrent() || ct.GetLatestToken() != t0 {
				t.Fatalf("CheckToken of jobs's token on the default lock = %v; want not current, latest %d", ct, t0)
			}

			// A parked call for the named lock wakes at its release.
			woken := make(chan *dlmv1.LockAcquireResponse, 1)
			errs := make(chan error, 1)
			go func() {
				res, err := c.LockAcquire(context.Background(), waitReq(20000))
				if err != nil {
					errs <- err
					return
				}
				woken <- res.Msg
			}()
			// The holder releases once the waiter is parked, so that the
			// release is what wakes it.
			deadline := time.Now().Add(10 * time.Second)
			for !srv.Node.Waiting(b.id) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if !srv.Node.Waiting(b.id) {
				t.Fatal("the waiting acquire never parked")
			}
			start := time.Now()
			if err := a.releaseLock(jobs, t1); err != nil {
				t.Fatalf("release jobs: %v", err)
			}
			var tb uint64
			select {
			case res := <-woken:
				if !res.GetGranted() || res.GetMode() != shared || res.GetLock() != "jobs" {
					t.Fatalf("the waiter got %v; want a shared grant of jobs", res)
				}
				tb = res.GetToken()
			case err := <-errs:
				t.Fatalf("the waiting acquire: %v", err)
			case <-time.After(15 * time.Second):
				t.Fatal("the waiter was not woken by the release of jobs")
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("the waiter woke %v after the release: it waited out its poll", d)
			}
			tr := r.mustAcquireLock(jobs, shared)
			if tr == tb || tb <= t1 {
				t.Fatalf("shared tokens %d and %d after %d: each holder has its own, growing", tb, tr, t1)
			}
			if ct := checkToken(t, c, jobs, t1); ct.GetCurrent() || ct.GetLatestToken() != max(tb, tr) {
				t.Fatalf("CheckToken of the released grant = %v; want not current, latest %d", ct, max(tb, tr))
			}
			if ct := checkToken(t, c, jobs, tb); !ct.GetCurrent() || ct.GetMode() != shared {
				t.Fatalf("CheckToken of a shared grant = %v; want current, SHARED", ct)
			}
			// Re-acquire in the same mode is re-entrant; in the other mode
			// it is refused and changes nothing.
			if got := r.mustAcquireLock(jobs, shared); got != tr {
				t.Fatalf("re-entrant shared acquire: token %d, want %d", got, tr)
			}
			before := lockStatusOf(t, c, jobs)
			_, err = r.acquireLock(jobs, exclusive, true, 0)
			wantRefused(t, "exclusive acquire by a shared holder", err, connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_LOCK_MODE_MISMATCH)
			sameLock(t, c, jobs, "the refused exclusive acquire", before)

			// Releasing what one does not hold is refused, and changes nothing.
			wantRefused(t, "release of a lock not held", a.releaseLock(proto.String("never-held"), 999999),
				connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_NOT_HOLDER)
			wantRefused(t, "release of a shared grant by another session", a.releaseLock(jobs, tb),
				connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_NOT_HOLDER)
			sameLock(t, c, jobs, "the refused releases", before)

			for _, s := range []struct {
				s     *session
				token uint64
			}{{b, tb}, {r, tr}} {
				if err := s.s.releaseLock(jobs, s.token); err != nil {
					t.Fatalf("release of a shared grant: %v", err)
				}
			}
			_, err = c.CheckToken(context.Background(), connect.NewRequest(&dlmv1.CheckTokenRequest{Lock: jobs, Token: tb}))
			wantRefused(t, "CheckToken of a lock no longer live", err, connect.CodeNotFound, dlmv1.ErrorReason_ERROR_REASON_LOCK_UNKNOWN)
			if st := status(t, c); st.GetLockCount() != 1 {
				t.Fatalf("lock_count %d once jobs is free; want 1 (no state left behind)", st.GetLockCount())
			}
		})
	}
}

// sameLock fails when the lock's view moved from before (the lease left
// aside, which moves with the clock).
func sameLock(t *testing.T, c dlmv1connect.LockServiceClient, lock *string, what string, before *dlmv1.StatusResponse) {
	t.Helper()
	after := lockStatusOf(t, c, lock)
	a, b := proto.CloneOf(after.GetLock()), proto.CloneOf(before.GetLock())
	a.LeaseLeftMs, b.LeaseLeftMs = 0, 0
	for _, h := range append(a.GetHolders(), b.GetHolders()...) {
		h.LeaseLeftMs = 0
	}
	if !proto.Equal(a, b) || after.GetLockCount() != before.GetLockCount() {
		t.Fatalf("%s changed lock %q: %v → %v", what, derefName(lock), b, a)
	}
}

// A shared holder of the default lock may not append, by AppendFile or by
// its release; its grant still releases cleanly.
func TestSharedHolderCannotAppend(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	s := open(t, c, 0)
	token := s.mustAcquireLock(nil, shared)
	before := status(t, c)
	_, err := c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{
		ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token, File: "file_0", Data: []byte("x"), Position: 1,
	}))
	wantRefused(t, "append by a shared holder", err, connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_EXCLUSIVE)
	unchanged(t, c, "append by a shared holder", before)
	_, err = c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{
		ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token, File: "file_0", Data: []byte("x"),
	}))
	wantRefused(t, "logged append by a shared holder", err, connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_EXCLUSIVE)
	_, err = c.LockRelease(context.Background(), connect.NewRequest(&dlmv1.LockReleaseRequest{
		ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token,
		Appends: []*dlmv1.SectionAppend{{File: "file_0", Data: []byte("x")}},
	}))
	wantRefused(t, "release with appends by a shared holder", err, connect.CodeFailedPrecondition, dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_EXCLUSIVE)
	if err := s.releaseLock(nil, token); err != nil {
		t.Fatalf("release of the shared grant: %v", err)
	}
	if got := read(t, c, "file_0"); got != "" {
		t.Fatalf("file_0 = %q after a shared holder's refused appends", got)
	}
	// Close of a session holding a shared default grant needs no section.
	token = s.mustAcquireLock(nil, shared)
	if _, err := c.Close(context.Background(), connect.NewRequest(&dlmv1.CloseRequest{ClientId: s.id, Secret: s.secret, Seq: s.next()})); err != nil {
		t.Fatalf("close holding a shared grant: %v", err)
	}
	_ = token
}

// ListLocks pages through the live locks in name order, the default lock
// first, with page tokens that can end on the default lock; LockHistory
// shows each grant and how it ended, newest last.
func TestListLocksAndHistory(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	s := open(t, c, 0)
	names := []string{"b", "a", "c"}
	tokens := map[string]uint64{}
	for _, n := range names {
		tokens[n] = s.mustAcquireLock(proto.String(n), exclusive)
	}
	var seen []string
	page := ""
	for range 10 {
		res := listLocks(t, c, 1, page)
		if res.GetLockCount() != 4 || len(res.GetLocks()) != 1 {
			t.Fatalf("page %q = %v; want one lock of 4", page, res)
		}
		l := res.GetLocks()[0]
		seen = append(seen, l.GetName())
		if l.GetName() != "" && (l.GetHolder() != s.id || l.GetToken() != tokens[l.GetName()] || len(l.GetHolders()) != 1 || l.GetHolders()[0].GetLeaseLeftMs() <= 0) {
			t.Fatalf("lock %q = %v", l.GetName(), l)
		}
		if page = res.GetNextPageToken(); page == "" {
			break
		}
	}
	if !slices.Equal(seen, []string{"", "a", "b", "c"}) {
		t.Fatalf("paged through %q; want the default lock, then a, b, c", seen)
	}
	if res := listLocks(t, c, 0, ""); len(res.GetLocks()) != 4 || res.GetNextPageToken() != "" {
		t.Fatalf("one default page = %v", res)
	}
	if err := s.releaseLock(proto.String("a"), tokens["a"]); err != nil {
		t.Fatal(err)
	}
	h, err := c.LockHistory(context.Background(), connect.NewRequest(&dlmv1.LockHistoryRequest{Lock: proto.String("a")}))
	if err != nil || len(h.Msg.GetEvents()) != 1 || h.Msg.GetCapacity() != 1024 {
		t.Fatalf("history of a = %v, %v", h, err)
	}
	if e := h.Msg.GetEvents()[0]; e.GetLock() != "a" || e.GetToken() != tokens["a"] || e.GetClientId() != s.id ||
		e.GetMode() != exclusive || e.GetEnd() != dlmv1.LockEnd_LOCK_END_RELEASED || e.GetEndedUnixMs() < e.GetGrantedUnixMs() || e.GetGrantedUnixMs() == 0 {
		t.Fatalf("a's event = %v", e)
	}
	h, err = c.LockHistory(context.Background(), connect.NewRequest(&dlmv1.LockHistoryRequest{}))
	if err != nil || len(h.Msg.GetEvents()) != 3 {
		t.Fatalf("history of all = %v, %v", h, err)
	}
	h, err = c.LockHistory(context.Background(), connect.NewRequest(&dlmv1.LockHistoryRequest{Limit: 1}))
	if err != nil || len(h.Msg.GetEvents()) != 1 || h.Msg.GetEvents()[0].GetLock() != "c" {
		t.Fatalf("the newest event = %v, %v; want c's grant", h, err)
	}
}

// A Status long poll wakes when a named lock changes, and a no_wait
// acquire of a named lock is granted on the Pulse stream with its lock and
// mode.
func TestNamedLockWakesPollsAndPulse(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	holder, waiter := open(t, c, 0), open(t, c, 0)
	jobs := proto.String("jobs")
	token := holder.mustAcquireLock(jobs, exclusive)
	p := openPulse(t, c)
	p.send(creds(waiter))
	p.answer(nil)
	seq := waiter.next()
	res, err := c.LockAcquire(context.Background(), connect.NewRequest(&dlmv1.LockAcquireRequest{
		ClientId: waiter.id, Secret: waiter.secret, Seq: seq, Lock: jobs, Mode: shared, NoWait: true,
	}))
	if err != nil || !res.Msg.GetQueued() {
		t.Fatalf("no_wait acquire of jobs = %v, %v; want queued", res, err)
	}
	known := status(t, c).GetStateIndex()
	polled := make(chan *dlmv1.StatusResponse, 1)
	go func() {
		res, err := c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{KnownStateIndex: known, WaitMs: 20000, Lock: jobs}))
		if err != nil {
			t.Errorf("long poll: %v", err)
			close(polled)
			return
		}
		polled <- res.Msg
	}()
	start := time.Now()
	if err := holder.releaseLock(jobs, token); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-polled:
		if st.GetStateIndex() <= known || time.Since(start) > 10*time.Second {
			t.Fatalf("long poll answered index %d (known %d) after %v", st.GetStateIndex(), known, time.Since(start))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the long poll did not wake on the named lock's release")
	}
	var grants []*dlmv1.PulseGrant
	for deadline := time.Now().Add(10 * time.Second); len(grants) == 0 && time.Now().Before(deadline); {
		m := p.next()
		grants = append(grants, m.GetGranted()...)
	}
	if len(grants) != 1 || grants[0].GetSeq() != seq || grants[0].GetLock() != "jobs" || grants[0].GetMode() != shared || grants[0].GetToken() == 0 {
		t.Fatalf("Pulse grants %v; want seq %d of jobs, SHARED", grants, seq)
	}
	p.send(creds(waiter))
	want := []*dlmv1.HeldLock{{Lock: "jobs", Token: grants[0].GetToken(), Mode: shared}}
	if r := p.answer(nil); !heldEqual(r[0].GetHeld(), want) || r[0].GetToken() != 0 {
		t.Fatalf("Pulse renewal %v; want held %v and no default token", r[0], want)
	}
}

// Over a real server: an acquire's own lock_delay_ms (the server's
// --lock-delay is 0) keeps the lock ungranted after its holder expires,
// Status shows it delayed, the waiter is granted only after the delay by
// the leader's stamps, and the delay is counted.
func TestLockDelayOverTheAPI(t *testing.T) {
	srv := servertest.Start(t, &node.Config{MinLease: 200 * time.Millisecond})
	c := newClient(srv, nil)
	holder, waiter := open(t, c, 300), open(t, c, 20000)
	jobs := proto.String("jobs")
	const delayMs = 1000
	g, err := c.LockAcquire(context.Background(), connect.NewRequest(&dlmv1.LockAcquireRequest{
		ClientId: holder.id, Secret: holder.secret, Seq: holder.next(), Lock: jobs, LockDelayMs: proto.Uint32(delayMs),
	}))
	if err != nil || !g.Msg.GetGranted() {
		t.Fatalf("acquire with a lock-delay: %v %v", g, err)
	}
	seq := waiter.next()
	req := func() *connect.Request[dlmv1.LockAcquireRequest] {
		return connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: waiter.id, Secret: waiter.secret, Seq: seq, Lock: jobs, WaitMs: 100})
	}
	var delayed bool
	var granted *dlmv1.LockAcquireResponse
	for deadline := time.Now().Add(30 * time.Second); granted == nil; {
		if time.Now().After(deadline) {
			t.Fatal("the waiter was not granted within 30s")
		}
		res, err := c.LockAcquire(context.Background(), req())
		if err != nil {
			t.Fatalf("waiting acquire: %v", err)
		}
		if res.Msg.GetGranted() {
			granted = res.Msg
			break
		}
		if l := lockStatusOf(t, c, jobs).GetLock(); l.GetDelayed() {
			if l.GetDelayMs() != delayMs || l.GetHolder() != 0 || len(l.GetHolders()) != 0 || !slices.Equal(l.GetQueue(), []uint64{waiter.id}) {
				t.Fatalf("the delayed lock = %v", l)
			}
			delayed = true
		}
	}
	if !delayed {
		t.Log("the delay passed between two polls: Status never showed it (the history below still times it)")
	}
	h, err := c.LockHistory(context.Background(), connect.NewRequest(&dlmv1.LockHistoryRequest{Lock: jobs}))
	if err != nil || len(h.Msg.GetEvents()) != 2 {
		t.Fatalf("history = %v, %v", h, err)
	}
	expired, next := h.Msg.GetEvents()[0], h.Msg.GetEvents()[1]
	if expired.GetEnd() != dlmv1.LockEnd_LOCK_END_EXPIRED || next.GetToken() != granted.GetToken() {
		t.Fatalf("history %v: want the holder's expiry, then the waiter's grant %d", h.Msg.GetEvents(), granted.GetToken())
	}
	if gap := next.GetGrantedUnixMs() - expired.GetEndedUnixMs(); gap < delayMs {
		t.Fatalf("granted %d ms after the expiry; the lock-delay is %d ms", gap, delayMs)
	}
	_, body := scrape(t, srv, "")
	wantMetric(t, body, "dlm_lock_delays_total", 1)
	wantMetric(t, body, "dlm_locks", 2)
}

// The server's cap on live named locks reaches the state machine: one lock too
// many is ResourceExhausted (TOO_MANY_LOCKS) naming --max-locks, and the
// lock it would have made does not exist; freeing a lock makes room.
func TestMaxLocks(t *testing.T) {
	srv := servertest.Start(t, &node.Config{MaxLocks: 1})
	c := newClient(srv, nil)
	s := open(t, c, 0)
	first := s.mustAcquireLock(proto.String("first"), exclusive)
	_, err := s.acquireLock(proto.String("second"), exclusive, false, 1000)
	wantRefused(t, "a second live named lock", err, connect.CodeResourceExhausted, dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_LOCKS)
	if !strings.Contains(err.Error(), "--max-locks") {
		t.Fatalf("the refusal does not name --max-locks: %v", err)
	}
	if res := listLocks(t, c, 0, ""); res.GetLockCount() != 2 || len(res.GetLocks()) != 2 {
		t.Fatalf("after the refusal: %v; want the default lock and first", res)
	}
	if err := s.releaseLock(proto.String("first"), first); err != nil {
		t.Fatal(err)
	}
	s.mustAcquireLock(proto.String("second"), exclusive)
}
