package service_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/servertest"
)

// postRaw sends body to AppendFile as the named protocol would, optionally
// gzip-compressed, and returns the Connect code the server answered with.
func postRaw(t *testing.T, url, protocol string, body []byte, gzipped bool) string {
	t.Helper()
	var req *http.Request
	switch protocol {
	case "connect":
		req, _ = http.NewRequest(http.MethodPost, url+"/dlm.v1.LockService/AppendFile", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/proto")
		if gzipped {
			req.Header.Set("Content-Encoding", "gzip")
		}
	case "grpc":
		env := make([]byte, 5, 5+len(body))
		if gzipped {
			env[0] = 1
		}
		binary.BigEndian.PutUint32(env[1:], uint32(len(body)))
		req, _ = http.NewRequest(http.MethodPost, url+"/dlm.v1.LockService/AppendFile", bytes.NewReader(append(env, body...)))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("TE", "trailers")
		if gzipped {
			req.Header.Set("Grpc-Encoding", "gzip")
		}
	}
	res, err := servertest.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s post: %v", protocol, err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if protocol == "grpc" {
		status := res.Header.Get("Grpc-Status")
		if status == "" {
			status = res.Trailer.Get("Grpc-Status")
		}
		switch status {
		case "0":
			return "ok"
		case "8":
			return connect.CodeResourceExhausted.String()
		case "":
			return "no grpc-status"
		}
		code := 0
		for _, c := range status {
			code = code*10 + int(c-'0')
		}
		return connect.Code(code).String()
	}
	if res.StatusCode == http.StatusOK {
		return "ok"
	}
	var e struct{ Code string }
	_ = json.Unmarshal(out, &e)
	return e.Code
}

func gzipBytes(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestOversizedBodiesRefused sends bodies past the read limit, plain and as
// a gzip bomb (about 100 KB that expand to 100 MiB), through Connect and
// gRPC: each must be refused with ResourceExhausted without the server
// buffering it.
func TestOversizedBodiesRefused(t *testing.T) {
	srv := servertest.Start(t, nil)
	plain := bytes.Repeat([]byte{0}, 4<<20)
	// Concatenated gzip members are one valid gzip stream: 100 members of
	// 1 MiB of zeros each.
	bomb := bytes.Repeat(gzipBytes(t, make([]byte, 1<<20)), 100)
	if len(bomb) > 200<<10 {
		t.Fatalf("the bomb is %d bytes, want about 100 KB", len(bomb))
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			if got := postRaw(t, srv.URL, p.name, plain, false); got != connect.CodeResourceExhausted.String() {
				t.Fatalf("a 4 MiB body answered %q, want resource_exhausted", got)
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			const sends = 2
			for range sends {
				if got := postRaw(t, srv.URL, p.name, bomb, true); got != connect.CodeResourceExhausted.String() {
					t.Fatalf("a gzip bomb answered %q, want resource_exhausted", got)
				}
			}
			runtime.ReadMemStats(&after)
			// The server shares this process: had it expanded the bombs, it
			// would have allocated 200 MiB.
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 48<<20 {
				t.Fatalf("%d gzip bombs allocated %d MiB in the process, want a few", sends, grown>>20)
			}
		})
	}
}

// TestLargestLegalAppendPasses checks that the limit sits above the largest
// append the node takes, compressed or not.
func TestLargestLegalAppendPasses(t *testing.T) {
	srv := servertest.Start(t, nil)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := newClient(srv, append([]connect.ClientOption{connect.WithSendGzip()}, p.opts...))
			s := open(t, c, 10000)
			tok := s.mustAcquire()
			data := strings.Repeat("x", 1<<20)
			if _, err := s.append(tok, "file_"+map[string]string{"connect": "1", "grpc": "2"}[p.name], data); err != nil {
				t.Fatalf("an append of the largest legal size failed: %v", err)
			}
			if err := s.release(tok); err != nil {
				t.Fatalf("release: %v", err)
			}
			if got := read(t, c, "file_"+map[string]string{"connect": "1", "grpc": "2"}[p.name]); len(got) != len(data) {
				t.Fatalf("read %d bytes back, want %d", len(got), len(data))
			}
			_, err := c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{}))
			if err != nil {
				t.Fatalf("status: %v", err)
			}
		})
	}
}
