// Package integration_test runs the client against real dlm servers and
// clusters in this process. It is its own package, not client's tests,
// because a program that imports the client gets its tests' imports in
// its go.sum and module downloads: kept here, they do not pull Raft, bbolt
// and the rest of the server into every client user's build (README, "Go
// library"; ./scripts/test checks it).
package integration_test

import (
	"context"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/internal/leakcheck"
)

// TestMain fails the run if a goroutine a test started outlives the tests:
// the client's, faultinject's, or those of the servers the tests run here.
func TestMain(m *testing.M) { leakcheck.Main(m) }

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
