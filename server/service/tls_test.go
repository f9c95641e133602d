package service_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/internal/certs"
	"github.com/dlm/dlm/server/servertest"
	"github.com/dlm/dlm/server/service"
)

// ServeTLS speaks HTTP/2 (by ALPN, so gRPC works) and HTTP/1.1 over TLS,
// within the same limits as Serve: a connection that never completes its
// handshake is closed after ReadHeaderTimeout, and the connection cap holds.
func TestServeTLS(t *testing.T) {
	srv := servertest.Start(t, nil)
	ca, err := certs.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.WriteIssued(t.TempDir(), "server", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := certs.Server(f.Cert, f.Key, "")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := service.NewServer(service.Handler(service.New(srv.Node), service.NewCluster(srv.Node), nil, service.HandlerConfig{}),
		service.ServerLimits{ReadHeaderTimeout: 4 * time.Second, MaxConnections: 2})
	go s.ServeTLS(ln, cfg)
	t.Cleanup(func() { s.HTTP.Close() })
	url := "https://" + ln.Addr().String()
	clientTLS, err := certs.Client(f.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	h2 := new(http.Protocols)
	h2.SetHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: h2, TLSClientConfig: clientTLS.Clone()}}
	if _, err := dlmv1connect.NewLockServiceClient(hc, url, connect.WithGRPC()).Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{})); err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}
	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	hc1 := &http.Client{Transport: &http.Transport{Protocols: h1, TLSClientConfig: clientTLS.Clone()}}
	if _, err := dlmv1connect.NewLockServiceClient(hc1, url).Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{})); err != nil {
		t.Fatalf("Connect over HTTP/1.1 and TLS: %v", err)
	}
	hc.CloseIdleConnections()
	hc1.CloseIdleConnections()

	// A connection that sends no handshake is closed.
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	awaitClosedByServer(t, silent, 10*time.Second)

	// Two handshakes fill the cap; a third waits until one closes. (Each
	// holds its place for ReadHeaderTimeout, well past the third's try.)
	dial := func() (*tls.Conn, error) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		cfg := clientTLS.Clone()
		cfg.ServerName = "127.0.0.1"
		tc := tls.Client(c, cfg)
		c.SetDeadline(time.Now().Add(time.Second))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		c.SetDeadline(time.Time{})
		return tc, nil
	}
	a, err := dial()
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	defer a.Close()
	b, err := dial()
	if err != nil {
		t.Fatalf("second connection: %v", err)
	}
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatal("a third TLS connection was served above the cap of 2")
	}
	b.Close()
	var c *tls.Conn
	for deadline := time.Now().Add(10 * time.Second); c == nil && time.Now().Before(deadline); {
		c, _ = dial()
	}
	if c == nil {
		t.Fatal("no connection was served after one of the two closed")
	}
	c.Close()
}
