package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// get fetches url and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return res.StatusCode, string(b)
}

// --debug-listen serves net/http/pprof on its own loopback listener, not on
// the API port (which serves /metrics); it refuses an address that is not
// loopback before anything starts.
func TestServeDebugListen(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0", "nonsense"} {
		_, _, err := cliRun(t, "", "serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--debug-listen", addr)
		if err == nil || !strings.Contains(err.Error(), "--debug-listen") {
			t.Errorf("serve --debug-listen %s: %v; want a refusal naming --debug-listen", addr, err)
		}
		if addr == "0.0.0.0:0" && (err == nil || !strings.Contains(err.Error(), "loopback")) {
			t.Errorf("serve --debug-listen 0.0.0.0:0: %v; want it to say loopback only", err)
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"}, strings.NewReader(""), pw, io.Discard)
		pw.Close()
	}()
	defer func() {
		cancel()
		go io.Copy(io.Discard, pr) // let serve finish its last lines
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop within 30s")
		}
	}()
	var api, debug string
	out := lines(pr)
	for deadline := time.After(30 * time.Second); api == "" || debug == ""; {
		select {
		case l, ok := <-out:
			if !ok {
				t.Fatal("serve ended before saying where it serves")
			}
			if u, found := strings.CutPrefix(l, "dlm serving on "); found {
				api, _, _ = strings.Cut(u, " ")
			}
			if u, found := strings.CutPrefix(l, "profiles on "); found {
				debug = strings.TrimSuffix(u, "/debug/pprof/")
			}
		case <-deadline:
			t.Fatal("serve did not print its addresses within 30s")
		}
	}
	if !strings.HasPrefix(debug, "http://127.0.0.1:") || debug == api {
		t.Fatalf("profiles on %q, API on %q: want a loopback listener of its own", debug, api)
	}
	if code, body := get(t, debug+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("GET /debug/pprof/ on --debug-listen: %d %.200q", code, body)
	}
	if code, body := get(t, debug+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Errorf("GET a goroutine profile: %d %.200q", code, body)
	}
	if _, body := get(t, api+"/debug/pprof/goroutine?debug=1"); strings.Contains(body, "goroutine profile") {
		t.Error("the API port serves profiles too")
	}
	pollUntil(t, 30*time.Second, "/metrics on the API port shows a leader", func() (bool, string) {
		code, body := get(t, api+"/metrics")
		return code == http.StatusOK && strings.Contains(body, "dlm_raft_state{state=\"leader\"} 1"), body
	})
}
