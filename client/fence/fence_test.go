package fence_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/fence"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// grants is what dlm would answer: the current grants of each lock.
type grants struct {
	mu      sync.Mutex
	current map[string]map[uint64]dlmv1.LockMode
	calls   int
}

func (g *grants) CheckToken(_ context.Context, lock string, token uint64) (*dlmv1.CheckTokenResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	held, ok := g.current[lock]
	if !ok {
		return nil, client.ErrLockUnknown
	}
	mode, cur := held[token]
	return &dlmv1.CheckTokenResponse{Current: cur, Mode: mode}, nil
}

func (g *grants) set(lock string, tokens map[uint64]dlmv1.LockMode) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.current[lock] = tokens
}

const (
	excl   = dlmv1.LockMode_LOCK_MODE_EXCLUSIVE
	shared = dlmv1.LockMode_LOCK_MODE_SHARED
)

func TestCheckerRefusesStaleTokens(t *testing.T) {
	ctx := t.Context()
	g := &grants{current: map[string]map[uint64]dlmv1.LockMode{"kv": {10: excl}}}
	c := fence.NewChecker(g)
	if err := c.Check(ctx, "kv", 10); err != nil {
		t.Fatalf("current token refused: %v", err)
	}
	// The holder of 10 stalled; 12 took over.
	g.set("kv", map[uint64]dlmv1.LockMode{12: excl})
	if err := c.Check(ctx, "kv", 10); !errors.Is(err, fence.ErrStale) {
		t.Fatalf("stale token 10 = %v, want ErrStale", err)
	}
	if err := c.Check(ctx, "kv", 12); err != nil {
		t.Fatalf("current token 12 refused: %v", err)
	}
	// Below the highest accepted: refused without asking dlm, even if dlm
	// (wrongly, or a different lock's view) said otherwise.
	g.set("kv", map[uint64]dlmv1.LockMode{10: excl, 12: excl})
	before := g.calls
	if err := c.Check(ctx, "kv", 10); !errors.Is(err, fence.ErrStale) {
		t.Fatalf("token below the highest accepted = %v, want ErrStale", err)
	}
	if g.calls != before {
		t.Fatalf("asked dlm about a token below the highest accepted")
	}
	if err := c.Check(ctx, "gone", 5); !errors.Is(err, fence.ErrStale) {
		t.Fatalf("token of a lock that is not live = %v, want ErrStale", err)
	}
	if err := c.Check(ctx, "kv", 0); !errors.Is(err, fence.ErrStale) {
		t.Fatalf("token 0 = %v, want ErrStale", err)
	}
	if c.Highest("kv") != 12 {
		t.Fatalf("Highest = %d, want 12", c.Highest("kv"))
	}
}

// Shared holders hold together: accepting a reader's higher token must not
// refuse another current reader with a lower one.
func TestCheckerAcceptsEveryCurrentSharedHolder(t *testing.T) {
	ctx := t.Context()
	g := &grants{current: map[string]map[uint64]dlmv1.LockMode{"r": {20: shared, 21: shared}}}
	c := fence.NewChecker(g)
	for _, tok := range []uint64{21, 20} {
		if err := c.Check(ctx, "r", tok); err != nil {
			t.Fatalf("current shared token %d refused: %v", tok, err)
		}
	}
}

func TestMiddleware(t *testing.T) {
	g := &grants{current: map[string]map[uint64]dlmv1.LockMode{"kv": {7: excl}}}
	writes := 0
	srv := httptest.NewServer(fence.NewChecker(g).Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writes++
		w.WriteHeader(http.StatusNoContent)
	})))
	defer srv.Close()
	put := func(lock string, token uint64, withToken bool) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if withToken {
			fence.SetHeaders(req.Header, lock, token)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put("kv", 0, false); code != http.StatusPreconditionRequired {
		t.Errorf("no token: %d, want 428", code)
	}
	if code := put("kv", 7, true); code != http.StatusNoContent {
		t.Errorf("current token: %d, want 204", code)
	}
	if code := put("kv", 6, true); code != http.StatusConflict {
		t.Errorf("stale token: %d, want 409", code)
	}
	if writes != 1 {
		t.Fatalf("%d writes reached the handler, want 1", writes)
	}
}
