package service

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	connectcors "connectrpc.com/cors"
	"github.com/rs/cors"
)

// ParseCORSOrigins checks and normalises the origins given to --cors-origin:
// each entry may hold several, separated by commas. An origin is
// scheme://host[:port] with scheme http or https and nothing after the
// authority, written the way a browser sends it in the Origin header
// (lowercase, without the scheme's default port). "*" is refused: the lock
// API changes state, so every page allowed to call it is named.
func ParseCORSOrigins(values []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, v := range values {
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o == "" {
				continue
			}
			norm, err := parseOrigin(o)
			if err != nil {
				return nil, err
			}
			if !seen[norm] {
				seen[norm] = true
				out = append(out, norm)
			}
		}
	}
	return out, nil
}

func parseOrigin(o string) (string, error) {
	if o == "*" || o == "null" {
		return "", fmt.Errorf("CORS origin %q: name each origin allowed to call the API, such as https://app.example.com", o)
	}
	u, err := url.Parse(o)
	bad := func(why string) error {
		return fmt.Errorf("CORS origin %q: %s; want scheme://host[:port], such as https://app.example.com:8443", o, why)
	}
	switch {
	case err != nil:
		return "", bad("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", bad("the scheme must be http or https")
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return "", bad("no host")
	case u.User != nil:
		return "", bad("an origin has no user info")
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || strings.HasSuffix(o, "#"):
		return "", bad("an origin has no path, query or fragment")
	case strings.Contains(u.Host, "*"):
		return "", bad("wildcards are not allowed")
	}
	host := strings.ToLower(u.Host)
	if p := u.Port(); (u.Scheme == "http" && p == "80") || (u.Scheme == "https" && p == "443") {
		host = strings.TrimSuffix(host, ":"+p)
	} else if strings.HasSuffix(host, ":") {
		return "", bad("empty port")
	}
	return u.Scheme + "://" + host, nil
}

// originPolicy decides which browser pages may call which paths. A browser
// marks every cross-origin call with an Origin header (and, in current
// browsers, Sec-Fetch-Site), including those it sends without a preflight:
// simple POSTs and Connect GETs. So the policy refuses such calls itself
// rather than relying on the browser withholding the answer: a call that
// changes state would already have happened by then.
type originPolicy struct {
	allowed map[string]bool
	// members lists the client URLs of the cluster's members, whose pages
	// (the dashboard served by another node) poll every node and follow
	// the leader; nil for none.
	members func() []string
	cors    *cors.Cors
}

func newOriginPolicy(origins []string, members func() []string) *originPolicy {
	p := &originPolicy{allowed: map[string]bool{}, members: members}
	for _, o := range origins {
		norm, err := parseOrigin(o)
		if err != nil {
			// The command line validates with ParseCORSOrigins; a caller
			// that did not has a bug, and serving anyway would allow less or
			// more than it meant.
			panic("service: " + err.Error())
		}
		p.allowed[norm] = true
	}
	p.cors = cors.New(cors.Options{
		AllowOriginFunc: p.allows,
		AllowedMethods:  connectcors.AllowedMethods(),
		// Authorization carries the token of an authenticated deployment.
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization"),
		ExposedHeaders: connectcors.ExposedHeaders(),
		MaxAge:         7200,
	})
	return p
}

// public serves h to the server's own pages and to the allowed origins, with
// CORS headers for the latter.
func (p *originPolicy) public(h http.Handler) http.Handler {
	withCORS := p.cors.Handler(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := p.check(r, true); err != nil {
			refuse(w, err)
			return
		}
		withCORS.ServeHTTP(w, r)
	})
}

// sameOriginOnly serves h to callers that are not browser pages, and to the
// server's own pages (the dashboard); it never answers a preflight, so no
// other page may call it whatever the allowlist says.
func (p *originPolicy) sameOriginOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := p.check(r, false); err != nil {
			refuse(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (p *originPolicy) check(r *http.Request, allowList bool) error {
	origins := r.Header.Values("Origin")
	if len(origins) > 1 {
		return errors.New("more than one Origin header")
	}
	if len(origins) == 0 {
		// A browser omits Origin only on GET and HEAD; it still says where
		// the call came from in Sec-Fetch-Site. Command-line tools and
		// other programs send neither.
		switch r.Header.Get("Sec-Fetch-Site") {
		case "cross-site", "same-site":
			return errors.New("cross-origin request without an Origin header")
		}
		return nil
	}
	origin := origins[0]
	if sameOrigin(r, origin) || (allowList && p.allows(origin)) {
		return nil
	}
	if allowList {
		return fmt.Errorf("origin %q is not allowed to call this server (dlm serve --cors-origin)", origin)
	}
	return fmt.Errorf("origin %q: this service answers only the server's own pages", origin)
}

// allows reports whether pages of origin may call the public services: it
// is in the allowlist, or it is a member's own (only asked when it is not in
// the list, so only cross-origin calls pay for reading the membership).
func (p *originPolicy) allows(origin string) bool {
	if p.allowed[origin] {
		return true
	}
	if p.members == nil {
		return false
	}
	for _, u := range p.members() {
		if o, err := parseOrigin(strings.TrimRight(u, "/")); err == nil && o == origin {
			return true
		}
	}
	return false
}

// sameOrigin reports whether origin is the one the request was sent to, as
// the dashboard served by this server is. It compares the Origin's host and
// port with the Host header; the scheme must be https when the connection is
// TLS (a plain connection may come through a proxy that ended TLS).
func sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	if r.TLS != nil && u.Scheme != "https" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host) || strings.EqualFold(u.Host, hostWithoutDefaultPort(r.Host, u.Scheme))
}

func hostWithoutDefaultPort(host, scheme string) string {
	switch {
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		return strings.TrimSuffix(host, ":80")
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		return strings.TrimSuffix(host, ":443")
	}
	return host
}

// refuse answers 403 without any CORS header: the page that sent the call
// cannot read the answer, and a Connect, gRPC or gRPC-Web client maps it to
// PermissionDenied.
func refuse(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprintln(w, "cross-origin request refused: "+err.Error())
}
