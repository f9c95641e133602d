package service

import (
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
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
}

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
	opts = append([]connect.HandlerOption{connect.WithInterceptors(guard)}, withReadMax(svc, opts)...)
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
