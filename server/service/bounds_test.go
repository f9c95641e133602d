package service_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
	"github.com/dlm/dlm/server/service"
)

func initErr(c dlmv1connect.LockServiceClient) (*dlmv1.InitResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{Name: "flood"}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func wantRefusal(t *testing.T, err error, reason dlmv1.ErrorReason, msg string) {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeResourceExhausted || reasonOf(err) != reason || !strings.Contains(fmt.Sprint(err), msg) {
		t.Fatalf("got %v (%s); want ResourceExhausted, %s, a message with %q", err, reasonOf(err), reason, msg)
	}
}

// Sessions beyond --max-sessions are refused and change nothing; concurrent
// opens never overshoot the cap, because it is checked where the log is
// applied.
func TestSessionCap(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			const max = 5
			srv := servertest.Start(t, &node.Config{MaxSessions: max})
			c := newClient(srv, p.opts)
			var (
				mu      sync.Mutex
				opened  []*dlmv1.InitResponse
				refused int
				wg      sync.WaitGroup
			)
			for range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ses, err := initErr(c)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						opened = append(opened, ses)
					case reasonOf(err) == dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS:
						refused++
						wantRefusal(t, err, dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS, "--max-sessions")
					default:
						t.Errorf("Init: %v", err)
					}
				}()
			}
			wg.Wait()
			if len(opened) != max || refused != 40-max {
				t.Fatalf("40 concurrent opens with a cap of %d: %d opened, %d refused", max, len(opened), refused)
			}
			before := status(t, c)
			_, err := initErr(c)
			wantRefusal(t, err, dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS, "--max-sessions")
			after := status(t, c)
			if after.GetSessionCount() != max || after.GetStateIndex() != before.GetStateIndex() {
				t.Fatalf("a refused open changed the state: %d sessions, state index %d → %d", after.GetSessionCount(), before.GetStateIndex(), after.GetStateIndex())
			}
			// Room again once a session closes.
			if _, err := c.Close(context.Background(), connect.NewRequest(&dlmv1.CloseRequest{ClientId: opened[0].GetClientId(), Secret: opened[0].GetSecret(), Seq: 1})); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, err := initErr(c); err != nil {
				t.Fatalf("Init after a close: %v", err)
			}
		})
	}
}

// One address that opens sessions too fast is refused with a retry hint;
// another address is not held back, and the first is served again once its
// bucket refills.
func TestInitRateLimit(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			srv := servertest.Start(t, nil, service.WithInitRate(service.InitRate{Rate: 2, Burst: 3}))
			c := newClient(srv, p.opts)
			for i := range 3 {
				if _, err := initErr(c); err != nil {
					t.Fatalf("open %d within the burst: %v", i+1, err)
				}
			}
			before := status(t, c)
			_, err := initErr(c)
			wantRefusal(t, err, dlmv1.ErrorReason_ERROR_REASON_INIT_RATE_LIMITED, "retry in")
			if after := status(t, c); after.GetSessionCount() != 3 || after.GetStateIndex() != before.GetStateIndex() {
				t.Fatalf("a refused open changed the state: %d sessions", after.GetSessionCount())
			}

			// Another machine (another loopback address) has its own bucket.
			other := dlmv1connect.NewLockServiceClient(servertest.HTTPClientFrom("127.0.0.2"), srv.URL, p.opts...)
			if _, err := initErr(other); err != nil {
				t.Fatalf("open from another address: %v", err)
			}

			// The first address is served again after its bucket refills
			// (2 a second): poll, bounded.
			deadline := time.Now().Add(10 * time.Second)
			for attempts := 1; ; attempts++ {
				_, err := initErr(c)
				if err == nil {
					break
				}
				if reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_INIT_RATE_LIMITED || time.Now().After(deadline) || attempts > 200 {
					t.Fatalf("open after the bucket refills (attempt %d): %v", attempts, err)
				}
				time.Sleep(50 * time.Millisecond) // a polling interval, not a synchronisation
			}
		})
	}
}

func openMany(t *testing.T, c dlmv1connect.LockServiceClient, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int, n)
	for i := range n {
		work <- i
	}
	close(work)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{LeaseMs: 300_000, Name: fmt.Sprintf("session-%05d", i)}))
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Init: %v", err)
	}
}

// A Status over a big table is small (a page of sessions and waiters, with
// whole counts), and paging lists every session exactly once.
func TestStatusBounded(t *testing.T) {
	const n = 5000
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	openMany(t, c, n)

	st := status(t, c)
	size := proto.Size(st)
	t.Logf("first page: %d bytes, %d sessions listed of %d", size, len(st.GetSessions()), st.GetSessionCount())
	if size > 16<<10 {
		t.Fatalf("a Status with %d sessions is %d bytes; want at most 16 KiB", n, size)
	}
	if st.GetSessionCount() != n || len(st.GetSessions()) != node.DefaultStatusPage || st.GetNextPageToken() == "" {
		t.Fatalf("first page: count %d, %d listed, next %q; want %d, %d, a token", st.GetSessionCount(), len(st.GetSessions()), st.GetNextPageToken(), n, node.DefaultStatusPage)
	}

	seen := make(map[uint64]bool, n)
	token := ""
	for pages := 1; ; pages++ {
		if pages > n/700+2 {
			t.Fatalf("paging does not end after %d pages", pages)
		}
		res, err := c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{PageSize: 700, PageToken: token}))
		if err != nil {
			t.Fatalf("Status page %d: %v", pages, err)
		}
		if len(res.Msg.GetSessions()) > 700 {
			t.Fatalf("page of %d, asked for 700", len(res.Msg.GetSessions()))
		}
		for _, s := range res.Msg.GetSessions() {
			if seen[s.GetClientId()] {
				t.Fatalf("session %d listed twice", s.GetClientId())
			}
			seen[s.GetClientId()] = true
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(seen) != n {
		t.Fatalf("paging listed %d sessions; want %d", len(seen), n)
	}

	// A page never passes the hard maximum, however large the ask.
	res, err := c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{PageSize: 1 << 30}))
	if err != nil || len(res.Msg.GetSessions()) != node.MaxStatusPage {
		t.Fatalf("huge page: %d sessions, %v; want %d", len(res.Msg.GetSessions()), err, node.MaxStatusPage)
	}
	// A token the service did not give is refused.
	_, err = c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{PageToken: "x"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("bad page token: %v; want InvalidArgument", err)
	}
}

// A long poll answers promptly after a change, and after its wait when
// nothing changes.
func TestStatusLongPoll(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	known := status(t, c).GetStateIndex()

	// Nothing changes: the answer comes after the wait, not before, and
	// with the same state.
	start := time.Now()
	res, err := c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{KnownStateIndex: known, WaitMs: 400}))
	if took := time.Since(start); err != nil || took < 400*time.Millisecond || took > 10*time.Second || res.Msg.GetStateIndex() != known {
		t.Fatalf("idle long poll: %v after %v, state %d; want the same state %d after 400ms", err, took, res.Msg.GetStateIndex(), known)
	}

	// A change ends a long wait at once.
	type answer struct {
		st   *dlmv1.StatusResponse
		err  error
		took time.Duration
	}
	done := make(chan answer, 1)
	start = time.Now()
	go func() {
		res, err := c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{KnownStateIndex: known, WaitMs: 30_000}))
		a := answer{err: err, took: time.Since(start)}
		if err == nil {
			a.st = res.Msg
		}
		done <- a
	}()
	if _, err := initErr(c); err != nil {
		t.Fatalf("Init: %v", err)
	}
	select {
	case a := <-done:
		if a.err != nil || a.st.GetStateIndex() <= known || a.st.GetSessionCount() != 1 {
			t.Fatalf("long poll after a change: %v, state %d (known %d), %d sessions", a.err, a.st.GetStateIndex(), known, a.st.GetSessionCount())
		}
		t.Logf("long poll answered %v after it was sent", a.took)
	case <-time.After(15 * time.Second):
		t.Fatal("the long poll did not answer within 15s of a change (its wait was 30s)")
	}
}

// An open that opens nothing costs the address nothing: a client retrying
// through an election, or against a full cluster, is not rate limited for
// it.
func TestRefusedOpensCostNoToken(t *testing.T) {
	srv := servertest.Start(t, &node.Config{MaxSessions: 1}, service.WithInitRate(service.InitRate{Rate: 0.01, Burst: 2}))
	c := newClient(srv, nil)
	if _, err := initErr(c); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		_, err := initErr(c)
		wantRefusal(t, err, dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS, "--max-sessions")
	}
}
