package client

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
)

// Option configures a Client.
type Option func(*options)

type options struct {
	lease          time.Duration
	name           string
	httpClient     connect.HTTPClient
	retryBudget    time.Duration
	attemptTimeout time.Duration
	pollWait       time.Duration
	grpc           bool
	logger         *slog.Logger
	keepAlive      bool
	token          string
	tls            *tls.Config
}

func defaultOptions() options {
	return options{
		retryBudget:    30 * time.Second,
		attemptTimeout: 2 * time.Second,
		pollWait:       5 * time.Second,
		keepAlive:      true,
	}
}

// WithLease asks for a session lease of d instead of the server's default
// (the server clamps it to its allowed range). A short lease hands the lock
// on sooner after a holder crashes or stalls; a long one tolerates longer
// pauses (garbage collection, a slow network) without losing the lock.
func WithLease(d time.Duration) Option {
	return func(o *options) { o.lease = d }
}

// WithName labels the session in Status and on the dashboard, so that a
// person can tell which process holds or waits for the lock.
func WithName(name string) Option {
	return func(o *options) { o.name = name }
}

// WithHTTPClient sends the RPCs through hc instead of the default HTTP/2
// cleartext client: to add TLS, a proxy, tracing, or (in tests) a
// faultinject.Transport. hc must speak HTTP/2 for the gRPC protocol.
func WithHTTPClient(hc connect.HTTPClient) Option {
	return func(o *options) { o.httpClient = hc }
}

// WithTLS sets the TLS config of the default HTTP client for https://
// endpoints: the CAs to trust (RootCAs) and, for a server that requires
// mutual TLS, the client certificate. Build it with x509.NewCertPool and
// AppendCertsFromPEM from the server's CA file. http:// endpoints keep using
// HTTP/2 in cleartext. It has no effect with WithHTTPClient.
func WithTLS(c *tls.Config) Option {
	return func(o *options) { o.tls = c }
}

// WithRetryBudget bounds the total time one call keeps retrying lost
// requests and unavailable servers before it fails with ErrUnavailable
// (default 30s). Raise it to ride out a long leader election or a server
// restart; lower it to fail fast in interactive tools. A blocking Acquire
// applies the budget to the time without any answer, not to its wait in the
// queue.
func WithRetryBudget(d time.Duration) Option {
	return func(o *options) { o.retryBudget = d }
}

// WithAttemptTimeout bounds each single attempt of a call (default 2s), so
// that a request lost on a connection that stays open is retried instead of
// waited on forever. It should exceed the server's commit latency.
func WithAttemptTimeout(d time.Duration) Option {
	return func(o *options) { o.attemptTimeout = d }
}

// WithPollWait sets how long one LockAcquire call waits in the queue before
// the server answers "still queued" and the client asks again (default 5s).
// Shorter polls notice a dead server sooner, at the cost of more requests.
func WithPollWait(d time.Duration) Option {
	return func(o *options) { o.pollWait = d }
}

// WithGRPC speaks the gRPC protocol instead of Connect, for instance through
// a proxy that only forwards gRPC.
func WithGRPC() Option {
	return func(o *options) { o.grpc = true }
}

// WithToken sends tok as "Authorization: Bearer tok" (gRPC metadata
// authorization) with every call, on every protocol. A server started with
// --auth-tokens needs a client token (or admin) for sessions and the lock,
// and a read token for reads; one without it needs none. An empty tok sends
// nothing.
func WithToken(tok string) Option {
	return func(o *options) { o.token = tok }
}

// WithLogger reports retries, leader changes, renewed sessions and lost
// locks to l (debug for routine events, warn for lost locks). The default
// discards them.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithoutKeepAlive stops the background keepalive, so the session lives only
// as long as its lease. Tests use it to act out a holder that stalls; a
// program that sets it must call nothing else and let the lease lapse.
func WithoutKeepAlive() Option {
	return func(o *options) { o.keepAlive = false }
}

// defaultHTTPClient speaks HTTP/2 without TLS to http:// URLs (what dlm
// serves, and what gRPC needs) and HTTP/2 over TLS to https:// URLs.
func defaultHTTPClient(tc *tls.Config) *http.Client {
	p := new(http.Protocols)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	if tc != nil {
		tc = tc.Clone()
	}
	return &http.Client{Transport: &http.Transport{
		Protocols:       p,
		TLSClientConfig: tc,
		// A connection that went silent (a server host that vanished
		// without closing it) would otherwise swallow every retry; pings
		// find out and drop it.
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 2 * time.Second,
			PingTimeout:     2 * time.Second,
		},
	}}
}
