package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bufBinary is the buf CLI pinned in package.json; the test command runs
// npm ci first.
func bufBinary(t *testing.T) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("..", "..", "node_modules", ".bin", "buf"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("buf CLI not installed (run npm ci, as the test command does): %v", err)
	}
	return path
}

// TestBufCurlThroughReflection calls the real server the way a person with
// only buf curl would: the gRPC protocol over HTTP/2 cleartext, schemas from
// server reflection, a whole critical section, then health checking.
func TestBufCurlThroughReflection(t *testing.T) {
	buf := bufBinary(t)
	srv := startServer(t, "127.0.0.1:0", t.TempDir())
	call := func(method, body string) map[string]any {
		t.Helper()
		cmd := exec.Command(buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect",
			"--data", body, srv.URL()+"/"+method)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("buf curl %s: %v\n%s", method, err, out)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("buf curl %s: %v\n%s", method, err, out)
		}
		return m
	}
	ses := call("dlm.v1.LockService/Init", `{"name": "buf curl"}`)
	id, secret := ses["clientId"].(string), ses["secret"].(string)
	who := `"clientId": "` + id + `", "secret": "` + secret + `"`
	grant := call("dlm.v1.LockService/LockAcquire", `{`+who+`, "seq": 1}`)
	if grant["granted"] != true {
		t.Fatalf("LockAcquire = %v", grant)
	}
	token := grant["token"].(string)
	data := base64.StdEncoding.EncodeToString([]byte("hello from buf curl\n"))
	call("dlm.v1.LockService/AppendFile", `{`+who+`, "seq": 2, "token": "`+token+`", "file": "file_3", "data": "`+data+`"}`)
	call("dlm.v1.LockService/LockRelease", `{`+who+`, "seq": 3, "token": "`+token+`"}`)
	read := call("dlm.v1.LockService/ReadFile", `{"file": "file_3"}`)
	got, _ := base64.StdEncoding.DecodeString(read["data"].(string))
	if string(got) != "hello from buf curl\n" {
		t.Fatalf("ReadFile = %q", got)
	}
	if closed := call("dlm.v1.LockService/Close", `{`+who+`, "seq": 4}`); closed["status"] != "disconnected" {
		t.Fatalf("Close = %v", closed)
	}
	if h := call("grpc.health.v1.Health/Check", `{"service": "dlm.v1.LockService"}`); h["status"] != "SERVING" {
		t.Fatalf("health = %v", h)
	}

	// A definite error carries its code and typed reason through gRPC.
	cmd := exec.Command(buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect",
		"--data", `{`+who+`, "seq": 5, "token": "`+token+`", "file": "../etc/passwd", "data": "eA=="}`,
		srv.URL()+"/dlm.v1.LockService/AppendFile")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "invalid_argument") || !strings.Contains(string(out), "dlm.v1.ErrorDetail") {
		t.Fatalf("bad file name through buf curl: %v\n%s", err, out)
	}
}
