package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
)

// Scenarios B1 and B2 with a real client process stalled by SIGSTOP: its
// keepalives stop for real, its lease runs out on the server, the lock
// passes on, and when SIGCONT wakes it every call under the old grant fails
// with LOCK_EXPIRED.
func TestStalledClientProcess(t *testing.T) {
	for _, tc := range []struct {
		name        string
		writeBefore bool
	}{
		{"B1 stall before writing", false},
		{"B2 stall after writing", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, "127.0.0.1:0", t.TempDir())
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			c1 := startPeer(t, srv.URL(), time.Second)
			c1.must("acquire")
			if tc.writeBefore {
				c1.must("append", "file_0", "A")
			}
			c1.signal(syscall.SIGSTOP)

			c2, err := client.New(ctx, []string{srv.URL()}, client.WithName("C2"))
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close(context.Background())
			lk, err := c2.Acquire(ctx)
			if err != nil {
				t.Fatalf("C2 acquire: %v", err)
			}
			if err := lk.Append(ctx, "file_0", []byte("B")); err != nil {
				t.Fatalf("C2 append: %v", err)
			}

			c1.signal(syscall.SIGCONT)
			if got := c1.do("append", "file_0", "A"); !strings.HasPrefix(got, "err LOCK_EXPIRED") {
				t.Fatalf("woken C1's append = %q, want LOCK_EXPIRED", got)
			}
			if err := lk.Append(ctx, "file_0", []byte("B")); err != nil {
				t.Fatalf("C2 second append: %v", err)
			}
			if err := lk.Release(ctx); err != nil {
				t.Fatalf("C2 release: %v", err)
			}
			c1.must("acquire")
			c1.must("append", "file_0", "A")
			c1.must("append", "file_0", "A")
			c1.must("release")
			if got := readFile(t, srv.URL(), "file_0"); got != "BBAA" {
				t.Fatalf("file_0 = %q, want BBAA", got)
			}
		})
	}
}
