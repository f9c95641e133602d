package membership

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// MaxTries bounds the calls one AtLeader makes, hints and retries together:
// enough for a list of a few URLs and an election, and a bound on a loop of
// hints.
const MaxTries = 10

// policy is the clients' retry policy (the retry_policy option on
// ErrorReason): AtLeader paces its retries as the clients do.
var policy = func() *dlmv1.RetryPolicy {
	p, _ := proto.GetExtension(dlmv1.ErrorReason(0).Descriptor().Options(), dlmv1.E_RetryPolicy).(*dlmv1.RetryPolicy)
	if p == nil {
		p = &dlmv1.RetryPolicy{BackoffBaseMs: 50, BackoffMaxMs: 300, MaxRedirects: 3}
	}
	return p
}()

// retryClass is each reason's retry class (the reason_spec option).
var retryClass = func() map[dlmv1.ErrorReason]dlmv1.RetryClass {
	m := map[dlmv1.ErrorReason]dlmv1.RetryClass{}
	vals := dlmv1.ErrorReason(0).Descriptor().Values()
	for i := range vals.Len() {
		v := vals.Get(i)
		if spec, _ := proto.GetExtension(v.Options(), dlmv1.E_ReasonSpec).(*dlmv1.ReasonSpec); spec != nil {
			m[dlmv1.ErrorReason(v.Number())] = spec.GetRetry()
		}
	}
	return m
}()

// AtLeader runs call at the leader of the cluster that urls belong to: it
// tries the URLs in turn, goes at once to the leader a NOT_LEADER answer
// names (unless that URL already failed in this round: a loop of hints
// between nodes that disagree pauses instead), and pauses between other
// retries with the clients' backoff. It returns the first answer, the first
// error that retrying cannot help (its reason's retry class is NEVER, or a
// code other than Unavailable and Unknown without a reason), or the last
// error after MaxTries calls or when ctx ends.
func AtLeader[T any](ctx context.Context, urls []string, call func(ctx context.Context, url string) (T, error)) (T, error) {
	var zero T
	if len(urls) == 0 {
		return zero, errors.New("no server URL to ask")
	}
	var (
		last      error
		next      = 1
		target    = urls[0]
		redirects uint32
		tried     = map[string]bool{}
		backoff   = time.Duration(policy.GetBackoffBaseMs()) * time.Millisecond
		maxPause  = time.Duration(policy.GetBackoffMaxMs()) * time.Millisecond
	)
	for range MaxTries {
		res, err := call(ctx, target)
		if err == nil {
			return res, nil
		}
		last = err
		if !retryable(err) || ctx.Err() != nil {
			return zero, err
		}
		tried[target] = true
		if hint := leaderHint(err); hint != "" && !tried[hint] && redirects < policy.GetMaxRedirects() {
			redirects++
			target = hint
			continue
		}
		redirects = 0
		if next%len(urls) == 0 {
			clear(tried) // a new round of the list
		}
		target = urls[next%len(urls)]
		next++
		pause := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, maxPause)
		select {
		case <-ctx.Done():
			return zero, last
		case <-time.After(pause):
		}
	}
	return zero, last
}

// retryable says whether another server, or the same one later, may answer
// err differently.
func retryable(err error) bool {
	if r, ok := reason(err); ok {
		c := retryClass[r]
		return c == dlmv1.RetryClass_RETRY_CLASS_FOLLOW_LEADER || c == dlmv1.RetryClass_RETRY_CLASS_RETRY_SAME_REQUEST
	}
	// No reason: the call never reached a dlm server, or it failed on
	// the way (refused, reset, timed out).
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDeadlineExceeded:
		return true
	}
	return false
}

// detail is the ErrorDetail an error carries, if any.
func detail(err error) *dlmv1.ErrorDetail {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if ed, ok := v.(*dlmv1.ErrorDetail); ok {
				return ed
			}
		}
	}
	return nil
}

func reason(err error) (dlmv1.ErrorReason, bool) {
	d := detail(err)
	if d == nil || d.GetReason() == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return 0, false
	}
	return d.GetReason(), true
}

// leaderHint is the leader URL a NOT_LEADER error names.
func leaderHint(err error) string {
	return detail(err).GetLeaderUrl()
}
