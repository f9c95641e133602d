package robustness

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/url"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// zombie speaks the raw API, without the client library's guards, to act
// out a late writer: after releasing a grant it sends one more append and
// one more release with the token it no longer holds, as new requests. The
// service must refuse both (fencing).
type zombie struct {
	*rawSession
	id    int
	h     *history
	rng   *rand.Rand
	files []string
	next  int
}

// rawSession is one session driven over the raw API, request by request,
// with explicit sequence numbers, following the leader through the
// proxies.
type rawSession struct {
	rng   *rand.Rand
	urls  []string
	hosts map[string]string
	api   map[string]dlmv1connect.LockServiceClient
	cur   int

	sess, seq uint64
	secret    string
}

func newRawSession(c *cluster, st *stack, rng *rand.Rand) *rawSession {
	r := &rawSession{rng: rng, urls: c.urls(), hosts: c.hostMap(), api: make(map[string]dlmv1connect.LockServiceClient)}
	for _, u := range r.urls {
		r.api[u] = dlmv1connect.NewLockServiceClient(st.hc, u)
	}
	return r
}

func newZombie(id int, h *history, c *cluster, st *stack, rng *rand.Rand, files []string) *zombie {
	return &zombie{rawSession: newRawSession(c, st, rng), id: id, h: h, rng: rng, files: files}
}

// call runs f on the current node until a definite answer, following the
// leader and rotating on errors, for at most about 8s.
func (z *rawSession) call(ctx context.Context, f func(context.Context, dlmv1connect.LockServiceClient) error) (outcome, error) {
	deadline := time.Now().Add(8 * time.Second)
	var err error
	for n := 0; n < 40 && time.Now().Before(deadline) && ctx.Err() == nil; n++ {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		err = f(actx, z.api[z.urls[z.cur]])
		cancel()
		if err == nil {
			return ok, nil
		}
		code := connect.CodeOf(err)
		if code != connect.CodeUnavailable && code != connect.CodeUnknown && code != connect.CodeDeadlineExceeded && code != connect.CodeCanceled {
			return failed, err
		}
		z.cur = z.leaderIndex(err)
		// Retry backoff, not synchronisation.
		if pollPause(ctx, time.Duration(20+z.rng.IntN(80))*time.Millisecond) != nil {
			break
		}
	}
	return unknown, err
}

// leaderIndex picks the next node: the one named as leader, or the next.
func (z *rawSession) leaderIndex(err error) int {
	var ce *connect.Error
	if errors.As(err, &ce) {
		for _, d := range ce.Details() {
			if m, derr := d.Value(); derr == nil {
				if ed, ok := m.(*dlmv1.ErrorDetail); ok && ed.GetLeaderUrl() != "" {
					if u, perr := url.Parse(ed.GetLeaderUrl()); perr == nil {
						if to, ok := z.hosts[u.Host]; ok {
							for i, v := range z.urls {
								if v == "http://"+to {
									return i
								}
							}
						}
					}
				}
			}
		}
	}
	return (z.cur + 1) % len(z.urls)
}

func (z *rawSession) caller() (uint64, string, uint64) {
	z.seq++
	return z.sess, z.secret, z.seq
}

func (z *rawSession) open(ctx context.Context, name string, leaseMs uint32) bool {
	var resp *dlmv1.InitResponse
	res, _ := z.call(ctx, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		r, err := api.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{LeaseMs: leaseMs, Name: name}))
		if err == nil {
			resp = r.Msg
		}
		return err
	})
	if res != ok {
		return false
	}
	z.sess, z.secret, z.seq = resp.GetClientId(), resp.GetSecret(), 0
	return true
}

// run repeats: a short critical section, then the late append and release.
func (z *zombie) run(ctx context.Context) {
	for ctx.Err() == nil {
		if z.sess == 0 && !z.open(ctx, "zombie", 3000) {
			continue
		}
		// Start each round at a random node, as a fresh client would.
		z.cur = z.rng.IntN(len(z.urls))
		z.round(ctx)
	}
}

func (z *zombie) round(ctx context.Context) {
	z.next++
	s := &section{Worker: z.id, Section: z.next}
	id, secret, seq := z.caller()
	e := event{Worker: z.id, Kind: "acquire", Section: s.Section, Session: id, Call: z.h.now()}
	var token uint64
	deadline := time.Now().Add(10 * time.Second)
	res := unknown
	var err error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var granted bool
		res, err = z.call(ctx, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
			r, err := api.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: id, Secret: secret, Seq: seq, WaitMs: 500}))
			if err == nil {
				granted, token = r.Msg.GetGranted(), r.Msg.GetToken()
			}
			return err
		})
		if res != ok || granted {
			break
		}
	}
	e.Return, e.Token = z.h.now(), token
	if res != ok || token == 0 {
		e.Result = failed
		if res == unknown || res == ok {
			e.Result = unknown
		}
		if err != nil {
			e.Err = err.Error()
		}
		z.h.add(e)
		// Give up whatever the session has (a place in the queue, or a
		// grant never learned of), or drop the session if it is gone.
		if connect.CodeOf(err) == connect.CodeFailedPrecondition || connect.CodeOf(err) == connect.CodeNotFound {
			z.sess = 0
			return
		}
		id, secret, seq := z.caller()
		z.call(context.WithoutCancel(ctx), func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
			_, err := api.LockRelease(ctx, connect.NewRequest(&dlmv1.LockReleaseRequest{ClientId: id, Secret: secret, Seq: seq, Abort: true}))
			return err
		})
		return
	}
	e.Result = ok
	z.h.add(e)
	s.Token = token
	ctx = context.WithoutCancel(ctx)
	file := z.files[z.rng.IntN(len(z.files))]
	data := recordData(z.id, s.Section, 1)
	if r := z.appendAs(ctx, s.Section, token, file, data, false); r != failed {
		s.Appends = append(s.Appends, appended{File: file, Data: data})
		if r != ok {
			s.End = undecided
			z.h.addSection(s)
			z.sess = 0 // start over with a new session
			return
		}
	} else {
		s.End = aborted
		z.h.addSection(s)
		z.sess = 0
		return
	}
	re := z.releaseAs(ctx, s.Section, token, false)
	s.Call, s.Return = re.Call, re.Return
	switch re.Result {
	case ok:
		s.End = committed
	case unknown:
		s.End = undecided
	default:
		s.End = aborted
	}
	z.h.addSection(s)
	if re.Result != ok {
		z.sess = 0
		return
	}
	// The late writer: a new append and a new release with the old token,
	// in a section of their own that must never reach a file.
	z.next++
	late := &section{Worker: z.id, Section: z.next, Token: token, End: aborted}
	data = recordData(z.id, late.Section, 1)
	late.Appends = []appended{{File: file, Data: data}}
	z.appendAs(ctx, late.Section, token, file, data, true)
	z.releaseAs(ctx, late.Section, token, true)
	z.h.addSection(late)
}

func (z *zombie) appendAs(ctx context.Context, sec int, token uint64, file, data string, stale bool) outcome {
	id, secret, seq := z.caller()
	e := event{Worker: z.id, Kind: "append", Section: sec, Token: token, File: file, Data: data, Stale: stale, Call: z.h.now()}
	res, err := z.call(ctx, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		_, err := api.AppendFile(ctx, connect.NewRequest(&dlmv1.AppendFileRequest{ClientId: id, Secret: secret, Seq: seq, Token: token, File: file, Data: []byte(data)}))
		return err
	})
	e.Return, e.Result = z.h.now(), res
	if err != nil {
		e.Err = err.Error()
	}
	z.h.add(e)
	return res
}

func (z *zombie) releaseAs(ctx context.Context, sec int, token uint64, stale bool) event {
	id, secret, seq := z.caller()
	e := event{Worker: z.id, Kind: "release", Section: sec, Token: token, Stale: stale, Call: z.h.now()}
	res, err := z.call(ctx, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		_, err := api.LockRelease(ctx, connect.NewRequest(&dlmv1.LockReleaseRequest{ClientId: id, Secret: secret, Seq: seq, Token: token}))
		return err
	})
	e.Return, e.Result = z.h.now(), res
	if err != nil {
		e.Err = err.Error()
	}
	if stale {
		// Not part of the lock model as a release of a grant; checked as a
		// refused stale request instead.
		e.Kind = "stale-release"
	}
	z.h.add(e)
	return e
}
