// Package servertest starts real dlm nodes behind real HTTP/2 servers on
// loopback for tests, in the manner of net/http/httptest.
package servertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/service"
)

// Server is one node serving the API on 127.0.0.1.
type Server struct {
	// URL is the base URL of the API, http://127.0.0.1:port.
	URL string
	// Node is the running node.
	Node *node.Node
	// Config is the node's configuration; DataDir stays after Close, so a
	// test can Restart on the same data.
	Config node.Config

	t    testing.TB
	ln   net.Listener
	http *service.Server
}

// Start runs a single node with its data in a fresh temporary folder. cfg
// may be nil; its zero fields take dlm's defaults. The server stops when the
// test ends.
func Start(t testing.TB, cfg *node.Config) *Server {
	t.Helper()
	c := node.Config{}
	if cfg != nil {
		c = *cfg
	}
	if c.DataDir == "" {
		c.DataDir = t.TempDir()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RaftLog == nil {
		c.RaftLog = io.Discard
	}
	s := &Server{t: t, Config: c}
	s.start("127.0.0.1:0")
	t.Cleanup(s.Close)
	return s
}

func (s *Server) start(addr string) {
	s.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("servertest: listen: %v", err)
	}
	s.ln = ln
	s.URL = "http://" + ln.Addr().String()
	s.Config.ClientURL = s.URL
	n, err := node.Open(s.Config)
	if err != nil {
		ln.Close()
		s.t.Fatalf("servertest: open node: %v", err)
	}
	s.Node = n
	s.http = service.NewServer(service.Handler(service.New(n), service.NewCluster(n), nil, service.HandlerConfig{}), service.ServerLimits{})
	go s.http.Serve(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.AwaitLeader(ctx); err != nil {
		s.t.Fatalf("servertest: node did not become leader: %v", err)
	}
}

// Close stops the node and the HTTP server. It is safe to call twice.
func (s *Server) Close() {
	if s.Node == nil {
		return
	}
	s.Node.Shutdown()
	s.http.HTTP.Close()
	s.Node, s.http = nil, nil
}

// Restart stops the server and starts it again on the same address and data
// folder, as after a clean restart.
func (s *Server) Restart() {
	s.t.Helper()
	addr := s.ln.Addr().String()
	s.Close()
	// The port was just released; binding it again can race a lingering
	// accept, so retry briefly.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("servertest: port %s not free again: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.start(addr)
}

// HTTPClient is an HTTP/2 cleartext client, as gRPC needs.
func HTTPClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}
