package membership_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/membership"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
	"github.com/dlm/dlm/server/service"
)

// forward accepts connections at a new loopback address and relays each
// to target: the address a member's peers know it by, in front of the one
// it binds (a proxy, a NAT).
func forward(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return ln.Addr().String()
}

// Members of a fixed cluster whose peers know them by another address than
// their --raft one announce their client URLs with the configured address:
// every URL gets recorded, and no announce rebinds a member's Raft address
// (which would route Raft around the proxy, or, refused, leave the URL
// unknown).
func TestAnnounceKeepsTheConfiguredAddress(t *testing.T) {
	var (
		peers []node.Peer
		binds []string
		urls  []string
	)
	for i := range 3 {
		bind := freeLoopback(t)
		known := bind
		if i > 0 {
			known = forward(t, bind)
		}
		peers = append(peers, node.Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: known})
		binds = append(binds, bind)
	}
	var nodes []*node.Node
	for i, p := range peers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		urls = append(urls, "http://"+ln.Addr().String())
		n, err := node.Open(servertest.Config(node.Config{
			ID: p.ID, RaftAddr: binds[i], Peers: peers, DataDir: t.TempDir(), ClientURL: urls[i],
			Logger: slog.New(slog.DiscardHandler), RaftLog: io.Discard,
		}))
		if err != nil {
			ln.Close()
			t.Fatalf("open %s: %v", p.ID, err)
		}
		srv := &http.Server{Handler: service.Handler(service.New(n), service.NewCluster(n), nil, service.HandlerConfig{Guard: auth.NewGuard(servertest.AdminToken, nil, false)}), Protocols: service.Protocols()}
		go srv.Serve(ln)
		ctx, stop := context.WithCancel(context.Background())
		announced := make(chan error, 1)
		go func() {
			announced <- membership.Run(ctx, membership.Config{AdminToken: servertest.AdminToken, Logger: slog.New(slog.DiscardHandler)}, n, nil)
		}()
		t.Cleanup(func() {
			stop()
			<-announced
			n.Shutdown()
			srv.Close()
		})
		nodes = append(nodes, n)
	}
	leader := currentLeader(t, nodes, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ms, err := leader.Members()
		if err != nil {
			t.Fatal(err)
		}
		done := len(ms) == len(peers)
		for i, m := range ms {
			if m.RaftAddr != peers[i].RaftAddr {
				t.Fatalf("member %s rebound to %s; its peers know it as %s", m.ID, m.RaftAddr, peers[i].RaftAddr)
			}
			done = done && m.ClientURL == urls[i]
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every member's URL recorded: %+v", ms)
		}
		<-tick.C
	}
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// currentLeader waits for one of nodes to lead.
func currentLeader(t *testing.T, nodes []*node.Node, within time.Duration) *node.Node {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			err := n.AwaitLeader(ctx)
			cancel()
			if err == nil {
				return n
			}
		}
	}
	t.Fatalf("no leader within %v", within)
	return nil
}
