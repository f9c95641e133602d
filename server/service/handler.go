package service

import (
	"errors"
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/metrics"
)

// HandlerConfig is how Handler serves beyond the services themselves. Its
// zero value is the safe default: browser pages of other origins may call
// nothing.
type HandlerConfig struct {
	// CORSOrigins are the origins (scheme://host[:port], see
	// ParseCORSOrigins) whose pages may call the LockService, health and
	// reflection, besides the cluster's members' own (each node's dashboard
	// polls every node and follows the leader). The ClusterService answers
	// only the server's own pages, whatever this says.
	CORSOrigins []string
	// Guard checks every call's credential. nil is a guard without any
	// credential, which refuses every administrative call.
	Guard *auth.Guard
	// Metrics, when set, are served at /metrics (to the read role when
	// tokens are required, as Status) and time decoding and encoding.
	Metrics *metrics.Metrics
}

// CompressMinBytes is the smallest message that is compressed when the peer
// accepts gzip. Nearly every lock call's message is under 100 bytes: gzip
// cannot shrink it (its own header and trailer are 18 bytes) and resetting
// a compressor costs more server CPU than the rest of the call (profiles in
// docs/BENCHMARKS-calls.md). From 1 KiB on, file contents and snapshots,
// compression can save a packet or more.
const CompressMinBytes = 1024

// Handler serves the LockService and the ClusterService (Connect, gRPC and
// gRPC-Web), gRPC server reflection (v1 and v1alpha) and gRPC health
// checking. Pages of the origins in cfg may call all but the ClusterService
// across origins; calls from any other page are refused before they run.
// extra, when not nil, serves every other path (the dashboard).
// cfg.Guard checks every call's credential first, so that nothing runs for a
// refused call.
func Handler(svc *Service, cluster *Cluster, extra http.Handler, cfg HandlerConfig, opts ...connect.HandlerOption) http.Handler {
	guard := cfg.Guard
	if guard == nil {
		guard = auth.NewGuard("", nil, false)
	}
	opts = append([]connect.HandlerOption{connect.WithInterceptors(guard), connect.WithCompressMinBytes(CompressMinBytes)}, withReadMax(svc, cfg.Metrics, opts)...)
	var members func() []string
	if cluster != nil {
		members = cluster.clientURLs
	}
	policy := newOriginPolicy(cfg.CORSOrigins, members)
	mux := http.NewServeMux()
	public := func(path string, h http.Handler) { mux.Handle(path, policy.public(h)) }
	public(dlmv1connect.NewLockServiceHandler(svc, opts...))
	// Membership changes and snapshots are for operators: no page of
	// another origin may call them, allowed or not.
	path, h := dlmv1connect.NewClusterServiceHandler(cluster, opts...)
	mux.Handle(path, policy.sameOriginOnly(h))
	// Reflection also describes the health service, so grpcurl and buf curl
	// can call it without local protos.
	reflector := grpcreflect.NewStaticReflector(dlmv1connect.LockServiceName, dlmv1connect.ClusterServiceName, grpchealth.HealthV1ServiceName)
	public(grpcreflect.NewHandlerV1(reflector, opts...))
	public(grpcreflect.NewHandlerV1Alpha(reflector, opts...))
	public(grpchealth.NewHandler(healthChecker(svc), opts...))
	if cfg.Metrics != nil {
		mux.Handle(auth.MetricsPath, scrape(guard, cfg.Metrics.Handler()))
	}
	if extra != nil {
		// The dashboard's files: a link from another site must open it, and
		// it changes nothing.
		mux.Handle("/", extra)
	}
	return mux
}

// Protocols are the server's: HTTP/1.1 for Connect and gRPC-Web from
// browsers, and HTTP/2 for gRPC, in cleartext or over TLS.
func Protocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

// scrape lets a scraper with the role /metrics needs read the metrics.
// Prometheus sends a credential as "Authorization: Bearer TOKEN"
// (authorization.credentials_file in its scrape config).
func scrape(guard *auth.Guard, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "metrics: use GET", http.StatusMethodNotAllowed)
			return
		}
		if err := guard.Check(auth.MetricsPath, r.Header); err != nil {
			status := http.StatusForbidden
			if connect.CodeOf(err) == connect.CodeUnauthenticated {
				status = http.StatusUnauthorized
				w.Header().Set("WWW-Authenticate", `Bearer realm="dlm"`)
			}
			http.Error(w, connect.CodeOf(err).String()+": "+errMessage(err), status)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func errMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
