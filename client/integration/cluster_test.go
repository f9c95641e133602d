package integration_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
	"github.com/dlm/dlm/server/service"
)

// clusterNode is one member of an in-process replicated cluster.
type clusterNode struct {
	url  string
	node *node.Node
	http *http.Server
	down bool
}

func (n *clusterNode) stop() {
	if n.down {
		return
	}
	n.down = true
	n.node.Shutdown()
	n.http.Close()
}

// freeLoopback returns a loopback address that was free a moment ago.
func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startCluster boots a fixed cluster of size nodes on loopback.
func startCluster(t *testing.T, size int) []*clusterNode {
	t.Helper()
	var peers []node.Peer
	for i := range size {
		peers = append(peers, node.Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: freeLoopback(t)})
	}
	nodes := make([]*clusterNode, size)
	for i, p := range peers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String()
		n, err := node.Open(servertest.Config(node.Config{
			ID: p.ID, RaftAddr: p.RaftAddr, Peers: peers, DataDir: t.TempDir(), ClientURL: url,
			Logger: slog.New(slog.DiscardHandler),
		}))
		if err != nil {
			ln.Close()
			t.Fatalf("open %s: %v", p.ID, err)
		}
		srv := &http.Server{Handler: service.Handler(service.New(n), service.NewCluster(n), nil, service.HandlerConfig{Guard: auth.NewGuard(servertest.AdminToken, nil, false)}), Protocols: service.Protocols()}
		go srv.Serve(ln)
		nodes[i] = &clusterNode{url: url, node: n, http: srv}
		t.Cleanup(nodes[i].stop)
	}
	return nodes
}

// awaitLeader returns the node that wins the election.
func awaitLeader(t *testing.T, nodes []*clusterNode) *clusterNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	won := make(chan *clusterNode, len(nodes))
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

// The client is given the followers first: it finds the leader through
// their NOT_LEADER answers, and when the leader dies while it holds the
// lock, it finds the new leader by itself and carries on under the same
// grant.
func TestClusterFailoverKeepsTheGrant(t *testing.T) {
	nodes := startCluster(t, 3)
	leader := awaitLeader(t, nodes)
	var eps []string
	for _, n := range nodes {
		if n != leader {
			eps = append(eps, n.url)
		}
	}
	eps = append(eps, leader.url)

	forEachProtocol(t, func(t *testing.T, opts []client.Option) {
		c := dial(t, eps, opts...)
		if err := c.WithLock(t.Context(), func(ctx context.Context, lk *client.Lock) error {
			return lk.Append(ctx, "file_1", []byte("x"))
		}); err != nil {
			t.Fatalf("section through a follower: %v", err)
		}
	})

	c := dial(t, eps, client.WithAttemptTimeout(time.Second))
	lk, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Append(t.Context(), "file_2", []byte("A")); err != nil {
		t.Fatal(err)
	}
	leader.stop()
	if err := lk.Append(t.Context(), "file_2", []byte("B")); err != nil {
		t.Fatalf("append after the leader died: %v", err)
	}
	notLost(t, lk)
	if err := lk.Release(t.Context()); err != nil {
		t.Fatalf("release under the new leader: %v", err)
	}
	got, err := c.ReadFile(t.Context(), "file_2")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "AB" {
		t.Errorf("file_2 = %q, want AB", got)
	}
	if got, _ := c.ReadFile(t.Context(), "file_1"); string(got) != "xx" {
		t.Errorf("file_1 = %q, want xx", got)
	}
}
