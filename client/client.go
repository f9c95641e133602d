package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// compressMinBytes is the smallest message the client compresses (when it
// compresses at all) and the server compresses for it: the server's
// service.CompressMinBytes, which the client does not import.
const compressMinBytes = 1024

// Client is one session with a dlm service. It is safe for concurrent use.
// A session holds at most one grant of each lock (the default lock and any
// number of named ones): processes that need to compete for a lock each need
// their own Client.
type Client struct {
	// Reader gives the Client ReadFile, ReadFileRange and Status.
	*Reader

	// renewMu makes sure only one caller opens a replacement session.
	renewMu sync.Mutex

	mu        sync.Mutex
	sess      *session
	held      map[string]*Lock // the last grant of each lock handed out, until released
	acquiring map[string]int   // Acquire calls in progress, per lock
	releasing int              // Release and Abort calls in progress
	// changes counts grants, releases and Acquire calls starting or ending,
	// so a keepalive answer is judged only against the state it was sent in:
	// one sent before a grant would otherwise report a token the client has
	// just replaced.
	changes uint64
	closed  bool

	stopKeepAlive context.CancelFunc
	keepAliveDone chan struct{}
	// hub is shared with the process's other Clients of the same servers
	// (nil without keepalive).
	hub *hub

	closeOnce sync.Once
	closeErr  error
}

// New opens a session with the service at endpoints, a list of base URLs
// such as "http://127.0.0.1:7070" (see ParseEndpoints). With a replicated
// cluster, list every server: the client finds the leader by itself. ctx
// bounds the opening only, not the session's life; end the session with
// Close.
func New(ctx context.Context, endpoints []string, opts ...Option) (*Client, error) {
	o, err := readOptions(endpoints, opts)
	if err != nil {
		return nil, err
	}
	var h *hub
	if o.keepAlive {
		// The sessions of this process share connections and one Pulse
		// stream to these servers.
		h = joinHub(endpoints, o)
		o.httpClient = h.hc
	}
	c := &Client{Reader: newReader(endpoints, o), hub: h, held: make(map[string]*Lock), acquiring: make(map[string]int)}
	s, err := c.open(ctx)
	if err != nil {
		if h != nil {
			h.leave()
		}
		return nil, err
	}
	c.sess = s
	if o.keepAlive {
		kctx, cancel := context.WithCancel(context.Background())
		c.stopKeepAlive = cancel
		c.keepAliveDone = make(chan struct{})
		go c.keepAlive(kctx)
	}
	return c, nil
}

// open starts a new session with Init.
func (c *Client) open(ctx context.Context) (*session, error) {
	var (
		resp   *dlmv1.InitResponse
		sentAt time.Time
	)
	err := c.r.do(ctx, "Init", 0, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		sentAt = time.Now()
		r, err := api.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{
			LeaseMs: uint32(c.o.lease / time.Millisecond),
			Name:    c.o.name,
		}))
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	if err != nil {
		return nil, err
	}
	lease := time.Duration(resp.GetLeaseMs()) * time.Millisecond
	c.log.Debug("dlm: session opened", "client_id", resp.GetClientId(), "lease", lease)
	return newSession(resp.GetClientId(), resp.GetSecret(), lease, sentAt), nil
}

// ClientID returns the id of the current session. It changes when Acquire
// replaces an expired session.
func (c *Client) ClientID() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess.id
}

// current returns the current session, which may have expired.
func (c *Client) current() (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	return c.sess, nil
}

// liveSession returns the current session, or opens a new one when it has
// expired.
func (c *Client) liveSession(ctx context.Context) (*session, error) {
	c.renewMu.Lock()
	defer c.renewMu.Unlock()
	s, err := c.current()
	if err != nil {
		return nil, err
	}
	if !s.isExpired() {
		return s, nil
	}
	ns, err := c.open(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	c.sess = ns
	c.log.Info("dlm: session expired; opened a new one", "old_client_id", s.id, "client_id", ns.id)
	return ns, nil
}

// mutate runs one numbered request of session s. call builds and sends it
// for the sequence number and acknowledgement it is given. When keep is not
// nil and the outcome stays unknown (retries ran out), the number stays in
// flight and is handed to keep, so that a repeat of the same request can
// reuse it; otherwise the number is finished on return.
func (c *Client) mutate(ctx context.Context, op string, s *session, seq uint64, timeout time.Duration,
	call func(ctx context.Context, api dlmv1connect.LockServiceClient, seq, ackedBelow uint64) error,
	keep func(seq uint64),
) error {
	if seq == 0 {
		seq = s.begin()
	}
	err := c.r.do(ctx, op, timeout, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		return call(ctx, api, seq, s.ackedBelow())
	})
	if r := new(retryError); keep != nil && errors.As(err, &r) {
		keep(seq)
	} else {
		s.end(seq)
	}
	switch reasonOf(err) {
	case dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED,
		dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN,
		dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET:
		s.markExpired()
	}
	return err
}

func (c *Client) closeSession(ctx context.Context, s *session) error {
	return c.mutate(ctx, "Close", s, 0, 0, func(ctx context.Context, api dlmv1connect.LockServiceClient, seq, acked uint64) error {
		_, err := api.Close(ctx, connect.NewRequest(&dlmv1.CloseRequest{
			ClientId: s.id, Secret: s.secret, Seq: seq, AckedBelow: acked,
		}))
		return err
	}, nil)
}

// Reader reads files and the service's status without opening a session:
// it writes nothing to the service's log, and (for Status without
// consistent) works while a cluster cannot commit. It retries and follows
// the leader like a Client. A Client includes one.
type Reader struct {
	o   options
	log *slog.Logger
	eps *endpoints
	r   *retrier
}

// NewReader returns a Reader for the service at endpoints (see New). Of the
// options, those about sessions and locks have no effect.
func NewReader(endpoints []string, opts ...Option) (*Reader, error) {
	o, err := readOptions(endpoints, opts)
	if err != nil {
		return nil, err
	}
	return newReader(endpoints, o), nil
}

func readOptions(endpoints []string, opts []Option) (options, error) {
	if len(endpoints) == 0 {
		return options{}, errors.New("dlm: no server endpoints given")
	}
	for _, e := range endpoints {
		if err := validateEndpoint(e); err != nil {
			return options{}, fmt.Errorf("dlm: endpoint %q: %w", e, err)
		}
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

func clientOptions(o options) []connect.ClientOption {
	// Lock calls' messages are tiny: compressing them costs CPU on both
	// sides and saves nothing (see service.CompressMinBytes).
	copts := []connect.ClientOption{connect.WithCompressMinBytes(compressMinBytes)}
	if o.grpc {
		copts = append(copts, connect.WithGRPC())
	}
	if o.token != "" {
		copts = append(copts, connect.WithInterceptors(bearer(o.token)))
	}
	return copts
}

func newReader(endpoints []string, o options) *Reader {
	if o.httpClient == nil {
		o.httpClient = defaultHTTPClient(o.tls)
	}
	copts := clientOptions(o)
	eps := newEndpoints(endpoints, func(u string) dlmv1connect.LockServiceClient {
		return dlmv1connect.NewLockServiceClient(o.httpClient, u, copts...)
	})
	return &Reader{
		o:   o,
		log: o.logger,
		eps: eps,
		r:   &retrier{eps: eps, budget: o.retryBudget, attemptTimeout: o.attemptTimeout, log: o.logger},
	}
}

// ReadFile returns the committed content of the file name ("file_0" to
// "file_99"). It reflects every release acknowledged before the call. It
// needs no lock, and on a Client it works after Close.
func (c *Reader) ReadFile(ctx context.Context, name string) ([]byte, error) {
	first, err := c.ReadFileRange(ctx, name, 0, 0)
	if err != nil {
		return nil, err
	}
	// Files only grow, so the first answer's size names a prefix that never
	// changes: read up to it, in as many pieces as the server's limit needs.
	data := first.GetData()
	for size := first.GetSize(); int64(len(data)) < size; {
		next, err := c.ReadFileRange(ctx, name, int64(len(data)), 0)
		if err != nil {
			return nil, err
		}
		if len(next.GetData()) == 0 {
			break
		}
		data = append(data, next.GetData()...)
	}
	if size := first.GetSize(); int64(len(data)) > size {
		data = data[:size]
	}
	return data, nil
}

// ReadFileRange returns up to limit committed bytes of the file name from
// offset (negative: counted back from the end; limit 0: the server's limit),
// with the offset they start at and the file's size.
func (c *Reader) ReadFileRange(ctx context.Context, name string, offset, limit int64) (*dlmv1.ReadFileResponse, error) {
	var resp *dlmv1.ReadFileResponse
	err := c.r.do(ctx, "ReadFile", 0, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		r, err := api.ReadFile(ctx, connect.NewRequest(&dlmv1.ReadFileRequest{File: name, Offset: offset, Limit: limit}))
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	return resp, err
}

// Status describes the service: the answering node, the lock, its queue, the
// sessions and the files. With consistent set the leader answers after
// confirming its leadership, so the answer is up to date; otherwise the
// first reachable server answers from its own state.
//
// The answer lists one page of the sessions and waiters (the first 100);
// SessionCount and the lock's QueueLength count them all. StatusPage asks
// for other pages.
func (c *Reader) Status(ctx context.Context, consistent bool) (*dlmv1.StatusResponse, error) {
	return c.StatusPage(ctx, &dlmv1.StatusRequest{Consistent: consistent})
}

// StatusPage is Status with every field of the request: a page size (at most
// 1000), the page token of a previous answer's NextPageToken, or a long poll
// (KnownStateIndex, WaitMs).
func (c *Reader) StatusPage(ctx context.Context, req *dlmv1.StatusRequest) (*dlmv1.StatusResponse, error) {
	var resp *dlmv1.StatusResponse
	err := c.r.do(ctx, "Status", 0, func(ctx context.Context, api dlmv1connect.LockServiceClient) error {
		r, err := api.Status(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	return resp, err
}

// Close ends the session: a held default lock is released and its critical
// section committed (with what Stage buffered), every other lock the session
// holds is released, places in queues are given up, and the keepalive stops. If that release fails (refused, or ErrUnavailable
// with its outcome unknown), Close returns its error without closing, so
// that nothing of the section commits in part; the lease then ends the
// session and the grant.
// Calling it again returns the first call's result. A session that had
// already expired closes without error.
func (c *Client) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		s, lk := c.sess, c.held[""]
		others := make([]*Lock, 0, len(c.held))
		for name, o := range c.held {
			if name != "" {
				others = append(others, o)
			}
		}
		c.mu.Unlock()
		if c.stopKeepAlive != nil {
			c.stopKeepAlive()
			<-c.keepAliveDone
		}
		var err error
		if !s.isExpired() {
			if lk != nil {
				// A close carries neither the appends Stage buffered nor
				// the section's counts: release first, so that the section
				// commits whole, as the client sent it (re-sending what a
				// new leader lacks). A refused release, or one whose
				// outcome is unknown, stops here, before a close could
				// commit part of the section: the lease then ends the
				// grant. A grant already lost has nothing to commit.
				if rerr := lk.Release(ctx); rerr != nil && !errors.Is(rerr, ErrLockExpired) && !errors.Is(rerr, ErrSessionExpired) {
					err = rerr
				}
			}
			if err == nil {
				err = c.closeSession(ctx, s)
			}
			if errors.Is(err, ErrSessionExpired) {
				err = nil
			}
		}
		// The session's end released (or, unclosed, will expire) the named
		// locks with it.
		for _, lk := range append(others, lk) {
			if lk == nil {
				continue
			}
			if err == nil {
				lk.end(stateReleased, errReleased)
			} else {
				lk.markLost(fmt.Errorf("%w: %w", ErrLockExpired, ErrClosed), false)
			}
		}
		if c.hub != nil {
			c.hub.leave()
		}
		c.closeErr = err
	})
	return c.closeErr
}
