package auth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"path"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// Guard checks every call's credential against the role its procedure
// needs. It is a connect.Interceptor for handlers; give the same Guard to
// every handler of a server.
type Guard struct {
	creds []credential
	needs map[string]Role
}

type credential struct {
	digest [sha256.Size]byte
	role   Role
}

var _ connect.Interceptor = (*Guard)(nil)

// NewGuard returns the guard for a node whose admin token is admin (empty:
// no caller is admin) and whose further credentials are tokens. With
// requireTokens false (no --auth-tokens) only administration needs a
// token; with it true the lock API needs a client token and reads a read
// token.
func NewGuard(admin string, tokens []Credential, requireTokens bool) *Guard {
	g := &Guard{needs: Needs(requireTokens)}
	if admin != "" {
		g.creds = append(g.creds, credential{digest(admin), Admin})
	}
	for _, c := range tokens {
		g.creds = append(g.creds, credential{digest(c.Token), c.Role})
	}
	return g
}

// MetricsPath is where the API port serves Prometheus metrics. They say no
// more than Status does, so they need the role Status needs.
const MetricsPath = "/metrics"

// Needs is the role each procedure needs. A procedure missing from it
// needs Admin, so a new RPC is closed until someone decides otherwise.
func Needs(requireTokens bool) map[string]Role {
	lock, read := Anonymous, Anonymous
	if requireTokens {
		lock, read = Client, Read
	}
	return map[string]Role{
		dlmv1connect.LockServiceInitProcedure:           lock,
		dlmv1connect.LockServiceKeepAliveProcedure:      lock,
		dlmv1connect.LockServicePulseProcedure:          lock,
		dlmv1connect.LockServiceLockAcquireProcedure:    lock,
		dlmv1connect.LockServiceLockReleaseProcedure:    lock,
		dlmv1connect.LockServiceAppendFileProcedure:     lock,
		dlmv1connect.LockServiceCloseProcedure:          lock,
		dlmv1connect.LockServiceReadFileProcedure:       read,
		dlmv1connect.LockServiceStatusProcedure:         read,
		dlmv1connect.LockServiceCheckTokenProcedure:     read,
		dlmv1connect.LockServiceListLocksProcedure:      read,
		dlmv1connect.LockServiceLockHistoryProcedure:    read,
		dlmv1connect.ClusterServiceListMembersProcedure: read,
		MetricsPath: read,

		dlmv1connect.ClusterServiceAddMemberProcedure:    Admin,
		dlmv1connect.ClusterServiceRemoveMemberProcedure: Admin,
		dlmv1connect.ClusterServiceSaveSnapshotProcedure: Admin,

		// Load balancers and orchestrators probe health without secrets.
		"/" + grpchealth.HealthV1ServiceName + "/Check": Anonymous,
		"/" + grpchealth.HealthV1ServiceName + "/Watch": Anonymous,
		// Reflection describes the API's schema, which is public (the
		// protos are in the repository), so grpcurl and buf curl can list
		// and describe without a token.
		"/" + grpcreflect.ReflectV1ServiceName + "/ServerReflectionInfo":      Anonymous,
		"/" + grpcreflect.ReflectV1AlphaServiceName + "/ServerReflectionInfo": Anonymous,
	}
}

// WrapUnary checks unary calls.
func (g *Guard) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if !req.Spec().IsClient {
			if err := g.Check(req.Spec().Procedure, req.Header()); err != nil {
				return nil, err
			}
		}
		return next(ctx, req)
	}
}

// WrapStreamingClient leaves client streams alone.
func (g *Guard) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler checks streaming calls before the handler runs.
func (g *Guard) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := g.Check(conn.Spec().Procedure, conn.RequestHeader()); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// Check returns nil when the request headers h carry a credential whose
// role may call procedure, else an Unauthenticated (no or unknown token)
// or PermissionDenied (a lower role) error.
func (g *Guard) Check(procedure string, h http.Header) error {
	need, ok := g.needs[procedure]
	if !ok {
		need = Admin
	}
	if need == Anonymous {
		// A token is not checked where none is needed: a CLI that sends
		// the local data folder's token to another cluster still reads.
		return nil
	}
	method := path.Base(procedure)
	tok, given := bearer(h)
	if !given {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("%s needs a token with the %s role: send \"Authorization: Bearer TOKEN\" (the admin token is in the server's DATA/%s)", method, need, AdminTokenFile))
	}
	role := g.role(tok)
	if role == Anonymous {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("%s: the token is not one of this server's (the admin token is in the server's DATA/%s; other tokens in its --auth-tokens file)", method, AdminTokenFile))
	}
	if role < need {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s needs the %s role; this token has the %s role", method, need, role))
	}
	return nil
}

// role is the highest role of a credential matching tok, or Anonymous.
// Every credential is compared, in constant time, so the time taken says
// nothing about which one (if any) matched.
func (g *Guard) role(tok string) Role {
	d := digest(tok)
	best := Anonymous
	for _, c := range g.creds {
		if equal(c.digest, d) && c.role > best {
			best = c.role
		}
	}
	return best
}

// bearer reads the token of an "Authorization: Bearer TOKEN" header.
func bearer(h http.Header) (string, bool) {
	v := h.Get("Authorization")
	if v == "" {
		return "", false
	}
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true // given, but not a token: an unknown one
	}
	return strings.TrimSpace(tok), true
}

// Bearer is the client side: an interceptor that sends tok as
// "Authorization: Bearer tok" on every call (gRPC metadata authorization).
// An empty tok sends nothing.
func Bearer(tok string) connect.Interceptor { return bearerInterceptor(tok) }

type bearerInterceptor string

func (b bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient && b != "" {
			req.Header().Set("Authorization", "Bearer "+string(b))
		}
		return next(ctx, req)
	}
}

func (b bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if b != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		}
		return conn
	}
}

func (b bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
