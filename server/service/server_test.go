package service_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/servertest"
	"github.com/dlm/dlm/server/service"
)

// serveLimited serves srv's node again on a second listener through
// service.NewServer with the given limits, and returns that server's address.
func serveLimited(t *testing.T, srv *servertest.Server, l service.ServerLimits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := service.NewServer(service.Handler(service.New(srv.Node), service.NewCluster(srv.Node), nil, service.HandlerConfig{}), l)
	go s.Serve(ln)
	t.Cleanup(func() { s.HTTP.Close() })
	return ln.Addr().String()
}

// awaitClosedByServer reads from c until the server closes it, failing if
// that takes longer than within.
func awaitClosedByServer(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %v", within)
	}
}

// watchedConn records when the peer closed the connection.
type watchedConn struct {
	net.Conn
	closed atomic.Bool
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.closed.Store(true)
	}
	return n, err
}

func TestIdleAndSlowConnectionsClosed(t *testing.T) {
	srv := servertest.Start(t, nil)
	const short = 300 * time.Millisecond
	addr := serveLimited(t, srv, service.ServerLimits{ReadHeaderTimeout: short, BodyTimeout: short, IdleTimeout: short})
	dial := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	t.Run("slow headers", func(t *testing.T) {
		c := dial(t)
		io.WriteString(c, "POST /dlm.v1.LockService/Status HTTP/1.1\r\nHost: x\r\n")
		awaitClosedByServer(t, c, 10*time.Second)
	})
	t.Run("slow body", func(t *testing.T) {
		c := dial(t)
		io.WriteString(c, "POST /dlm.v1.LockService/Status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
		awaitClosedByServer(t, c, 10*time.Second)
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		c := dial(t)
		io.WriteString(c, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		res.Body.Close()
		awaitClosedByServer(t, c, 10*time.Second)
	})
	t.Run("idle h2c", func(t *testing.T) {
		var conn atomic.Pointer[watchedConn]
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		hc := &http.Client{Transport: &http.Transport{Protocols: p, DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, a)
			if err != nil {
				return nil, err
			}
			w := &watchedConn{Conn: c}
			conn.Store(w)
			return w, nil
		}}}
		defer hc.CloseIdleConnections()
		lc := dlmv1connect.NewLockServiceClient(hc, "http://"+addr, connect.WithGRPC())
		if _, err := lc.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{})); err != nil {
			t.Fatalf("status: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !conn.Load().closed.Load() {
			if time.Now().After(deadline) {
				t.Fatal("the server kept an idle h2c connection open")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	// A long poll outlasts every one of those timeouts: they bound reading
	// the request, not answering it.
	for _, p := range protocols {
		t.Run("long poll "+p.name, func(t *testing.T) {
			c := dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), "http://"+addr, p.opts...)
			if p.name == "connect" {
				c = dlmv1connect.NewLockServiceClient(http.DefaultClient, "http://"+addr)
			}
			holder, waiter := open(t, c, 10000), open(t, c, 10000)
			tok := holder.mustAcquire()
			start := time.Now()
			res, err := waiter.acquire(false, uint32(6*short/time.Millisecond))
			if err != nil || res.GetGranted() {
				t.Fatalf("a wait of %v answered %v %v after %v, want not granted and no error", 6*short, res, err, time.Since(start))
			}
			if err := holder.release(tok); err != nil {
				t.Fatalf("release: %v", err)
			}
			for _, s := range []*session{holder, waiter} {
				s.c.Close(context.Background(), connect.NewRequest(&dlmv1.CloseRequest{ClientId: s.id, Secret: s.secret, Seq: s.next()}))
			}
		})
	}
}

func TestConnectionCap(t *testing.T) {
	srv := servertest.Start(t, nil)
	addr := serveLimited(t, srv, service.ServerLimits{MaxConnections: 2})
	type client struct {
		c net.Conn
		r *bufio.Reader
	}
	connect := func() client {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return client{c, bufio.NewReader(c)}
	}
	ask := func(cl client, wait time.Duration) error {
		io.WriteString(cl.c, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
		cl.c.SetReadDeadline(time.Now().Add(wait))
		res, err := http.ReadResponse(cl.r, nil)
		if err != nil {
			return err
		}
		res.Body.Close()
		return nil
	}
	a, b := connect(), connect()
	for _, cl := range []client{a, b} {
		if err := ask(cl, 10*time.Second); err != nil {
			t.Fatalf("a connection within the cap got no answer: %v", err)
		}
	}
	third := connect()
	if err := ask(third, time.Second); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("a connection above the cap of 2 was served (%v)", err)
	}
	if err := ask(a, 10*time.Second); err != nil {
		t.Fatalf("a connection within the cap stopped working: %v", err)
	}
	b.c.Close()
	third.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(third.r, nil)
	if err != nil {
		t.Fatalf("the waiting connection was not served once another closed: %v", err)
	}
	res.Body.Close()
}
