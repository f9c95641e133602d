package client

import (
	"crypto/tls"
	"net/http"
	"reflect"
	"strings"
	"sync"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// hub is what the Clients of one process share for one set of servers: the
// HTTP client, so their calls share connections (HTTP/2 carries many calls
// on one), and the Pulse stream that keeps their sessions alive. It lives
// while a Client uses it.
type hub struct {
	key  hubKey
	refs int
	hc   connect.HTTPClient
	// own is the default HTTP client the hub made, whose idle connections
	// close with it.
	own *http.Client
	p   *pulser
}

// hubKey says which Clients may share: same servers, same HTTP client (or
// both the default with the same TLS config), same token and protocol.
type hubKey struct {
	hc    connect.HTTPClient
	tls   *tls.Config
	token string
	grpc  bool
	urls  string
}

var hubs = struct {
	sync.Mutex
	m map[hubKey]*hub
}{m: make(map[hubKey]*hub)}

// joinHub returns the hub for a Client of endpoints with o, making it if
// needed. An HTTP client that cannot be compared gets a hub of its own.
func joinHub(endpoints []string, o options) *hub {
	key := hubKey{hc: o.httpClient, tls: o.tls, token: o.token, grpc: o.grpc, urls: strings.Join(endpoints, ",")}
	shared := o.httpClient == nil || reflect.TypeOf(o.httpClient).Comparable()
	hubs.Lock()
	defer hubs.Unlock()
	if h, ok := hubs.m[key]; ok && shared {
		h.refs++
		return h
	}
	h := &hub{key: key, refs: 1, hc: o.httpClient}
	if h.hc == nil {
		h.own = defaultHTTPClient(o.tls)
		h.hc = h.own
	}
	copts := clientOptions(o)
	eps := newEndpoints(endpoints, func(u string) dlmv1connect.LockServiceClient {
		return dlmv1connect.NewLockServiceClient(h.hc, u, copts...)
	})
	h.p = newPulser(eps, o.logger, o.attemptTimeout)
	if shared {
		hubs.m[key] = h
	}
	return h
}

// leave gives the hub up; the last Client to leave stops its stream.
func (h *hub) leave() {
	hubs.Lock()
	h.refs--
	last := h.refs == 0
	if last && hubs.m[h.key] == h {
		delete(hubs.m, h.key)
	}
	hubs.Unlock()
	if !last {
		return
	}
	h.p.close()
	if h.own != nil {
		h.own.CloseIdleConnections()
	}
}
