package main

import (
	"net/http"
	"strings"
	"testing"
)

// dlm serve --cors-origin: repeatable and comma-separated; the listed
// origins' pages may call the lock API, no other origin's, and "*" is
// refused at the start.
func TestServeCORSOrigin(t *testing.T) {
	_, _, err := cliRun(t, "", "serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--cors-origin", "*")
	if err == nil || !strings.Contains(err.Error(), "--cors-origin") {
		t.Fatalf("serve --cors-origin '*': %v, want a refusal", err)
	}
	_, _, err = cliRun(t, "", "serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--cors-origin", "https://app.example/path")
	if err == nil {
		t.Fatal("serve --cors-origin with a path was accepted")
	}

	p := startServer(t, "127.0.0.1:0", t.TempDir(), "--cors-origin", "http://a.example, http://b.example:8080", "--cors-origin", "https://C.example:443")
	for origin, want := range map[string]bool{
		"http://a.example": true, "http://b.example:8080": true, "https://c.example": true,
		"http://b.example": false, "https://a.example": false, "http://d.example": false,
	} {
		req, _ := http.NewRequest(http.MethodOptions, p.URL()+"/dlm.v1.LockService/Status", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if got := res.Header.Get("Access-Control-Allow-Origin"); (got == origin) != want {
			t.Errorf("preflight from %s: Allow-Origin %q, status %d (allowed: %v)", origin, got, res.StatusCode, want)
		}
	}
}
