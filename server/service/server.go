package service

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// ServerLimits bound what one client can hold of a server: time to send the
// headers and the body, time a connection may sit idle, streams per HTTP/2
// connection and connections in all. Zero fields take the defaults below.
type ServerLimits struct {
	// ReadHeaderTimeout bounds reading a request's headers (10s).
	ReadHeaderTimeout time.Duration
	// BodyTimeout bounds reading a request's body (30s). It is set per
	// request and lifted once the body is read, so a long poll or a server
	// stream that follows is not cut short, as http.Server.ReadTimeout
	// would cut it.
	BodyTimeout time.Duration
	// IdleTimeout closes a keep-alive or HTTP/2 connection with no request
	// in flight after this long (2m).
	IdleTimeout time.Duration
	// MaxConcurrentStreams bounds requests in flight on one HTTP/2
	// connection (250).
	MaxConcurrentStreams int
	// MaxConnections bounds open connections (10000); the ones above it wait
	// in the listen backlog until one closes.
	MaxConnections int
}

func (l ServerLimits) withDefaults() ServerLimits {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&l.ReadHeaderTimeout, 10*time.Second)
	set(&l.BodyTimeout, 30*time.Second)
	set(&l.IdleTimeout, 2*time.Minute)
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = 250
	}
	if l.MaxConnections == 0 {
		l.MaxConnections = 10000
	}
	return l
}

// NewServer is the one place where dlm builds its HTTP server: h within the
// limits. The caller stops it with HTTP.Shutdown or HTTP.Close.
func NewServer(h http.Handler, l ServerLimits) *Server {
	l = l.withDefaults()
	return &Server{
		HTTP: &http.Server{
			Handler:           bodyDeadline(h, l.BodyTimeout),
			Protocols:         Protocols(),
			ReadHeaderTimeout: l.ReadHeaderTimeout,
			IdleTimeout:       l.IdleTimeout,
			HTTP2: &http.HTTP2Config{
				MaxConcurrentStreams: l.MaxConcurrentStreams,
				// A peer that stops answering pings is gone: free its
				// connection rather than wait for TCP to notice.
				SendPingTimeout: l.IdleTimeout,
				PingTimeout:     15 * time.Second,
			},
		},
		limits: l,
	}
}

// Server is dlm's HTTP server with its connection cap.
type Server struct {
	HTTP   *http.Server
	limits ServerLimits
}

// Serve accepts on ln, at most MaxConnections at a time.
func (s *Server) Serve(ln net.Listener) error {
	return s.HTTP.Serve(LimitListener(ln, s.limits.MaxConnections))
}

// ServeTLS accepts TLS connections on ln, at most MaxConnections at a time,
// and serves HTTP/2 (negotiated by ALPN) and HTTP/1.1 on them. cfg holds the
// certificate and, for mutual TLS, the client CAs. The handshake must
// finish within ReadHeaderTimeout.
func (s *Server) ServeTLS(ln net.Listener, cfg *tls.Config) error {
	s.HTTP.TLSConfig = cfg
	return s.HTTP.ServeTLS(LimitListener(ln, s.limits.MaxConnections), "", "")
}

// bodyDeadline gives each request BodyTimeout to deliver its body, then lifts
// the deadline so the handler may take as long as it needs to answer.
// A Pulse stream's body never ends by design: it is exempt, and a peer that
// vanished is found by the connection's pings instead.
func bodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && r.URL.Path != dlmv1connect.LockServicePulseProcedure {
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(d)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		h.ServeHTTP(w, r)
	})
}

type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	lifted bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.lifted {
		b.lifted = true
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// LimitListener accepts at most n connections at a time: Accept waits for a
// connection to close before taking the next one from the backlog, so a
// flood of idle connections cannot exhaust the process's file descriptors.
func LimitListener(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
