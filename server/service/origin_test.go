package service_test

import (
	"context"
	"github.com/dlm/dlm/server/auth"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
	"github.com/dlm/dlm/server/service"
)

const foreignOrigin = "http://evil.example:8080"

// serveWith serves srv's node again on a second listener through
// service.Handler with cfg, and returns that server's base URL.
func serveWith(t *testing.T, srv *servertest.Server, cfg service.HandlerConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Guard == nil {
		cfg.Guard = auth.NewGuard(servertest.AdminToken, nil, false)
	}
	s := service.NewServer(service.Handler(service.New(srv.Node), service.NewCluster(srv.Node), nil, cfg), service.ServerLimits{})
	go s.Serve(ln)
	t.Cleanup(func() { s.HTTP.Close() })
	return "http://" + ln.Addr().String()
}

type answer struct {
	status int
	header http.Header
	body   string
}

// send makes one HTTP/1.1 request, as a browser's fetch would, with the
// given headers; body "" sends none.
func send(t *testing.T, method, url, body string, header map[string]string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return answer{res.StatusCode, res.Header, string(b)}
}

// preflight asks as a browser does (it sends the header names sorted and
// lowercase).
func preflight(t *testing.T, url, origin string) answer {
	t.Helper()
	return send(t, http.MethodOptions, url, "", map[string]string{
		"Origin":                         origin,
		"Access-Control-Request-Method":  "POST",
		"Access-Control-Request-Headers": "connect-protocol-version,content-type",
	})
}

func postJSON(t *testing.T, url, origin, body string) answer {
	t.Helper()
	h := map[string]string{"Content-Type": "application/json"}
	if origin != "" {
		h["Origin"] = origin
	}
	return send(t, http.MethodPost, url, body, h)
}

func assertNoCORS(t *testing.T, what string, a answer) {
	t.Helper()
	for _, k := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Allow-Credentials"} {
		if v := a.header.Get(k); v != "" {
			t.Errorf("%s: answered %s: %q (status %d)", what, k, v, a.status)
		}
	}
}

func memberCount(t *testing.T, srv *servertest.Server) int {
	t.Helper()
	ms, err := srv.Node.Members()
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

// A page of any origin must not reach the API: not through a preflight,
// and not by a call the browser sends without one (the change would be made
// even though the page cannot read the answer).
func TestForeignOriginRefused(t *testing.T) {
	srv := servertest.Start(t, nil)
	url := serveWith(t, srv, service.HandlerConfig{})
	remove := url + "/dlm.v1.ClusterService/RemoveMember"
	add := url + "/dlm.v1.ClusterService/AddMember"
	initURL := url + "/dlm.v1.LockService/Init"

	t.Run("preflight", func(t *testing.T) {
		for _, u := range []string{remove, add, initURL, url + "/dlm.v1.LockService/Status"} {
			a := preflight(t, u, foreignOrigin)
			assertNoCORS(t, u, a)
			if a.status < 400 {
				t.Errorf("preflight %s: status %d, want a refusal", u, a.status)
			}
		}
	})

	t.Run("membership change", func(t *testing.T) {
		before := memberCount(t, srv)
		a := postJSON(t, add, foreignOrigin, `{"id":"evil1","raftAddress":"127.0.0.1:1","voter":false}`)
		if a.status != http.StatusForbidden {
			t.Errorf("AddMember from %s: status %d %q, want 403", foreignOrigin, a.status, a.body)
		}
		assertNoCORS(t, "AddMember", a)
		a = postJSON(t, remove, foreignOrigin, `{"id":"node1"}`)
		if a.status != http.StatusForbidden {
			t.Errorf("RemoveMember from %s: status %d %q, want 403", foreignOrigin, a.status, a.body)
		}
		if after := memberCount(t, srv); after != before {
			t.Fatalf("members %d → %d after calls from a foreign origin", before, after)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Node.AwaitLeader(ctx); err != nil {
			t.Fatalf("the node lost its leadership: %v", err)
		}
	})

	t.Run("lock service", func(t *testing.T) {
		a := postJSON(t, initURL, foreignOrigin, `{"name":"page"}`)
		if a.status != http.StatusForbidden {
			t.Errorf("Init from %s: status %d %q, want 403", foreignOrigin, a.status, a.body)
		}
		assertNoCORS(t, "Init", a)
		st, err := srv.Node.Status(context.Background(), node.StatusQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(st.Sessions); n != 0 {
			t.Fatalf("%d sessions after an Init from a foreign origin", n)
		}
	})

	t.Run("simple requests", func(t *testing.T) {
		// What a page can send without a preflight: a form-like POST, and
		// a Connect GET (no Origin header, but Sec-Fetch-Site says it).
		a := send(t, http.MethodPost, add, `{"id":"evil2","raftAddress":"127.0.0.1:1"}`, map[string]string{"Origin": foreignOrigin, "Content-Type": "text/plain"})
		if a.status != http.StatusForbidden {
			t.Errorf("text/plain AddMember: status %d %q, want 403", a.status, a.body)
		}
		for _, u := range []string{url + "/dlm.v1.ClusterService/ListMembers", url + "/dlm.v1.LockService/Status"} {
			a = send(t, http.MethodGet, u+"?encoding=json&message=%7B%7D", "", map[string]string{"Sec-Fetch-Site": "cross-site"})
			if a.status != http.StatusForbidden {
				t.Errorf("cross-site GET %s: status %d, want 403", u, a.status)
			}
		}
	})

	t.Run("a member's pages", func(t *testing.T) {
		// srv.URL is the node's client URL, a member of the cluster: the
		// dashboard it serves may poll this listener too, but not its
		// ClusterService.
		a := postJSON(t, url+"/dlm.v1.LockService/Status", srv.URL, `{}`)
		if a.status != http.StatusOK || a.header.Get("Access-Control-Allow-Origin") != srv.URL {
			t.Errorf("Status from a member's origin: status %d, Allow-Origin %q", a.status, a.header.Get("Access-Control-Allow-Origin"))
		}
		a = postJSON(t, url+"/dlm.v1.ClusterService/ListMembers", srv.URL, `{}`)
		if a.status != http.StatusForbidden {
			t.Errorf("ListMembers from a member's origin: status %d, want 403", a.status)
		}
	})

	t.Run("programs and the server's own pages", func(t *testing.T) {
		// No Origin: a command-line tool or a program.
		if a := postJSON(t, url+"/dlm.v1.ClusterService/ListMembers", "", `{}`); a.status != http.StatusOK {
			t.Errorf("ListMembers without Origin: status %d %q", a.status, a.body)
		}
		// The dashboard served by this node calls it from its own origin.
		if a := postJSON(t, url+"/dlm.v1.ClusterService/ListMembers", url, `{}`); a.status != http.StatusOK {
			t.Errorf("ListMembers from the server's own origin: status %d %q", a.status, a.body)
		}
		if a := postJSON(t, url+"/dlm.v1.LockService/Status", url, `{}`); a.status != http.StatusOK {
			t.Errorf("Status from the server's own origin: status %d %q", a.status, a.body)
		}
		a := send(t, http.MethodGet, url+"/dlm.v1.LockService/Status?encoding=json&message=%7B%7D", "", map[string]string{"Sec-Fetch-Site": "same-origin"})
		if a.status != http.StatusOK {
			t.Errorf("same-origin GET Status: status %d %q", a.status, a.body)
		}
	})
}

// An allowed origin's pages may use the lock API, with CORS headers, but
// still never the ClusterService.
func TestAllowedOrigin(t *testing.T) {
	srv := servertest.Start(t, nil)
	const app = "http://app.example:5173"
	url := serveWith(t, srv, service.HandlerConfig{CORSOrigins: []string{app}})

	a := preflight(t, url+"/dlm.v1.LockService/Status", app)
	if a.status >= 300 || a.header.Get("Access-Control-Allow-Origin") != app {
		t.Fatalf("preflight of Status from %s: status %d, Allow-Origin %q", app, a.status, a.header.Get("Access-Control-Allow-Origin"))
	}
	if m := a.header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") {
		t.Errorf("Allow-Methods %q", m)
	}
	a = send(t, http.MethodOptions, url+"/dlm.v1.LockService/Status", "", map[string]string{
		"Origin": app, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type",
	})
	if h := strings.ToLower(a.header.Get("Access-Control-Allow-Headers")); !strings.Contains(h, "authorization") {
		t.Errorf("a token cannot be sent: Allow-Headers %q", h)
	}
	a = postJSON(t, url+"/dlm.v1.LockService/Status", app, `{}`)
	if a.status != http.StatusOK || a.header.Get("Access-Control-Allow-Origin") != app {
		t.Fatalf("Status from %s: status %d, Allow-Origin %q", app, a.status, a.header.Get("Access-Control-Allow-Origin"))
	}
	if !strings.Contains(a.header.Get("Vary"), "Origin") {
		t.Errorf("Vary %q: caches must key the answer by Origin", a.header.Get("Vary"))
	}

	before := memberCount(t, srv)
	for _, m := range []string{"RemoveMember", "AddMember", "ListMembers", "SaveSnapshot"} {
		a := preflight(t, url+"/dlm.v1.ClusterService/"+m, app)
		assertNoCORS(t, "preflight "+m, a)
		if a.status < 400 {
			t.Errorf("preflight %s from an allowed origin: status %d, want a refusal", m, a.status)
		}
	}
	a = postJSON(t, url+"/dlm.v1.ClusterService/AddMember", app, `{"id":"evil1","raftAddress":"127.0.0.1:1","voter":false}`)
	if a.status != http.StatusForbidden {
		t.Errorf("AddMember from an allowed origin: status %d %q, want 403", a.status, a.body)
	}
	assertNoCORS(t, "AddMember", a)
	if after := memberCount(t, srv); after != before {
		t.Fatalf("members %d → %d after AddMember from an allowed origin", before, after)
	}

	// Another origin is still refused.
	if a := postJSON(t, url+"/dlm.v1.LockService/Status", foreignOrigin, `{}`); a.status != http.StatusForbidden {
		t.Errorf("Status from %s: status %d, want 403", foreignOrigin, a.status)
	}
}

func TestParseCORSOrigins(t *testing.T) {
	got, err := service.ParseCORSOrigins([]string{"https://App.Example.com", "http://127.0.0.1:5173, http://localhost:80", "https://app.example.com:443", "https://[::1]:8443"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"https://app.example.com", "http://127.0.0.1:5173", "http://localhost", "https://[::1]:8443"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, bad := range []string{"*", "null", "app.example.com", "ftp://app.example.com", "https://app.example.com/", "https://app.example.com/x", "https://app.example.com?x", "https://u@app.example.com", "https://*.example.com", "https://app.example.com:", "http://", "https://app.example.com#"} {
		if _, err := service.ParseCORSOrigins([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
