// Package integration_test runs the client against real dlm servers and
// clusters in this process. It is its own package, not client's tests,
// because a program that imports the client gets its tests' imports in
// its go.sum and module downloads: kept here, they do not pull Raft, bbolt
// and the rest of the server into every client user's build (README, "Go
// library"; ./scripts/test checks it).
package integration_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
)

// TestMain fails the run if a goroutine of the client or of faultinject
// outlives the tests (as the client package's own TestMain).
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaks := leakedGoroutines(10 * time.Second); leaks != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n\n%s\n", leaks)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of goroutines running client or
// faultinject code, waiting up to limit for them to finish.
func leakedGoroutines(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaks []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "github.com/dlm/dlm/client.") || strings.Contains(g, "github.com/dlm/dlm/client/faultinject.") {
				leaks = append(leaks, g)
			}
		}
		if len(leaks) == 0 || time.Now().After(deadline) {
			return strings.Join(leaks, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dial opens a client that the test closes when it ends.
func dial(t *testing.T, urls []string, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, urls, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}
