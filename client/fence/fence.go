// Package fence lets a service that dlm does not own (a store, a database
// front end, a job runner) refuse the writes of a stale lock holder.
//
// A holder sends its lock's name and fencing token with each write. Before
// the service applies the write, a Checker asks dlm whether that token is
// still the lock's current grant (CheckToken, which the leader answers
// after confirming its leadership), and refuses it when it is not. It also
// remembers the highest exclusive token it has accepted for each lock and
// refuses anything below it without a call: a holder that stalled (a
// garbage collection, SIGSTOP, a long partition) and lost its lease cannot
// write after its successor has.
//
// Do runs the write while holding the lock's check, so that two writes of
// one lock are checked and applied one at a time: a write checked as
// current is applied before a later holder's write is even checked.
//
//	checker := fence.NewChecker(reader) // reader: *client.Reader or *client.Client
//	http.Handle("/kv/", checker.Middleware(store))
//
// and a holder sends its token:
//
//	req, _ := http.NewRequest(http.MethodPut, url, body)
//	fence.SetHeaders(req.Header, lk.Name(), lk.Token())
package fence

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// The headers a holder sends its lock and token in. The lock header is
// left out for the default lock.
const (
	LockHeader  = "Dlm-Lock"
	TokenHeader = "Dlm-Fencing-Token"
)

// ErrStale means the token is not the lock's current grant: its holder
// lost the lock (released it, or its lease ran out) and another may hold it.
var ErrStale = errors.New("fence: stale fencing token")

// TokenChecker asks dlm whether a token is current: *client.Reader and
// *client.Client are ones.
type TokenChecker interface {
	CheckToken(ctx context.Context, lock string, token uint64) (*dlmv1.CheckTokenResponse, error)
}

// Checker checks fencing tokens for a service. It is safe for concurrent
// use.
type Checker struct {
	dlm TokenChecker

	mu    sync.Mutex
	locks map[string]*lockGate
}

// lockGate serializes the checked writes of one lock and remembers the
// highest exclusive token accepted.
type lockGate struct {
	mu      sync.Mutex
	highest uint64
}

// NewChecker returns a Checker that asks dlm.
func NewChecker(dlm TokenChecker) *Checker {
	return &Checker{dlm: dlm, locks: make(map[string]*lockGate)}
}

func (c *Checker) gate(lock string) *lockGate {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.locks[lock]
	if g == nil {
		g = &lockGate{}
		c.locks[lock] = g
	}
	return g
}

// Highest returns the highest exclusive token the Checker has accepted for
// lock ("" for the default lock), 0 if none.
func (c *Checker) Highest(lock string) uint64 {
	g := c.gate(lock)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.highest
}

// Check reports whether token is the current grant of lock: nil when it
// is, an error matching ErrStale when it is not, or the error of asking dlm
// (which is no answer: refuse the write, the holder may retry).
func (c *Checker) Check(ctx context.Context, lock string, token uint64) error {
	return c.Do(ctx, lock, token, func() error { return nil })
}

// Do runs write if token is the current grant of lock, and returns its
// error; otherwise it returns an error matching ErrStale, or the error of
// asking dlm, without running it. Writes of one lock run one at a time.
func (c *Checker) Do(ctx context.Context, lock string, token uint64, write func() error) error {
	if token == 0 {
		return fmt.Errorf("%w: no fencing token", ErrStale)
	}
	g := c.gate(lock)
	g.mu.Lock()
	defer g.mu.Unlock()
	if token < g.highest {
		// Tokens grow with every grant, and the holder of g.highest held
		// the lock alone: every grant below it had ended by then.
		return fmt.Errorf("%w: token %d is below %d, already accepted for %s", ErrStale, token, g.highest, describe(lock))
	}
	resp, err := c.dlm.CheckToken(ctx, lock, token)
	switch {
	case errors.Is(err, client.ErrLockUnknown):
		return fmt.Errorf("%w: %s is not held", ErrStale, describe(lock))
	case err != nil:
		return fmt.Errorf("fence: checking token %d of %s: %w", token, describe(lock), err)
	case !resp.GetCurrent():
		return fmt.Errorf("%w: token %d is not the current grant of %s (latest %d)", ErrStale, token, describe(lock), resp.GetLatestToken())
	}
	// Only an exclusive grant proves the ones below it ended: shared
	// holders hold together, each with its own token.
	if resp.GetMode() != dlmv1.LockMode_LOCK_MODE_SHARED {
		g.highest = max(g.highest, token)
	}
	return write()
}

// SetHeaders puts lock and token into h, as Middleware reads them.
func SetHeaders(h http.Header, lock string, token uint64) {
	if lock != "" {
		h.Set(LockHeader, lock)
	}
	h.Set(TokenHeader, strconv.FormatUint(token, 10))
}

// Middleware runs next only for requests whose fencing token (headers
// LockHeader and TokenHeader) is current, one request of a lock at a time.
// It answers 428 Precondition Required without a token, 409 Conflict with a
// stale one, and 503 Service Unavailable when dlm cannot answer. Put it in
// front of the handlers that write; reads need no token.
func (c *Checker) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw := r.Header.Get(TokenHeader)
		if raw == "" {
			http.Error(w, "fence: a write needs the "+TokenHeader+" header", http.StatusPreconditionRequired)
			return
		}
		token, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			http.Error(w, "fence: bad "+TokenHeader+": "+err.Error(), http.StatusBadRequest)
			return
		}
		err = c.Do(r.Context(), r.Header.Get(LockHeader), token, func() error {
			next.ServeHTTP(w, r)
			return nil
		})
		switch {
		case errors.Is(err, ErrStale):
			http.Error(w, err.Error(), http.StatusConflict)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
}

func describe(lock string) string {
	if lock == "" {
		return "the default lock"
	}
	return strconv.Quote(lock)
}
