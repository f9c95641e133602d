package client

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// backoff returns the pause before retry number n (1 for the first retry):
// a random duration in [d/2, d] with d = base·2^(n-1) capped at max, from
// the proto's retry_policy. The random half keeps clients that failed
// together from retrying together.
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 16 {
		d = min(backoffBase<<max(n-1, 0), backoffMax)
	}
	return d/2 + rand.N(d/2+1)
}

// ParseEndpoints splits a comma-separated list of server addresses into base
// URLs, as taken by New. An address without a scheme gets http://, so
// "127.0.0.1:7070,127.0.0.1:7071" is accepted; empty elements are dropped.
func ParseEndpoints(s string) []string {
	var eps []string
	for e := range strings.SplitSeq(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if !strings.Contains(e, "://") {
			e = "http://" + e
		}
		eps = append(eps, strings.TrimRight(e, "/"))
	}
	return eps
}

func validateEndpoint(e string) error {
	u, err := url.Parse(e)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want an http:// or https:// base URL")
	}
	return nil
}

// endpoints is the list of servers and the one currently used. A call that
// fails on a server moves on to the next; a NOT_LEADER answer that names the
// leader moves straight to it.
type endpoints struct {
	newAPI func(baseURL string) dlmv1connect.LockServiceClient

	mu      sync.Mutex
	urls    []string
	apis    map[string]dlmv1connect.LockServiceClient
	current int
	// refused records when each endpoint last failed without an answer
	// from the service (connection refused or reset, attempt timeout).
	refused map[string]time.Time
}

func newEndpoints(urls []string, newAPI func(string) dlmv1connect.LockServiceClient) *endpoints {
	return &endpoints{
		newAPI:  newAPI,
		urls:    append([]string(nil), urls...),
		apis:    make(map[string]dlmv1connect.LockServiceClient),
		refused: make(map[string]time.Time),
	}
}

// pick returns the current server.
func (e *endpoints) pick() (string, dlmv1connect.LockServiceClient) {
	e.mu.Lock()
	defer e.mu.Unlock()
	u := e.urls[e.current]
	api, ok := e.apis[u]
	if !ok {
		api = e.newAPI(u)
		e.apis[u] = api
	}
	return u, api
}

// failed moves away from server u after a failed attempt, unless another
// call already did. It reports whether the next attempt goes to the leader
// named by the answer, which is worth trying without a pause.
func (e *endpoints) failed(u string, err error) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	ce := newError(err)
	if ce.Reason == 0 {
		// No ErrorDetail: the service itself did not answer.
		e.refused[u] = time.Now()
	}
	if e.urls[e.current] != u {
		return false
	}
	if leader := ce.LeaderURL; leader != "" && validateEndpoint(leader) == nil {
		leader = strings.TrimRight(leader, "/")
		if leader == u || time.Since(e.refused[leader]) < refusedFor {
			e.current = (e.current + 1) % len(e.urls)
			return false
		}
		for i, v := range e.urls {
			if v == leader {
				e.current = i
				return true
			}
		}
		// A leader outside the configured list (the cluster grew): use it
		// as one more endpoint.
		e.urls = append(e.urls, leader)
		e.current = len(e.urls) - 1
		return true
	}
	e.current = (e.current + 1) % len(e.urls)
	return false
}

// retrier runs one RPC until it gets a definite answer, the retry budget
// is spent, or the caller's context ends.
type retrier struct {
	eps            *endpoints
	budget         time.Duration
	attemptTimeout time.Duration
	log            *slog.Logger
}

// do runs attempt with a fresh per-attempt deadline of timeout (0 means the
// retrier's default) until it returns nil or a definite error. Each attempt
// gets the current server's API.
func (r *retrier) do(ctx context.Context, op string, timeout time.Duration, attempt func(context.Context, dlmv1connect.LockServiceClient) error) error {
	if timeout <= 0 {
		timeout = r.attemptTimeout
	}
	budget, cancel := context.WithTimeout(ctx, r.budget)
	defer cancel()
	var (
		last      error
		redirects int
	)
	for n := 1; ; n++ {
		u, api := r.eps.pick()
		actx, acancel := context.WithTimeout(budget, timeout)
		err := attempt(actx, api)
		acancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return &retryError{op: op, attempts: n, stop: ctx.Err(), last: newError(err)}
		}
		if !retryable(err) {
			return newError(err)
		}
		if e := newError(err); last == nil || budget.Err() == nil && (e.Reason != 0 || reasonOf(last) == 0) {
			// An attempt cut short by the end of the budget says less than
			// the failure before it, and so does a failed connection after
			// an answer from the service: with no majority, "no leader
			// known" from a live node explains more than "connection
			// refused" from a dead one.
			last = e
		}
		toLeader := r.eps.failed(u, err)
		r.log.Debug("dlm: retrying", "op", op, "attempt", n, "endpoint", u, "err", err)
		if toLeader && redirects < maxRedirects {
			// One hop to the named leader needs no pause; a chain of them
			// (an election in progress) does.
			redirects++
			continue
		}
		redirects = 0
		pause := time.NewTimer(backoff(n))
		select {
		case <-pause.C:
		case <-budget.Done():
			pause.Stop()
			if ctx.Err() != nil {
				return &retryError{op: op, attempts: n, stop: ctx.Err(), last: last}
			}
			return &retryError{op: op, attempts: n, stop: ErrUnavailable, last: last}
		}
		if budget.Err() != nil {
			return &retryError{op: op, attempts: n, stop: ErrUnavailable, last: last}
		}
	}
}
