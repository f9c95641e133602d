package robustness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/faultinject"
)

// rewrite sends requests for a node's real API address to its client
// proxy, so that a leader named by a NOT_LEADER answer is also reached
// through the proxy. It also notes calls whose outcome the network hid (a
// transport error after the request may have left), which makes a later
// definite refusal of the same request ambiguous.
type rewrite struct {
	base   http.RoundTripper
	hosts  map[string]string
	hidden atomic.Bool
}

func (r *rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	if to, ok := r.hosts[req.URL.Host]; ok {
		req = req.Clone(req.Context())
		req.URL.Host, req.Host = to, to
	}
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		r.hidden.Store(true)
		return nil, err
	}
	resp.Body = &watchedBody{ReadCloser: resp.Body, r: r}
	return resp, nil
}

type watchedBody struct {
	io.ReadCloser
	r *rewrite
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.r.hidden.Store(true)
	}
	return n, err
}

// h2c is an HTTP/2 cleartext transport like the client's default one.
func h2c() *http.Transport {
	p := new(http.Protocols)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: p, HTTP2: &http.HTTP2Config{SendPingTimeout: time.Second, PingTimeout: time.Second}}
}

// stack is one client's HTTP stack: fault injection over the rewrite.
type stack struct {
	faults *faultinject.Transport
	rw     *rewrite
	hc     *http.Client
}

func newStack(hosts map[string]string) *stack {
	rw := &rewrite{base: h2c(), hosts: hosts}
	ft := &faultinject.Transport{Base: rw}
	return &stack{faults: ft, rw: rw, hc: &http.Client{Transport: ft}}
}

// locker is one party that takes the lock: an in-process client or a
// client process driven over a pipe.
type locker interface {
	acquire(ctx context.Context) (token, session uint64, res outcome, err error)
	append(ctx context.Context, file, data string) (outcome, error)
	release(ctx context.Context) (outcome, error)
	// abort reports whether it is sure nothing was committed.
	abort(ctx context.Context) (definite bool)
}

// classify turns a client error into an outcome.
func classify(err error) outcome {
	switch {
	case err == nil:
		return ok
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return unknown
	}
	return failed
}

// libLocker is an in-process client of the Go client library.
type libLocker struct {
	c           *client.Client
	st          *stack
	lk          *client.Lock
	noKeepAlive bool
}

func (l *libLocker) acquire(ctx context.Context) (uint64, uint64, outcome, error) {
	lk, err := l.c.Acquire(ctx)
	if err != nil {
		return 0, 0, classify(err), err
	}
	l.lk = lk
	return lk.Token(), l.c.ClientID(), ok, nil
}

func (l *libLocker) append(ctx context.Context, file, data string) (outcome, error) {
	var err error
	// Repeating an append whose outcome is unknown is safe (same seq).
	for range 3 {
		if err = l.lk.Append(ctx, file, []byte(data)); classify(err) != unknown {
			break
		}
	}
	return classify(err), err
}

func (l *libLocker) release(ctx context.Context) (outcome, error) {
	l.st.rw.hidden.Store(false)
	var err error
	for range 3 {
		if err = l.lk.Release(ctx); classify(err) != unknown {
			break
		}
	}
	res := classify(err)
	if res == failed && l.st.rw.hidden.Load() {
		// An earlier attempt may have committed before its answer was lost;
		// a refusal of the retry (say, after the session expired) does not
		// say that nothing was committed.
		return unknown, &refusedRetry{err}
	}
	return res, err
}

// refusedRetry is a definite refusal of a release that had an attempt
// whose answer was lost: the first attempt may have committed.
type refusedRetry struct{ err error }

func (e *refusedRetry) Error() string { return "refused after a lost answer: " + e.err.Error() }
func (e *refusedRetry) Unwrap() error { return e.err }

func (l *libLocker) abort(ctx context.Context) bool {
	if l.noKeepAlive {
		// Without keepalive only the service's answers end a grant: an
		// abort it accepted, or its word that the grant is gone, is
		// definite. (Abort returns the service's LOCK_EXPIRED for a grant
		// the service already ended, though its doc says nil.)
		err := l.lk.Abort(ctx)
		return err == nil || errors.Is(err, client.ErrLockExpired) || errors.Is(err, client.ErrSessionExpired) || errors.Is(err, client.ErrNotHolder)
	}
	select {
	case <-l.lk.Lost():
		// Lost by a keepalive lapse, the grant may still stand on the
		// service with its staged appends.
		l.lk.Abort(ctx)
		return false
	default:
	}
	return l.lk.Abort(ctx) == nil
}

// worker runs critical sections, reads and status calls until ctx ends.
type worker struct {
	id    int
	h     *history
	l     locker
	rd    *client.Reader // reads and status
	rng   *rand.Rand
	files []string
	next  int // next section number
	// maxAppends bounds a section's appends (1 to maxAppends).
	maxAppends int
	// between runs between a section's appends (the stalled-holder fault).
	between func(i int)
}

func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		switch r := w.rng.IntN(10); {
		case r < 7:
			w.section(ctx)
		case r < 9:
			w.read(ctx)
		default:
			w.status(ctx)
		}
	}
}

func (w *worker) read(ctx context.Context) {
	file := w.files[w.rng.IntN(len(w.files))]
	e := event{Worker: w.id, Kind: "read", File: file, Call: w.h.now()}
	b, err := w.rd.ReadFile(ctx, file)
	e.Return, e.Result, e.Data = w.h.now(), classify(err), string(b)
	if err != nil {
		e.Err = err.Error()
	}
	w.h.add(e)
}

func (w *worker) status(ctx context.Context) {
	e := event{Worker: w.id, Kind: "status", Call: w.h.now()}
	st, err := w.rd.Status(ctx, true)
	e.Return, e.Result = w.h.now(), classify(err)
	if err == nil {
		e.LastToken = st.GetLock().GetLastToken()
	}
	w.h.add(e)
}

// section runs one critical section with fresh records.
func (w *worker) section(ctx context.Context) {
	w.next++
	s := &section{Worker: w.id, Section: w.next}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	e := event{Worker: w.id, Kind: "acquire", Section: s.Section, Call: w.h.now()}
	token, session, res, err := w.l.acquire(actx)
	e.Return, e.Result, e.Token, e.Session = w.h.now(), res, token, session
	if err != nil {
		e.Err = err.Error()
		w.h.add(e)
		return
	}
	w.h.add(e)
	s.Token = token
	// The section ends even if the run does.
	ctx = context.WithoutCancel(ctx)
	n := 1 + w.rng.IntN(w.maxAppends)
	for i := 1; i <= n; i++ {
		if w.between != nil {
			w.between(i)
		}
		file := w.files[w.rng.IntN(len(w.files))]
		data := recordData(w.id, s.Section, i)
		e := event{Worker: w.id, Kind: "append", Section: s.Section, Token: token, File: file, Data: data, Call: w.h.now()}
		res, err := w.l.append(ctx, file, data)
		e.Return, e.Result = w.h.now(), res
		if err != nil {
			e.Err = err.Error()
		}
		w.h.add(e)
		if res != failed {
			s.Appends = append(s.Appends, appended{File: file, Data: data})
		}
		if res != ok {
			w.endAbort(ctx, s)
			return
		}
	}
	e = event{Worker: w.id, Kind: "release", Section: s.Section, Token: token, Call: w.h.now()}
	res, err = w.l.release(ctx)
	e.Return, e.Result = w.h.now(), res
	if err != nil {
		e.Err = err.Error()
	}
	w.h.add(e)
	s.Call, s.Return = e.Call, e.Return
	if r := new(refusedRetry); errors.As(err, &r) {
		s.Refused = r.err.Error()
	}
	switch res {
	case ok:
		s.End = committed
	case unknown:
		s.End = undecided
	default:
		s.End = aborted
	}
	w.h.addSection(s)
}

func (w *worker) endAbort(ctx context.Context, s *section) {
	e := event{Worker: w.id, Kind: "abort", Section: s.Section, Token: s.Token, Call: w.h.now()}
	definite := w.l.abort(ctx)
	e.Return, e.Result = w.h.now(), ok
	if !definite {
		e.Result = unknown
	}
	w.h.add(e)
	s.Call, s.Return = e.Call, e.Return
	s.End = aborted
	if !definite {
		// The grant may live on, and a later re-entrant acquire, or Close,
		// may still commit what was staged.
		s.End = undecided
	}
	w.h.addSection(s)
}

// newLibWorker opens an in-process client through the proxies.
func newLibWorker(ctx context.Context, id int, h *history, c *cluster, rng *rand.Rand, files []string, lease time.Duration, noKeepAlive bool) (*worker, *stack, error) {
	st := newStack(c.hostMap())
	urls := c.urls()
	// Each client starts at a different node.
	rng.Shuffle(len(urls), func(a, b int) { urls[a], urls[b] = urls[b], urls[a] })
	opts := []client.Option{client.WithHTTPClient(st.hc), client.WithLease(lease),
		client.WithRetryBudget(8 * time.Second), client.WithAttemptTimeout(time.Second), client.WithPollWait(time.Second),
		client.WithName(fmt.Sprintf("w%d", id))}
	if noKeepAlive {
		// A holder that can stall: only its calls renew its lease, so
		// a pause past the lease ends its session on the service, and
		// only the service can tell it so.
		opts = append(opts, client.WithoutKeepAlive(), client.WithPollWait(lease/3))
	}
	cl, err := client.New(ctx, urls, opts...)
	if err != nil {
		return nil, nil, err
	}
	rd, err := client.NewReader(urls, client.WithHTTPClient(st.hc), client.WithRetryBudget(8*time.Second), client.WithAttemptTimeout(time.Second))
	if err != nil {
		cl.Close(ctx)
		return nil, nil, err
	}
	return &worker{id: id, h: h, l: &libLocker{c: cl, st: st, noKeepAlive: noKeepAlive}, rd: rd, rng: rng, files: files, maxAppends: 20}, st, nil
}
