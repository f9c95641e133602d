package integration_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
	"github.com/dlm/dlm/server/service"
)

// calls counts the requests a server gets, by method, the ones in flight,
// and the connections they came on.
type calls struct {
	mu       sync.Mutex
	byMethod map[string]int
	inFlight map[string]int
	peak     map[string]int
	conns    map[string]bool
}

func newCalls() *calls {
	return &calls{byMethod: map[string]int{}, inFlight: map[string]int{}, peak: map[string]int{}, conns: map[string]bool{}}
}

func (c *calls) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := path.Base(r.URL.Path)
		c.mu.Lock()
		c.byMethod[m]++
		c.inFlight[m]++
		c.peak[m] = max(c.peak[m], c.inFlight[m])
		c.conns[r.RemoteAddr] = true
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.inFlight[m]--
			c.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}

func (c *calls) count(m string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byMethod[m]
}

func (c *calls) peakOf(m string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peak[m]
}

func (c *calls) connections() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// countedNode is one node served through an HTTP/2 server whose requests
// are counted; wrap, when set, replaces the API handler (a server without
// Pulse).
type countedNode struct {
	url   string
	node  *node.Node
	http  *http.Server
	calls *calls
	down  bool
}

func (n *countedNode) stop() {
	if n.down {
		return
	}
	n.down = true
	n.node.Shutdown()
	n.http.Close()
}

// startCounted boots a cluster of size nodes (1: a single node) whose API
// requests are counted. withoutPulse serves Pulse as an older server does.
func startCounted(t *testing.T, size int, withoutPulse bool) []*countedNode {
	t.Helper()
	var peers []node.Peer
	if size > 1 {
		for i := range size {
			peers = append(peers, node.Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: freeLoopback(t)})
		}
	}
	nodes := make([]*countedNode, size)
	for i := range size {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String()
		cfg := node.Config{DataDir: t.TempDir(), ClientURL: url, Logger: slog.New(slog.DiscardHandler)}
		if size > 1 {
			cfg.ID, cfg.RaftAddr, cfg.Peers = peers[i].ID, peers[i].RaftAddr, peers
		}
		n, err := node.Open(servertest.Config(cfg))
		if err != nil {
			ln.Close()
			t.Fatalf("open node %d: %v", i, err)
		}
		var h http.Handler = service.Handler(service.New(n), service.NewCluster(n), nil, service.HandlerConfig{Guard: auth.NewGuard(servertest.AdminToken, nil, false)})
		if withoutPulse {
			mux := http.NewServeMux()
			_, old := dlmv1connect.NewLockServiceHandler(dlmv1connect.UnimplementedLockServiceHandler{})
			mux.Handle(dlmv1connect.LockServicePulseProcedure, old)
			mux.Handle("/", h)
			h = mux
		}
		c := newCalls()
		srv := service.NewServer(c.wrap(h), service.ServerLimits{})
		go srv.Serve(ln)
		nodes[i] = &countedNode{url: url, node: n, http: srv.HTTP, calls: c}
		t.Cleanup(nodes[i].stop)
	}
	return nodes
}

func awaitCountedLeader(t *testing.T, nodes []*countedNode) *countedNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	won := make(chan *countedNode, len(nodes))
	for _, n := range nodes {
		if !n.down {
			go func() {
				if n.node.AwaitLeader(ctx) == nil {
					won <- n
				}
			}()
		}
	}
	return recv(t, won, "a leader")
}

// eventually polls cond until it holds, failing after waitLimit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Many sessions of one process stay alive over one Pulse stream on one
// connection, without a single KeepAlive call, for several leases.
func TestManySessionsShareOnePulseStream(t *testing.T) {
	srv := startCounted(t, 1, false)[0]
	awaitCountedLeader(t, []*countedNode{srv})
	const n = 40
	lease := 1500 * time.Millisecond
	cs := make([]*client.Client, n)
	for i := range cs {
		cs[i] = dial(t, []string{srv.url}, client.WithLease(lease))
	}
	holder, err := cs[0].Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Several leases pass: every session must have been renewed.
	start := time.Now()
	eventually(t, "three leases", func() bool { return time.Since(start) > 3*lease })
	select {
	case <-holder.Lost():
		t.Fatalf("the holder's lock was lost: %v", context.Cause(holder.Context()))
	default:
	}
	st, err := cs[0].Status(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetSessionCount() != n {
		t.Fatalf("%d sessions open, want %d: some expired", st.GetSessionCount(), n)
	}
	if k := srv.calls.count("KeepAlive"); k != 0 {
		t.Errorf("%d KeepAlive calls; the sessions should ride the stream", k)
	}
	if p := srv.calls.count("Pulse"); p != 1 {
		t.Errorf("%d Pulse streams opened, want 1 for the process", p)
	}
	if c := srv.calls.connections(); c != 1 {
		t.Errorf("%d connections, want 1 shared by the process's sessions", c)
	}
	if err := holder.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// Waiters queue with no_wait (no call parks on the server), get their grant
// from the stream, in exactly the order they queued; more waiters than one
// HTTP/2 connection carries streams still share a connection.
func TestNoWaitWaitersFIFOOverPulse(t *testing.T) {
	srv := startCounted(t, 1, false)[0]
	awaitCountedLeader(t, []*countedNode{srv})
	const n = 260 // more than the 250 streams an HTTP/2 connection allows
	holder := dial(t, []string{srv.url})
	lk, err := holder.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		id  uint64
		lk  *client.Lock
		err error
	}
	results := make(chan result, n)
	for range n {
		w := dial(t, []string{srv.url})
		go func() {
			lk, err := w.Acquire(t.Context())
			results <- result{w.ClientID(), lk, err}
		}()
	}
	var queue []uint64
	eventually(t, "every waiter queued", func() bool {
		st, err := holder.StatusPage(t.Context(), &dlmv1.StatusRequest{PageSize: 1000})
		queue = st.GetLock().GetQueue()
		return err == nil && len(queue) == n
	})
	if p := srv.calls.peakOf("LockAcquire"); p > n/10 {
		t.Errorf("up to %d LockAcquire calls in flight at once: waiters parked calls", p)
	}
	if c := srv.calls.connections(); c != 1 {
		t.Errorf("%d connections for %d waiting sessions, want 1", c, n)
	}
	if err := lk.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, want := range queue {
		r := recv(t, results, fmt.Sprintf("grant %d", i))
		if r.err != nil {
			t.Fatalf("waiter %d: %v", r.id, r.err)
		}
		if r.id != want {
			t.Fatalf("grant %d went to session %d, want %d: not FIFO", i, r.id, want)
		}
		if err := r.lk.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if k := srv.calls.count("KeepAlive"); k != 0 {
		t.Errorf("%d KeepAlive calls", k)
	}
}

// Against a server without Pulse (Unimplemented), the client keeps its
// sessions alive with KeepAlive calls and waits with long polls.
func TestFallbackToKeepAliveWithoutPulse(t *testing.T) {
	srv := startCounted(t, 1, true)[0]
	awaitCountedLeader(t, []*countedNode{srv})
	lease := 600 * time.Millisecond
	a := dial(t, []string{srv.url}, client.WithLease(lease))
	b := dial(t, []string{srv.url}, client.WithLease(lease))
	lk, err := a.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan acquired, 1)
	go func() {
		lk, err := b.Acquire(t.Context())
		got <- acquired{lk, err}
	}()
	start := time.Now()
	eventually(t, "four leases", func() bool { return time.Since(start) > 4*lease })
	notLost(t, lk)
	if k := srv.calls.count("KeepAlive"); k < 4 {
		t.Errorf("%d KeepAlive calls: the fallback did not keep the sessions", k)
	}
	if p := srv.calls.count("Pulse"); p != 1 {
		t.Errorf("%d Pulse attempts, want 1 (then KeepAlive for a while)", p)
	}
	if err := lk.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := recv(t, got, "the waiter's grant")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := r.lk.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A follower ends a Pulse stream at once with NOT_LEADER naming the leader;
// when the leader dies, the client opens its stream at the new leader and
// keeps its sessions and its waiter.
func TestPulseFollowsTheLeader(t *testing.T) {
	nodes := startCounted(t, 3, false)
	leader := awaitCountedLeader(t, nodes)
	var follower *countedNode
	var eps []string
	for _, n := range nodes {
		if n != leader {
			follower = n
			eps = append(eps, n.url)
		}
	}
	eps = append(eps, leader.url)

	// The follower names the leader once the leader's URL is replicated.
	api := dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), follower.url)
	var err error
	eventually(t, "NOT_LEADER naming the leader from a follower's Pulse", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
		defer cancel()
		s := api.Pulse(ctx)
		_ = s.Send(&dlmv1.PulseRequest{})
		_, err = s.Receive()
		s.CloseRequest()
		s.CloseResponse()
		e := client.AsError(err)
		return e != nil && e.Reason == dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER && e.LeaderURL == leader.url
	})
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("Pulse at a follower: code %v, want Unavailable", connect.CodeOf(err))
	}

	lease := 3 * time.Second
	holder := dial(t, eps, client.WithLease(lease), client.WithAttemptTimeout(time.Second))
	waiter := dial(t, eps, client.WithLease(lease), client.WithAttemptTimeout(time.Second))
	lk, err := holder.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan acquired, 1)
	go func() {
		lk, err := waiter.Acquire(t.Context())
		got <- acquired{lk, err}
	}()
	eventually(t, "the waiter queued", func() bool {
		st, err := holder.Status(t.Context(), true)
		return err == nil && st.GetLock().GetQueueLength() == 1
	})
	leader.stop()
	next := awaitCountedLeader(t, nodes)
	eventually(t, "a Pulse stream at the new leader", func() bool { return next.calls.count("Pulse") > 0 })
	// Renewals in flight when the leader died may each have fallen back to
	// one KeepAlive while the stream was being reopened; after a lease at
	// the new leader, the sessions live on its stream alone, for another
	// lease.
	start := time.Now()
	eventually(t, "a lease", func() bool { return time.Since(start) > lease })
	settled := next.calls.count("KeepAlive")
	eventually(t, "two leases", func() bool { return time.Since(start) > 2*lease })
	notLost(t, lk)
	if err := lk.Release(t.Context()); err != nil {
		t.Fatalf("release at the new leader: %v", err)
	}
	r := recv(t, got, "the waiter's grant after the failover")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := r.lk.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if k := next.calls.count("KeepAlive") - settled; k != 0 {
		t.Errorf("%d KeepAlive calls at the new leader once its stream was up, want none", k)
	}
}
