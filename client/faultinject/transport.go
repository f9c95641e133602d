package faultinject

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"sync"
	"time"
)

// ErrRequestDropped is returned for a call whose request was lost: the
// server never saw it.
var ErrRequestDropped = errors.New("faultinject: request dropped")

// ErrResponseDropped is returned for a call whose response was lost: the
// server ran the call, but its answer never reached the caller.
var ErrResponseDropped = errors.New("faultinject: response dropped")

type kind int

const (
	dropRequest kind = iota + 1
	dropResponse
	duplicate
	delay
	hold
)

// Fault is one thing that goes wrong with a call. Several faults may apply to
// the same call: the waiting ones (Delay, Hold) first, in the order they were
// injected, then the delivery ones (DropRequest, DropResponse, Duplicate).
type Fault struct {
	kind kind
	d    time.Duration
	gate <-chan struct{}
}

// DropRequest loses the request: it is never sent, and the caller gets a
// transport error, as when a connection breaks before the request leaves.
var DropRequest = Fault{kind: dropRequest}

// DropResponse loses the response: the request is sent, the server runs it,
// its whole answer is read and thrown away, and the caller gets a transport
// error. The retry must find the original outcome.
var DropResponse = Fault{kind: dropResponse}

// Duplicate sends the request twice: the second copy leaves after the answer
// to the first has arrived, and the caller gets the first answer. The server
// must run it once.
var Duplicate = Fault{kind: duplicate}

// Delay holds the request for d before sending it. If the caller gives up
// first, the caller gets its context's error at once and the request is
// still sent when d has passed, like a slow packet.
func Delay(d time.Duration) Fault { return Fault{kind: delay, d: d} }

// Hold keeps the request until gate is closed, then sends it. If the caller
// gives up first (its attempt timed out), the caller gets its context's
// error at once and the request is still sent when gate closes, detached
// from the caller. Tests use it to make a request arrive "after the lease"
// without sleeping.
func Hold(gate <-chan struct{}) Fault { return Fault{kind: hold, gate: gate} }

// String names the fault, for test failure messages.
func (f Fault) String() string {
	switch f.kind {
	case dropRequest:
		return "DropRequest"
	case dropResponse:
		return "DropResponse"
	case duplicate:
		return "Duplicate"
	case delay:
		return fmt.Sprintf("Delay(%v)", f.d)
	case hold:
		return "Hold"
	}
	return "Fault(none)"
}

func (f Fault) waits() bool { return f.kind == delay || f.kind == hold }

// Transport is an http.RoundTripper that injects faults into chosen calls
// and passes every other call to Base unchanged. It is safe for concurrent
// use; rules may be added while calls are in flight.
type Transport struct {
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper

	mu       sync.Mutex
	rules    []rule
	calls    map[string]int
	started  map[callKey]chan struct{}
	finished map[callKey]chan struct{}
	detached sync.WaitGroup
}

type rule struct {
	method string
	nth    int
	fault  Fault
}

type callKey struct {
	method string
	n      int
}

// Inject adds faults to the nth call (counted from 1) of method, the last
// element of the procedure's path such as "AppendFile"; nth 0 means every
// call of method. Calls already started are not affected.
func (t *Transport) Inject(method string, nth int, faults ...Fault) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range faults {
		t.rules = append(t.rules, rule{method: method, nth: nth, fault: f})
	}
}

// Clear removes every rule, so that later calls pass unharmed.
func (t *Transport) Clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rules = nil
}

// Calls reports how many calls of method have started.
func (t *Transport) Calls(method string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.calls[method]
}

// Started returns a channel that is closed when the nth call of method
// reaches the transport, before any fault applies. Tests wait on it instead
// of sleeping.
func (t *Transport) Started(method string, n int) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return chanFor(&t.started, callKey{method, n})
}

// Finished returns a channel that is closed when the nth call of method is
// over as far as the network goes: its answer was handed to the caller or
// thrown away, it was dropped, or (for a held or delayed call whose caller
// gave up) its late copy was sent and answered.
func (t *Transport) Finished(method string, n int) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return chanFor(&t.finished, callKey{method, n})
}

// Wait blocks until every late copy of a held or delayed request has been
// sent and answered. A held request whose gate is never closed blocks Wait.
func (t *Transport) Wait() { t.detached.Wait() }

func chanFor(m *map[callKey]chan struct{}, k callKey) chan struct{} {
	if *m == nil {
		*m = make(map[callKey]chan struct{})
	}
	ch, ok := (*m)[k]
	if !ok {
		ch = make(chan struct{})
		(*m)[k] = ch
	}
	return ch
}

func (t *Transport) base() http.RoundTripper {
	if t.Base == nil {
		return http.DefaultTransport
	}
	return t.Base
}

// begin counts the call and returns its number and the faults that apply.
func (t *Transport) begin(method string) (int, []Fault) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.calls == nil {
		t.calls = make(map[string]int)
	}
	t.calls[method]++
	n := t.calls[method]
	var faults []Fault
	for _, r := range t.rules {
		if r.method == method && (r.nth == 0 || r.nth == n) {
			faults = append(faults, r.fault)
		}
	}
	close(chanFor(&t.started, callKey{method, n}))
	return n, faults
}

func (t *Transport) finish(method string, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	close(chanFor(&t.finished, callKey{method, n}))
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	method := path.Base(req.URL.Path)
	// The body is buffered so that it can be sent twice, or later than the
	// caller's own request lives.
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("faultinject: read request body: %w", err)
		}
		body = b
	}
	n, faults := t.begin(method)
	c := &call{t: t, req: req, body: body, faults: faults}

	for i, f := range faults {
		if !f.waits() {
			continue
		}
		if !wait(req.Context(), f) {
			// The caller gave up, but the request is still "in the network":
			// deliver it later, detached from the caller.
			t.detached.Add(1)
			go func() {
				defer t.detached.Done()
				defer t.finish(method, n)
				ctx := context.WithoutCancel(req.Context())
				for _, g := range faults[i:] {
					if g.waits() {
						wait(ctx, g)
					}
				}
				if resp, err := c.deliver(ctx); err == nil {
					discard(resp)
				}
			}()
			return nil, fmt.Errorf("faultinject: %s held: %w", method, req.Context().Err())
		}
	}
	defer t.finish(method, n)
	return c.deliver(req.Context())
}

// wait applies one waiting fault and reports whether it ended before ctx.
func wait(ctx context.Context, f Fault) bool {
	switch f.kind {
	case delay:
		timer := time.NewTimer(f.d)
		defer timer.Stop()
		select {
		case <-timer.C:
			return true
		case <-ctx.Done():
			return false
		}
	case hold:
		select {
		case <-f.gate:
			return true
		case <-ctx.Done():
			return false
		}
	}
	return true
}

type call struct {
	t      *Transport
	req    *http.Request
	body   []byte
	faults []Fault
}

func (c *call) has(k kind) bool {
	for _, f := range c.faults {
		if f.kind == k {
			return true
		}
	}
	return false
}

func (c *call) send(ctx context.Context) (*http.Response, error) {
	r := c.req.Clone(ctx)
	r.Body = io.NopCloser(bytes.NewReader(c.body))
	r.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(c.body)), nil
	}
	r.ContentLength = int64(len(c.body))
	return c.t.base().RoundTrip(r)
}

func (c *call) deliver(ctx context.Context) (*http.Response, error) {
	if c.has(dropRequest) {
		return nil, ErrRequestDropped
	}
	resp, err := c.send(ctx)
	if err != nil {
		return nil, err
	}
	if c.has(dropResponse) {
		discard(resp)
		return nil, ErrResponseDropped
	}
	if c.has(duplicate) {
		// Read the first answer completely (trailers included) before the
		// copy leaves, so the copy is a true duplicate arriving after it.
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		if second, err := c.send(ctx); err == nil {
			discard(second)
		}
	}
	return resp, nil
}

func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
