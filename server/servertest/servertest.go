// Package servertest starts real dlm nodes behind real HTTP/2 servers on
// loopback for tests, in the manner of net/http/httptest.
package servertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/membership"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/service"
)

// AdminToken is the admin token of every server Start starts (and of
// StartGuarded's unless its guard says otherwise): tests send it as
// "Authorization: Bearer" for administrative calls.
const AdminToken = "servertest-admin-token-0123456789"

// Server is one node serving the API on 127.0.0.1.
type Server struct {
	// URL is the base URL of the API, http://127.0.0.1:port.
	URL string
	// Node is the running node.
	Node *node.Node
	// Config is the node's configuration; DataDir stays after Close, so a
	// test can Restart on the same data.
	Config node.Config

	t     testing.TB
	ln    net.Listener
	http  *service.Server
	opts  []service.Option
	guard *auth.Guard
}

// Start runs a single node with its data in a fresh temporary folder. cfg
// may be nil; its zero fields take node.DefaultConfig's values (see Config). The server stops when the
// test ends. opts configure the API service (none: no per-address limits).
func Start(t testing.TB, cfg *node.Config, opts ...service.Option) *Server {
	t.Helper()
	return start(t, cfg, nil, opts)
}

// StartGuarded is Start with guard checking every call; nil is the guard
// of a server without --auth-tokens whose admin token is AdminToken.
func StartGuarded(t testing.TB, cfg *node.Config, guard *auth.Guard) *Server {
	t.Helper()
	return start(t, cfg, guard, nil)
}

func start(t testing.TB, cfg *node.Config, guard *auth.Guard, opts []service.Option) *Server {
	t.Helper()
	var c node.Config
	if cfg != nil {
		c = *cfg
	}
	c = Config(c)
	if c.DataDir == "" {
		c.DataDir = t.TempDir()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RaftLog == nil {
		c.RaftLog = io.Discard
	}
	if c.VerifyURL == nil {
		c.VerifyURL = membership.VerifyURL(membership.Config{AdminToken: AdminToken})
	}
	if guard == nil {
		guard = auth.NewGuard(AdminToken, nil, false)
	}
	s := &Server{t: t, Config: c, guard: guard, opts: opts}
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
	s.http = service.NewServer(service.Handler(service.New(n, s.opts...), service.NewCluster(n), nil, service.HandlerConfig{Guard: s.guard, Metrics: n.Metrics()}), service.ServerLimits{})
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
	return HTTPClientFrom("")
}

// HTTPClientFrom is HTTPClient with connections from the local IP address
// local (another loopback address, such as 127.0.0.2, looks like another
// client machine); "" lets the system choose.
func HTTPClientFrom(local string) *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	d := &net.Dialer{}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	return &http.Client{Transport: &http.Transport{Protocols: p, DialContext: d.DialContext}}
}

// Config is node.DefaultConfig with the fields set in c put over it, so that
// a test names only what it is about. node.Open takes no zero fields; this
// is for tests only.
func Config(c node.Config) node.Config {
	out := node.DefaultConfig()
	dst := reflect.ValueOf(&out).Elem()
	src := reflect.ValueOf(c)
	for i := range src.NumField() {
		if f := dst.Field(i); f.CanSet() && !src.Field(i).IsZero() {
			f.Set(src.Field(i))
		}
	}
	if c.MinFreeSpace == 0 && (c.MaxSectionBytes != 0 || c.LogSegmentSize != 0) {
		out.MinFreeSpace = node.DefaultMinFreeSpace(out.MaxSectionBytes, out.LogSegmentSize)
	}
	return out
}
