package robustness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// namedLocks are the locks the named workers take: three named ones, and
// the default lock (""), which they take in shared mode only, beside the
// library workers that take it exclusively to append.
var namedLocks = []string{"alpha", "beta", "gamma", ""}

// namedLeaseMs is the named workers' lease: short, so that a stalled
// holder's grants expire (and start their lock-delay) within a run.
const namedLeaseMs = 1500

// namedWorker takes named locks and the default lock in shared or
// exclusive mode over the raw API (one session, no keepalive: its calls
// renew its lease), holds each grant a moment, asks CheckToken about it,
// and releases it. The model checks that no holder's grant coexists with a
// conflicting one: a holder whose grant ended unseen must not be told it is
// current, nor have its release accepted.
type namedWorker struct {
	*rawSession
	id  int
	h   *history
	rng *rand.Rand
	// locks are the locks it takes ("": the default lock, shared only).
	locks []string
	// sharedPct is the share of its acquires in shared mode.
	sharedPct int
}

func newNamedWorker(id int, h *history, c *cluster, st *stack, rng *rand.Rand, locks []string, sharedPct int) *namedWorker {
	return &namedWorker{rawSession: newRawSession(c, st, rng), id: id, h: h, rng: rng, locks: locks, sharedPct: sharedPct}
}

func (n *namedWorker) run(ctx context.Context) {
	for ctx.Err() == nil {
		if n.sess == 0 && !n.open(ctx, fmt.Sprintf("named%d", n.id), namedLeaseMs) {
			continue
		}
		n.cur = n.rng.IntN(len(n.urls))
		n.round(ctx)
	}
}

// lockRef is the request's lock field: unset for the default lock.
func lockRef(name string) *string {
	if name == "" {
		return nil
	}
	return proto.String(name)
}

func modeOf(shared bool) dlmv1.LockMode {
	if shared {
		return dlmv1.LockMode_LOCK_MODE_SHARED
	}
	return dlmv1.LockMode_LOCK_MODE_EXCLUSIVE
}

// reasonOf is the reason an error's detail names.
func reasonOf(err error) dlmv1.ErrorReason {
	var ce *connect.Error
	if errors.As(err, &ce) {
		for _, d := range ce.Details() {
			if m, derr := d.Value(); derr == nil {
				if ed, ok := m.(*dlmv1.ErrorDetail); ok {
					return ed.GetReason()
				}
			}
		}
	}
	return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

func (n *namedWorker) round(ctx context.Context) {
	lock := n.locks[n.rng.IntN(len(n.locks))]
	shared := lock == "" || n.rng.IntN(100) < n.sharedPct
	try := n.rng.IntN(5) == 0
	// A short lock-delay now and then, so that an expiry delays the lock
	// without stalling the workload.
	delay := uint32(n.rng.IntN(3)) * 100
	id, secret, seq := n.caller()
	e := event{Worker: n.id, Kind: "acquire", Lock: lock, Shared: shared, Session: id, Call: n.h.now()}
	var token uint64
	var granted bool
	res := unknown
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		res, err = n.call(ctx, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
			r, err := api.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: id, Secret: secret, Seq: seq, AckedBelow: seq,
				Lock: lockRef(lock), Mode: modeOf(shared), Try: try, WaitMs: 500, LockDelayMs: proto.Uint32(delay)}))
			if err == nil {
				granted, token = r.Msg.GetGranted(), r.Msg.GetToken()
			}
			return err
		})
		if res != ok || granted || try {
			break
		}
	}
	e.Return, e.Token = n.h.now(), token
	if res == ok && try && !granted {
		return // not granted, not queued
	}
	if res != ok || !granted || token == 0 {
		e.Result = failed
		if res != failed {
			e.Result = unknown
		}
		if err != nil {
			e.Err = err.Error()
		}
		n.h.add(e)
		// Give up whatever the session has of this lock (a place in the
		// queue, or a grant never learned of), or start a new session.
		if res == failed || n.giveUp(ctx, lock) != ok {
			n.sess = 0
		}
		return
	}
	e.Result = ok
	n.h.add(e)
	ctx = context.WithoutCancel(ctx)
	for range n.rng.IntN(3) {
		// Workload: hold the grant a moment before asking about it.
		pollPause(ctx, time.Duration(n.rng.IntN(150))*time.Millisecond)
		n.checkToken(ctx, lock, shared, token)
	}
	if n.rng.IntN(15) == 0 {
		// Fault: the holder stalls past its lease, so its session and every
		// grant of it expire (the lock then waits out its lock-delay); its
		// CheckToken and release that follow must not succeed once another
		// holder has the lock.
		pollPause(ctx, 2*namedLeaseMs*time.Millisecond)
		n.checkToken(ctx, lock, shared, token)
	}
	res = n.release(ctx, lock, shared, token, false)
	if res == ok {
		switch n.rng.IntN(6) {
		case 0:
			// A released token is never current again.
			n.checkToken(ctx, lock, shared, token)
		case 1:
			// A late release of the same token, as a new request of the
			// live session: it must be refused.
			n.release(ctx, lock, shared, token, true)
		}
	}
	if res != ok {
		// Expired, or not known to be released: a fresh session leaves the
		// old one's grants to its lease.
		n.sess = 0
	}
}

func (n *namedWorker) checkToken(ctx context.Context, lock string, shared bool, token uint64) {
	e := event{Worker: n.id, Kind: "checktoken", Lock: lock, Shared: shared, Token: token, Call: n.h.now()}
	var current bool
	res, err := n.call(ctx, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		r, err := api.CheckToken(ctx, connect.NewRequest(&dlmv1.CheckTokenRequest{Lock: lockRef(lock), Token: token}))
		if err == nil {
			current = r.Msg.GetCurrent()
		}
		return err
	})
	e.Return, e.Result, e.Current = n.h.now(), res, current
	if res == failed && reasonOf(err) == dlmv1.ErrorReason_ERROR_REASON_LOCK_UNKNOWN {
		// A lock that is not live has no current grant.
		e.Result = ok
	}
	if err != nil {
		e.Err = err.Error()
	}
	n.h.add(e)
}

// release releases token's grant of lock; stale marks a release sent on
// purpose after the grant was released, which the model then sees as a
// release of a grant no longer held.
func (n *namedWorker) release(ctx context.Context, lock string, shared bool, token uint64, stale bool) outcome {
	id, secret, seq := n.caller()
	e := event{Worker: n.id, Kind: "release", Lock: lock, Shared: shared, Token: token, Stale: stale, Call: n.h.now()}
	req := &dlmv1.LockReleaseRequest{ClientId: id, Secret: secret, Seq: seq, AckedBelow: seq, Token: token, Lock: lockRef(lock)}
	if lock == "" {
		// The default lock's section is empty, whichever leader granted it.
		req.SectionAppends, req.SectionBytes = proto.Uint32(0), proto.Uint64(0)
	}
	res, err := n.call(ctx, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		_, err := api.LockRelease(ctx, connect.NewRequest(req))
		return err
	})
	e.Return, e.Result = n.h.now(), res
	if err != nil {
		e.Err = err.Error()
	}
	n.h.add(e)
	return res
}

// giveUp leaves lock's queue or releases a grant of it never learned of.
func (n *namedWorker) giveUp(ctx context.Context, lock string) outcome {
	id, secret, seq := n.caller()
	req := &dlmv1.LockReleaseRequest{ClientId: id, Secret: secret, Seq: seq, AckedBelow: seq, Abort: true, Lock: lockRef(lock)}
	res, _ := n.call(context.WithoutCancel(ctx), func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		_, err := api.LockRelease(ctx, connect.NewRequest(req))
		return err
	})
	return res
}

// namedCounts is what the named workers did, so that a run that exercised
// nothing shows it.
type namedCounts struct {
	sharedGrants, exclusiveGrants int
	// locks is how many locks were granted at least once.
	locks                int
	releases, checks     int
	current              int
	lateReleasesAccepted int
}

func countNamed(h *history) namedCounts {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n namedCounts
	seen := make(map[string]bool)
	for _, e := range h.events {
		if e.Result != ok || (e.Lock == "" && !e.Shared) {
			continue
		}
		switch {
		case e.Kind == "acquire":
			seen[e.Lock] = true
			if e.Shared {
				n.sharedGrants++
			} else {
				n.exclusiveGrants++
			}
		case e.Kind == "release" && e.Stale:
			n.lateReleasesAccepted++
		case e.Kind == "release":
			n.releases++
		case e.Kind == "checktoken":
			n.checks++
			if e.Current {
				n.current++
			}
		}
	}
	n.locks = len(seen)
	return n
}
