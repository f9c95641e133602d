package robustness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/faultinject"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// The abandoning client: an in-process client of the Go library whose
// appends are now and then abandoned mid-retry, and which then carries on
// with ordinary lock cycles in the same session. Abandoned appends never
// reach the service (their requests are dropped) until either the append's
// context times out, or the lock is lost: the keepalives' answers are
// dropped too, so that the client gives the grant up for want of answers
// while the service, which did get the keepalives, keeps the session. The
// client must resolve or give up an abandoned request's sequence number;
// one left unanswered for good stops the session's acknowledgement
// (acked_below) for good, the service keeps every later outcome, and after
// 1024 of them refuses every request of the session with TOO_MANY_REQUESTS,
// while its keepalives still hold the lock it may have.

const (
	// abandonWindow and abandonIdle make the check of a stuck
	// acknowledgement: a sequence number the client has stopped sending
	// for abandonIdle, still unacknowledged abandonWindow requests later.
	// A client that resolves it in the background sends it again within
	// a retry backoff; one that gives it up acknowledges past it at once.
	abandonWindow = 16
	abandonIdle   = 5 * time.Second
	// maxHold is longer than any critical section of the workload: a
	// grant held longer keeps everyone else from the lock.
	maxHold = 30 * time.Second
)

// abandonLocker is the abandoning client's locker.
type abandonLocker struct {
	libLocker
	id    int
	h     *history
	rng   *rand.Rand
	watch *seqWatch

	// every is how often a section has an abandoned append after the
	// first one (one in every); 0: only the first.
	every    int
	sections int
	// The current section's appends so far, and which one is abandoned
	// (0: none), how.
	appends, abandonAt int
	mode               string
	mu                 sync.Mutex
	tooMany            bool
}

func (a *abandonLocker) acquire(ctx context.Context) (uint64, uint64, outcome, error) {
	a.sections++
	a.appends = 0
	// The first abandoned append comes early in every run, then about one
	// section in every has one (if it gets that far).
	a.abandonAt, a.mode = 0, ""
	switch {
	case a.sections == 2:
		a.abandonAt, a.mode = 1, "lost"
	case a.sections > 2 && a.every > 0 && a.rng.IntN(a.every) == 0:
		a.abandonAt, a.mode = 1+a.rng.IntN(4), "lost"
		if a.rng.IntN(2) == 0 {
			a.mode = "timeout"
		}
	}
	token, session, res, err := a.libLocker.acquire(ctx)
	a.note(err)
	return token, session, res, err
}

func (a *abandonLocker) append(ctx context.Context, file, data string) (outcome, error) {
	a.appends++
	if a.appends == a.abandonAt {
		return a.abandon(a.mode, file, data)
	}
	res, err := a.libLocker.append(ctx, file, data)
	a.note(err)
	return res, err
}

func (a *abandonLocker) release(ctx context.Context) (outcome, error) {
	res, err := a.libLocker.release(ctx)
	a.note(err)
	return res, err
}

func (a *abandonLocker) abort(ctx context.Context) bool {
	if a.noKeepAlive {
		panic("the abandoning client has keepalive")
	}
	select {
	case <-a.lk.Lost():
		a.note(a.lk.Abort(ctx))
		return false
	default:
	}
	err := a.lk.Abort(ctx)
	a.note(err)
	return err == nil
}

// abandon sends an append whose every request is dropped, until its
// context times out (timeout), or until the lock is lost because no
// keepalive answer comes back either (lost).
func (a *abandonLocker) abandon(mode, file, data string) (outcome, error) {
	lk := a.lk
	st := a.st
	calls := st.faults.Calls("AppendFile")
	st.faults.Inject("AppendFile", 0, faultinject.DropRequest)
	timeout := 700 * time.Millisecond
	if mode == "lost" {
		st.faults.Inject("KeepAlive", 0, faultinject.DropResponse)
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(lk.Context(), timeout)
	err := lk.Append(ctx, file, []byte(data))
	cancel()
	st.faults.Clear()
	kind := "abandon-append-timeout"
	if mode == "lost" {
		kind = "abandon-append-lock-lost"
		select {
		case <-lk.Lost():
		default:
			kind = "abandon-append-lock-kept"
		}
	}
	a.h.addFault(kind, "w%d (session %d) token %d: %d attempts dropped: %v", a.id, a.c.ClientID(), lk.Token(), st.faults.Calls("AppendFile")-calls, err)
	a.note(err)
	if err == nil {
		// Every attempt was dropped: the append cannot have succeeded.
		err = errors.New("an abandoned append succeeded")
		a.h.addViolation("w%d: %v", a.id, err)
	}
	return classify(err), err
}

// note reports the first TOO_MANY_REQUESTS refusal: from then on the
// session can change nothing.
func (a *abandonLocker) note(err error) {
	if !errors.Is(err, client.ErrTooManyRequests) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tooMany {
		return
	}
	a.tooMany = true
	a.h.addViolation("w%d (session %d) is refused with TOO_MANY_REQUESTS after %d requests in its session (%v): it can change nothing any more, and its keepalives keep any grant it holds",
		a.id, a.c.ClientID(), a.watch.sentIn(a.c.ClientID()), err)
}

// newAbandoner opens the abandoning client through the proxies. Its lease
// is short, so that a lapse of keepalive answers loses the lock fast, but
// not so short that a busy machine loses it in ordinary cycles.
func newAbandoner(ctx context.Context, id int, h *history, c *cluster, rng *rand.Rand, files []string, rd *client.Reader) (*worker, *abandonLocker, error) {
	st := newStack(c.hostMap())
	watch := &seqWatch{next: st.faults, h: h}
	st.hc = &http.Client{Transport: watch}
	urls := c.urls()
	rng.Shuffle(len(urls), func(a, b int) { urls[a], urls[b] = urls[b], urls[a] })
	cl, err := client.New(ctx, urls, client.WithHTTPClient(st.hc), client.WithLease(2*time.Second),
		client.WithRetryBudget(8*time.Second), client.WithAttemptTimeout(time.Second), client.WithPollWait(time.Second),
		client.WithName(fmt.Sprintf("w%d-abandoning", id)))
	if err != nil {
		return nil, nil, err
	}
	a := &abandonLocker{libLocker: libLocker{c: cl, st: st}, id: id, h: h, rng: rng, watch: watch, every: 5}
	// Long sections: many requests per lock cycle.
	return &worker{id: id, h: h, l: a, rd: rd, rng: rng, files: files, maxAppends: 40}, a, nil
}

// seqWatch records the sequence number and acknowledgement of every
// numbered request a client makes (above the fault injection, so dropped
// attempts count as sent).
type seqWatch struct {
	next http.RoundTripper
	h    *history

	mu   sync.Mutex
	sent []sentSeq
}

type sentSeq struct {
	at           int64
	session      uint64
	seq, ackedBy uint64
	method       string
}

// numbered is what every numbered request has.
type numbered interface {
	proto.Message
	GetClientId() uint64
	GetSeq() uint64
	GetAckedBelow() uint64
}

func (w *seqWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	var msg numbered
	switch method := path.Base(req.URL.Path); method {
	case "AppendFile":
		msg = new(dlmv1.AppendFileRequest)
	case "LockAcquire":
		msg = new(dlmv1.LockAcquireRequest)
	case "LockRelease":
		msg = new(dlmv1.LockReleaseRequest)
	case "Close":
		msg = new(dlmv1.CloseRequest)
	}
	if msg != nil && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		// The Connect protocol sends a unary request as the bare message.
		if proto.Unmarshal(body, msg) == nil {
			w.mu.Lock()
			w.sent = append(w.sent, sentSeq{at: w.h.now(), session: msg.GetClientId(), seq: msg.GetSeq(), ackedBy: msg.GetAckedBelow(), method: path.Base(req.URL.Path)})
			w.mu.Unlock()
		}
	}
	return w.next.RoundTrip(req)
}

// sentIn counts the distinct sequence numbers sent in a session.
func (w *seqWatch) sentIn(session uint64) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	seqs := make(map[uint64]bool)
	for _, s := range w.sent {
		if s.session == session {
			seqs[s.seq] = true
		}
	}
	return len(seqs)
}

// check finds, per session, a sequence number the client stopped sending
// (abandoned) without ever acknowledging past it, while it went on with
// abandonWindow newer requests: the session's outcomes then pile up on the
// service towards TOO_MANY_REQUESTS.
func (w *seqWatch) check(worker int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var v []string
	type key struct{ session, seq uint64 }
	last := make(map[key]int64)
	reported := make(map[uint64]bool)
	sent := make(map[uint64]int) // requests per session
	maxSeq := make(map[uint64]uint64)
	for _, s := range w.sent {
		sent[s.session]++
		maxSeq[s.session] = max(maxSeq[s.session], s.seq)
		last[key{s.session, s.seq}] = s.at
		if reported[s.session] || s.seq < s.ackedBy+abandonWindow {
			continue
		}
		at, ok := last[key{s.session, s.ackedBy}]
		if !ok || time.Duration(s.at-at) < abandonIdle {
			continue
		}
		reported[s.session] = true
		v = append(v, fmt.Sprintf("w%d (session %d) abandoned request seq %d: last sent at %v, still unacknowledged at %v by request seq %d (acked_below=%d); the service keeps every outcome after it and refuses the session with TOO_MANY_REQUESTS after 1024",
			worker, s.session, s.ackedBy, time.Duration(at).Round(time.Millisecond), time.Duration(s.at).Round(time.Millisecond), s.seq, s.ackedBy))
	}
	return v
}

// stats says how many numbered requests the client made, in how many
// sessions, and the most in one session.
func (w *seqWatch) stats() (requests, sessions int, most uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := make(map[uint64]uint64)
	for _, s := range w.sent {
		seen[s.session] = max(seen[s.session], s.seq)
	}
	for _, m := range seen {
		requests += int(m)
		most = max(most, m)
	}
	return requests, len(seen), most
}

// checkHolds finds a grant that the servers showed held for longer than
// maxHold: nobody else could take the lock meanwhile.
func checkHolds(h *history) []string {
	type span struct {
		holder      uint64
		first, last int64
	}
	spans := make(map[uint64]*span)
	for _, s := range h.samples {
		if s.Token == 0 {
			continue
		}
		sp, ok := spans[s.Token]
		if !ok {
			spans[s.Token] = &span{holder: s.Holder, first: s.At, last: s.At}
			continue
		}
		sp.first, sp.last = min(sp.first, s.At), max(sp.last, s.At)
	}
	tokens := make([]uint64, 0, len(spans))
	for t := range spans {
		tokens = append(tokens, t)
	}
	sort.Slice(tokens, func(a, b int) bool { return tokens[a] < tokens[b] })
	var v []string
	for _, t := range tokens {
		sp := spans[t]
		if d := time.Duration(sp.last - sp.first); d > maxHold {
			v = append(v, fmt.Sprintf("token %d stayed with session %d for %v (from %v): nobody else could take the lock", t, sp.holder, d.Round(time.Millisecond), time.Duration(sp.first).Round(time.Millisecond)))
		}
	}
	return v
}
