package service

import (
	"net/http"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/rs/cors"

	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
)

// Handler serves the LockService and the ClusterService (Connect, gRPC and
// gRPC-Web), gRPC server
// reflection (v1 and v1alpha) and gRPC health checking, behind CORS so a page
// from another origin can call it. extra, when not nil, serves every other
// path (the dashboard). guard checks every call's credential; nil is a
// guard without any credential, which refuses every administrative call.
func Handler(svc *Service, cluster *Cluster, guard *auth.Guard, extra http.Handler, opts ...connect.HandlerOption) http.Handler {
	if guard == nil {
		guard = auth.NewGuard("", nil, false)
	}
	// The guard comes first, so that nothing runs for a refused call.
	opts = append([]connect.HandlerOption{connect.WithInterceptors(guard)}, withReadMax(svc, opts)...)
	mux := http.NewServeMux()
	mux.Handle(dlmv1connect.NewLockServiceHandler(svc, opts...))
	mux.Handle(dlmv1connect.NewClusterServiceHandler(cluster, opts...))
	// Reflection also describes the health service, so grpcurl and buf curl
	// can call it without local protos.
	reflector := grpcreflect.NewStaticReflector(dlmv1connect.LockServiceName, dlmv1connect.ClusterServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, opts...))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, opts...))
	mux.Handle(grpchealth.NewHandler(healthChecker(svc), opts...))
	if extra != nil {
		mux.Handle("/", extra)
	}
	return cors.New(cors.Options{
		AllowedOrigins: []string{"*"},
		AllowedMethods: connectcors.AllowedMethods(),
		AllowedHeaders: connectcors.AllowedHeaders(),
		ExposedHeaders: connectcors.ExposedHeaders(),
		MaxAge:         7200,
	}).Handler(mux)
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
