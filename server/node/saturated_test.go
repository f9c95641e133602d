package node_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/lockstate"
	"github.com/dlm/dlm/server/servertest"
)

// rawSession drives the API call by call, never acknowledging anything
// unless told to.
type rawSession struct {
	t      *testing.T
	api    dlmv1connect.LockServiceClient
	id     uint64
	secret string
	seq    uint64
	token  uint64
}

func openRaw(t *testing.T, api dlmv1connect.LockServiceClient, leaseMs uint32) *rawSession {
	t.Helper()
	res, err := api.Init(t.Context(), connect.NewRequest(&dlmv1.InitRequest{LeaseMs: leaseMs, Name: t.Name()}))
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return &rawSession{t: t, api: api, id: res.Msg.GetClientId(), secret: res.Msg.GetSecret()}
}

func (s *rawSession) acquire(ctx context.Context, waitMs uint32) (*dlmv1.LockAcquireResponse, error) {
	s.seq++
	res, err := s.api.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{
		ClientId: s.id, Secret: s.secret, Seq: s.seq, WaitMs: waitMs,
	}))
	if err != nil {
		return nil, err
	}
	if res.Msg.GetGranted() {
		s.token = res.Msg.GetToken()
	}
	return res.Msg, nil
}

func (s *rawSession) append(ackedBelow uint64) error {
	s.seq++
	return s.appendSeq(s.seq, ackedBelow)
}

func (s *rawSession) appendSeq(seq, ackedBelow uint64) error {
	_, err := s.api.AppendFile(s.t.Context(), connect.NewRequest(&dlmv1.AppendFileRequest{
		ClientId: s.id, Secret: s.secret, Seq: seq, AckedBelow: ackedBelow,
		Token: s.token, File: "file_0", Data: []byte("x"),
	}))
	return err
}

func (s *rawSession) keepAlive() error {
	_, err := s.api.KeepAlive(s.t.Context(), connect.NewRequest(&dlmv1.KeepAliveRequest{ClientId: s.id, Secret: s.secret}))
	return err
}

// acquireSeq is a holder's re-entrant acquire: the log records its outcome
// (appends are staged in the leader's memory and record none).
func (s *rawSession) acquireSeq(seq, ackedBelow uint64) error {
	_, err := s.api.LockAcquire(s.t.Context(), connect.NewRequest(&dlmv1.LockAcquireRequest{
		ClientId: s.id, Secret: s.secret, Seq: seq, AckedBelow: ackedBelow, Try: true,
	}))
	return err
}

// fill makes re-entrant acquires without acknowledging until the session holds as many
// unacknowledged outcomes as the service keeps. Several at a time, so that
// Raft batches them: the test stays short on a busy machine.
func (s *rawSession) fill() {
	s.t.Helper()
	const workers = 8
	last := uint64(lockstate.DefaultLimits().MaxOutstanding)
	seqs := make(chan uint64)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	// A logged acquire does not renew the lease (an append did): keep the
	// session alive while it fills, as its keepalives would. Once full, a
	// keepalive renews nothing, which the tests check.
	filled := make(chan struct{})
	defer close(filled)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-filled:
				return
			case <-tick.C:
				s.keepAlive()
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range seqs {
				if err := s.acquireSeq(seq, 0); err != nil {
					errs <- fmt.Errorf("acquire seq %d: %w", seq, err)
					return
				}
			}
		}()
	}
	func() {
		defer close(seqs)
		for seq := s.seq + 1; seq <= last; seq++ {
			select {
			case seqs <- seq:
			case err := <-errs:
				s.t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		s.t.Error(err)
	}
	if s.t.Failed() {
		s.t.FailNow()
	}
	s.seq = last
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

func wantTooMany(t *testing.T, what string, err error) {
	t.Helper()
	if reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS || connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("%s = %v, want ResourceExhausted with TOO_MANY_REQUESTS", what, err)
	}
}

// A session that never acknowledges fills its table of outcomes; from then
// on it can change nothing, and its keepalives (and refused calls) must not
// renew its lease: it expires within its lease, its critical section is
// dropped, and the lock passes to the waiting client.
func TestSaturatedSessionLosesTheLock(t *testing.T) {
	srv := servertest.Start(t, nil)
	api := dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), srv.URL)
	const leaseMs = 2000
	holder := openRaw(t, api, leaseMs)
	if g, err := holder.acquire(t.Context(), 1000); err != nil || !g.GetGranted() {
		t.Fatalf("first acquire = %v, %v; want granted", g, err)
	}
	holder.fill()
	saturatedAt := time.Now()
	if err := holder.keepAlive(); err == nil {
		t.Fatal("a keepalive of a saturated session was accepted")
	} else {
		wantTooMany(t, "keepalive of a saturated session", err)
	}
	wantTooMany(t, "append of a saturated session", holder.append(0))
	holder.seq-- // refused, not recorded: the number is free

	waiter := openRaw(t, api, 30_000)
	type acquired struct {
		g   *dlmv1.LockAcquireResponse
		err error
	}
	granted := make(chan acquired, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for range 30 {
			g, err := waiter.acquire(ctx, 1000)
			if err != nil || g.GetGranted() {
				granted <- acquired{g, err}
				return
			}
			waiter.seq-- // the same request again: a long poll
		}
		granted <- acquired{nil, errors.New("not granted after 30 polls")}
	}()

	a := <-granted
	if a.err != nil || !a.g.GetGranted() {
		t.Fatalf("waiter's acquire = %v, %v; want granted", a.g, a.err)
	}
	elapsed := time.Since(saturatedAt)
	t.Logf("the lock passed on %v after the holder saturated (lease %dms)", elapsed.Round(time.Millisecond), leaseMs)
	if elapsed > 5*leaseMs*time.Millisecond {
		t.Errorf("the lock passed on only after %v, want about one lease (%dms)", elapsed, leaseMs)
	}
	if reason := reasonOf(holder.keepAlive()); reason != dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED {
		t.Errorf("the saturated holder's keepalive after the hand-over: reason %v, want SESSION_EXPIRED", reason)
	}
	// The holder never released: its staged appends are dropped.
	res, err := api.ReadFile(t.Context(), connect.NewRequest(&dlmv1.ReadFileRequest{File: "file_0"}))
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	if n := res.Msg.GetSize(); n != 0 {
		t.Errorf("file_0 has %d bytes; the expired holder's section must be dropped", n)
	}
}

// A saturated session that acknowledges its outcomes gets out: the request
// that acknowledges is applied, and keepalives renew the lease again.
func TestSaturatedSessionRecoversByAcknowledging(t *testing.T) {
	srv := servertest.Start(t, nil)
	api := dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), srv.URL)
	s := openRaw(t, api, 10_000)
	if g, err := s.acquire(t.Context(), 1000); err != nil || !g.GetGranted() {
		t.Fatalf("acquire = %v, %v; want granted", g, err)
	}
	if err := s.keepAlive(); err != nil {
		t.Fatalf("keepalive before saturating: %v", err)
	}
	s.fill()
	wantTooMany(t, "keepalive of a saturated session", s.keepAlive())
	// A logged request moves the acknowledgement (an append, staged in the
	// leader's memory, does not).
	s.seq++
	if err := s.acquireSeq(s.seq, s.seq); err != nil {
		t.Fatalf("a request that acknowledges everything before it: %v", err)
	}
	if err := s.keepAlive(); err != nil {
		t.Fatalf("keepalive after acknowledging: %v", err)
	}
}
