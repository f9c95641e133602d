package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
)

func newClient(t *testing.T, ctx context.Context, url, name string) *client.Client {
	t.Helper()
	c, err := client.New(ctx, []string{url}, client.WithName(name), client.WithRetryBudget(45*time.Second))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// section runs one critical section of appends to file_0.
func section(t *testing.T, ctx context.Context, c *client.Client, texts ...string) {
	t.Helper()
	lk, err := c.Acquire(ctx)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	for _, s := range texts {
		if err := lk.Append(ctx, "file_0", []byte(s)); err != nil {
			t.Fatalf("append %q: %v", s, err)
		}
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
}

func onDisk(t *testing.T, dataDir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "files", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// C1: the server is killed with the lock free; the client's acquire retries
// until the server is back.
func TestCrashWithLockFree(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv := startServer(t, "127.0.0.1:0", t.TempDir())
	c1 := newClient(t, ctx, srv.URL(), "C1")
	section(t, ctx, c1, "A", "A")
	srv.Kill()

	granted := make(chan error, 1)
	var lk *client.Lock
	go func() {
		var err error
		lk, err = c1.Acquire(ctx)
		granted <- err
	}()
	srv.start()
	if err := <-granted; err != nil {
		t.Fatalf("acquire across the crash: %v", err)
	}
	if err := lk.Append(ctx, "file_0", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, srv.URL(), "file_0"); got != "AA1" {
		t.Fatalf("file_0 = %q, want AA1", got)
	}
	if got := onDisk(t, srv.Data, "file_0"); got != "AA1" {
		t.Fatalf("file_0 on disk = %q, want AA1", got)
	}
}

// C2: the server is killed while C2 holds the lock mid-section; after the
// restart C2 carries on under its old grant.
func TestCrashWithLockHeld(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv := startServer(t, "127.0.0.1:0", t.TempDir())
	c1 := newClient(t, ctx, srv.URL(), "C1")
	c2 := newClient(t, ctx, srv.URL(), "C2")
	section(t, ctx, c1, "A")
	lk, err := c2.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Append(ctx, "file_0", []byte("B")); err != nil {
		t.Fatal(err)
	}
	srv.Kill()

	appended := make(chan error, 1)
	go func() { appended <- lk.Append(ctx, "file_0", []byte("B")) }()
	srv.start()
	if err := <-appended; err != nil {
		t.Fatalf("append under the old grant across the crash: %v", err)
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatalf("release after the crash: %v", err)
	}
	section(t, ctx, c1, "A")
	if got := readFile(t, srv.URL(), "file_0"); got != "ABBA" {
		t.Fatalf("file_0 = %q, want ABBA", got)
	}
}

// A client runs critical sections of unique records while the server is
// killed with SIGKILL at random moments and restarted. Every section whose
// release was acknowledged is in the file exactly once, no record is
// duplicated, and sections are whole and in order.
func TestCrashLoopLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	srv := startServer(t, "127.0.0.1:0", t.TempDir(), "--snapshot-threshold", "40")
	c := newClient(t, ctx, srv.URL(), "writer")

	acked := make(chan int, 1024)
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		for i := 0; i < 400; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			lk, err := c.Acquire(ctx)
			if err != nil {
				writerDone <- fmt.Errorf("section %d acquire: %w", i, err)
				return
			}
			for j := range 3 {
				if err := lk.Append(ctx, "file_0", fmt.Appendf(nil, "%d.%d;", i, j)); err != nil {
					writerDone <- fmt.Errorf("section %d append: %w", i, err)
					return
				}
			}
			if err := lk.Release(ctx); err != nil {
				writerDone <- fmt.Errorf("section %d release: %w", i, err)
				return
			}
			acked <- i
		}
		writerDone <- nil
	}()

	for range 5 {
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond) // fault schedule, not synchronisation
		srv.Kill()
		srv.start()
	}
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	close(acked)
	got := readFile(t, srv.URL(), "file_0")
	records := strings.Split(strings.TrimSuffix(got, ";"), ";")
	seen := make(map[string]bool)
	last := -1
	for k, r := range records {
		if seen[r] {
			t.Fatalf("record %s appears twice", r)
		}
		seen[r] = true
		var i, j int
		if _, err := fmt.Sscanf(r, "%d.%d", &i, &j); err != nil {
			t.Fatalf("torn record %q", r)
		}
		if j != k%3 || (j == 0 && i <= last) {
			t.Fatalf("record %s out of place at %d: sections not whole or not in order", r, k)
		}
		last = i
	}
	n := 0
	for i := range acked {
		n++
		for j := range 3 {
			if !seen[fmt.Sprintf("%d.%d", i, j)] {
				t.Fatalf("acknowledged record %d.%d lost", i, j)
			}
		}
	}
	if n == 0 {
		t.Fatal("no section was acknowledged")
	}
	if disk := onDisk(t, srv.Data, "file_0"); disk != got {
		t.Fatalf("file on disk differs from the served file")
	}
	t.Logf("%d sections acknowledged across 5 kill -9s, %d records in the file", n, len(records))
}
