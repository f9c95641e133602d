package service_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
	"github.com/dlm/dlm/server/service"
)

// pulseStream is one open Pulse stream whose messages a goroutine reads
// into a channel, so a test can wait for one with a deadline.
type pulseStream struct {
	t    *testing.T
	s    *connect.BidiStreamForClient[dlmv1.PulseRequest, dlmv1.PulseResponse]
	msgs chan *dlmv1.PulseResponse
	err  chan error
}

func openPulse(t *testing.T, c dlmv1connect.LockServiceClient) *pulseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := c.Pulse(ctx)
	p := &pulseStream{t: t, s: s, msgs: make(chan *dlmv1.PulseResponse, 1024), err: make(chan error, 1)}
	go func() {
		for {
			m, err := s.Receive()
			if err != nil {
				p.err <- err
				return
			}
			p.msgs <- m
		}
	}()
	t.Cleanup(func() {
		s.CloseRequest()
		cancel()
		// The reader ends with the stream: wait for it, bounded.
		select {
		case <-p.err:
		case <-time.After(10 * time.Second):
			t.Errorf("the Pulse reader did not end")
		}
	})
	return p
}

func creds(ss ...*session) []*dlmv1.SessionCredentials {
	var out []*dlmv1.SessionCredentials
	for _, s := range ss {
		out = append(out, &dlmv1.SessionCredentials{ClientId: s.id, Secret: s.secret})
	}
	return out
}

func (p *pulseStream) send(list []*dlmv1.SessionCredentials) {
	p.t.Helper()
	// A server that already ended the stream makes Send fail with io.EOF
	// (connect's rule); the reason is then read by ended.
	if err := p.s.Send(&dlmv1.PulseRequest{Sessions: list}); err != nil && !errors.Is(err, io.EOF) {
		p.t.Fatalf("Pulse send: %v", err)
	}
}

// next returns the next message, failing the test after a generous wait.
func (p *pulseStream) next() *dlmv1.PulseResponse {
	p.t.Helper()
	select {
	case m := <-p.msgs:
		return m
	case err := <-p.err:
		p.err <- err
		p.t.Fatalf("Pulse ended: %v", err)
	case <-time.After(10 * time.Second):
		p.t.Fatalf("no Pulse message within 10s")
	}
	return nil
}

// answer returns the next answer to a request, collecting the grants met
// on the way.
func (p *pulseStream) answer(grants *[]*dlmv1.PulseGrant) []*dlmv1.SessionPulse {
	p.t.Helper()
	for {
		m := p.next()
		if grants != nil {
			*grants = append(*grants, m.GetGranted()...)
		}
		if len(m.GetRenewed()) > 0 {
			return m.GetRenewed()
		}
	}
}

// ended waits for the stream's end and returns its error.
func (p *pulseStream) ended() error {
	p.t.Helper()
	for {
		select {
		case <-p.msgs:
		case err := <-p.err:
			p.err <- err
			return err
		case <-time.After(10 * time.Second):
			p.t.Fatalf("the Pulse stream did not end within 10s")
			return nil
		}
	}
}

func TestPulseRenewsAndRefusesEachSession(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			srv := servertest.Start(t, nil)
			c := newClient(srv, proto.opts)
			a, b, gone := open(t, c, 5000), open(t, c, 7000), open(t, c, 5000)
			if _, err := c.Close(context.Background(), connect.NewRequest(&dlmv1.CloseRequest{ClientId: gone.id, Secret: gone.secret, Seq: gone.next()})); err != nil {
				t.Fatal(err)
			}
			g, err := b.acquire(false, 0)
			if err != nil || !g.GetGranted() {
				t.Fatalf("acquire: %v %v", g, err)
			}
			p := openPulse(t, c)
			bad := &dlmv1.SessionCredentials{ClientId: a.id, Secret: "not-the-secret"}
			list := append(creds(a, b, gone), bad, &dlmv1.SessionCredentials{ClientId: 999999, Secret: "x"})
			p.send(list)
			got := p.answer(nil)
			want := []struct {
				id     uint64
				lease  uint32
				token  uint64
				reason dlmv1.ErrorReason
			}{
				{a.id, 5000, 0, 0},
				{b.id, 7000, g.GetToken(), 0},
				{gone.id, 0, 0, dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED},
				{a.id, 0, 0, dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET},
				{999999, 0, 0, dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN},
			}
			if len(got) != len(want) {
				t.Fatalf("renewed %d entries, want %d: %v", len(got), len(want), got)
			}
			for i, w := range want {
				r := got[i]
				if r.GetClientId() != w.id || r.GetLeaseMs() != w.lease || r.GetToken() != w.token || r.GetErrorReason() != w.reason {
					t.Errorf("entry %d = %v, want id %d lease %d token %d reason %v", i, r, w.id, w.lease, w.token, w.reason)
				}
			}
			// A second message on the same stream is answered the same way.
			p.send(creds(a))
			if got := p.answer(nil); len(got) != 1 || got[0].GetLeaseMs() != 5000 {
				t.Errorf("second answer = %v", got)
			}
		})
	}
}

// A Pulse alone keeps a session alive past several leases: it renews the
// lease on the leader as KeepAlive does.
func TestPulseKeepsTheLeaseAlive(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	// Leases long enough for a busy machine, short enough to run out.
	kept, idle := open(t, c, 800), open(t, c, 800)
	p := openPulse(t, c)
	deadline := time.Now().Add(30 * time.Second)
	for start := time.Now(); time.Since(start) < 2500*time.Millisecond; {
		p.send(creds(kept))
		if r := p.answer(nil); r[0].GetErrorReason() != 0 {
			t.Fatalf("renewal refused after %v: %v", time.Since(start), r[0])
		}
		if time.Now().After(deadline) {
			t.Fatal("renewals too slow")
		}
		time.Sleep(100 * time.Millisecond) // the client's renewal period, not a synchronisation
	}
	p.send(creds(kept, idle))
	r := p.answer(nil)
	if r[0].GetErrorReason() != 0 {
		t.Errorf("the renewed session: %v", r[0])
	}
	if r[1].GetErrorReason() != dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED {
		t.Errorf("the session nobody renewed: %v, want SESSION_EXPIRED", r[1])
	}
}

func TestPulseRefusesTooManySessionsInOneMessage(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	a := open(t, c, 0)
	p := openPulse(t, c)
	list := make([]*dlmv1.SessionCredentials, node.MaxPulseSessions+1)
	for i := range list {
		list[i] = &dlmv1.SessionCredentials{ClientId: a.id, Secret: a.secret}
	}
	p.send(list)
	err := p.ended()
	if connect.CodeOf(err) != connect.CodeInvalidArgument || reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT {
		t.Fatalf("1001 sessions: %v, want InvalidArgument", err)
	}
	// The limit itself is fine.
	p2 := openPulse(t, c)
	p2.send(list[:node.MaxPulseSessions])
	if got := p2.answer(nil); len(got) != node.MaxPulseSessions {
		t.Fatalf("1000 sessions: %d answers", len(got))
	}
}

func TestPulseNeedsAClientTokenWithAuthTokens(t *testing.T) {
	guard := auth.NewGuard(servertest.AdminToken, []auth.Credential{
		{Token: "client-token-0123456789abcdef", Role: auth.Client},
		{Token: "read-token-0123456789abcdefgh", Role: auth.Read},
	}, true)
	srv := servertest.StartGuarded(t, nil, guard)
	withToken := func(tok string) dlmv1connect.LockServiceClient {
		return dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), srv.URL, connect.WithInterceptors(auth.Bearer(tok)))
	}
	a := open(t, withToken("client-token-0123456789abcdef"), 0)
	for _, tc := range []struct {
		tok  string
		code connect.Code
	}{
		{"", connect.CodeUnauthenticated},
		{"wrong-token-0123456789abcdefgh", connect.CodeUnauthenticated},
		{"read-token-0123456789abcdefgh", connect.CodePermissionDenied},
	} {
		p := openPulse(t, withToken(tc.tok))
		p.send(creds(a))
		if err := p.ended(); connect.CodeOf(err) != tc.code {
			t.Errorf("token %q: %v, want %v", tc.tok, err, tc.code)
		}
	}
	p := openPulse(t, withToken("client-token-0123456789abcdef"))
	p.send(creds(a))
	if r := p.answer(nil); r[0].GetErrorReason() != 0 {
		t.Errorf("client token: %v", r[0])
	}
}

// A no_wait acquire returns queued at once, and its grant is pushed to the
// stream that last renewed the session, and to no other.
func TestPulseBringsNoWaitGrantsToTheirStream(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	holder, w1, w2 := open(t, c, 0), open(t, c, 0), open(t, c, 0)
	if g, err := holder.acquire(false, 0); err != nil || !g.GetGranted() {
		t.Fatalf("holder: %v %v", g, err)
	}
	pa, pb := openPulse(t, c), openPulse(t, c)
	pa.send(creds(w1))
	pa.answer(nil)
	pb.send(creds(w2))
	pb.answer(nil)
	noWait := func(s *session) uint64 {
		t.Helper()
		seq := s.next()
		start := time.Now()
		res, err := c.LockAcquire(context.Background(), connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: s.id, Secret: s.secret, Seq: seq, NoWait: true, WaitMs: 20000}))
		if err != nil || !res.Msg.GetQueued() || res.Msg.GetGranted() {
			t.Fatalf("no_wait acquire: %v %v", res, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("no_wait acquire took %v: it waited", d)
		}
		return seq
	}
	seq1, seq2 := noWait(w1), noWait(w2)
	rel, err := c.LockRelease(context.Background(), connect.NewRequest(&dlmv1.LockReleaseRequest{ClientId: holder.id, Secret: holder.secret, Seq: holder.next(), Token: 0}))
	if err != nil {
		t.Fatalf("release: %v %v", rel, err)
	}
	m := pa.next()
	if len(m.GetGranted()) != 1 || m.Granted[0].GetClientId() != w1.id || m.Granted[0].GetSeq() != seq1 || m.Granted[0].GetToken() == 0 {
		t.Fatalf("stream A got %v, want the grant of session %d seq %d", m, w1.id, seq1)
	}
	// The repeat with the same seq answers the grant too.
	res, err := c.LockAcquire(context.Background(), connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: w1.id, Secret: w1.secret, Seq: seq1, NoWait: true}))
	if err != nil || !res.Msg.GetGranted() || res.Msg.GetToken() != m.Granted[0].GetToken() {
		t.Fatalf("repeat: %v %v", res, err)
	}
	select {
	case m := <-pb.msgs:
		t.Fatalf("stream B got %v before its session's grant", m)
	default:
	}
	if _, err := c.LockRelease(context.Background(), connect.NewRequest(&dlmv1.LockReleaseRequest{ClientId: w1.id, Secret: w1.secret, Seq: w1.next(), Token: m.Granted[0].GetToken()})); err != nil {
		t.Fatal(err)
	}
	m = pb.next()
	if len(m.GetGranted()) != 1 || m.Granted[0].GetClientId() != w2.id || m.Granted[0].GetSeq() != seq2 {
		t.Fatalf("stream B got %v, want the grant of session %d seq %d", m, w2.id, seq2)
	}
}

// Waiters queued with no_wait are granted one by one in exactly the order
// they queued, and every grant reaches the stream.
func TestNoWaitWaitersAreGrantedInFIFOOrder(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	holder := open(t, c, 0)
	if g, err := holder.acquire(false, 0); err != nil || !g.GetGranted() {
		t.Fatal(g, err)
	}
	const n = 40
	waiters := make([]*session, n)
	for i := range waiters {
		waiters[i] = open(t, c, 0)
	}
	p := openPulse(t, c)
	p.send(creds(waiters...))
	p.answer(nil)
	byID := make(map[uint64]*session)
	for _, w := range waiters {
		byID[w.id] = w
		res, err := c.LockAcquire(context.Background(), connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: w.id, Secret: w.secret, Seq: w.next(), NoWait: true}))
		if err != nil || !res.Msg.GetQueued() {
			t.Fatal(res, err)
		}
	}
	cur, token := holder, uint64(0)
	for i := range n + 1 {
		if _, err := c.LockRelease(context.Background(), connect.NewRequest(&dlmv1.LockReleaseRequest{ClientId: cur.id, Secret: cur.secret, Seq: cur.next(), Token: token})); err != nil {
			t.Fatal(err)
		}
		if i == n {
			break
		}
		m := p.next()
		if len(m.GetGranted()) != 1 {
			t.Fatalf("grant %d: %v", i, m)
		}
		g := m.Granted[0]
		if g.GetClientId() != waiters[i].id {
			t.Fatalf("grant %d went to session %d, want %d (FIFO)", i, g.GetClientId(), waiters[i].id)
		}
		cur, token = byID[g.GetClientId()], g.GetToken()
	}
}

func TestPulseCapOnStreams(t *testing.T) {
	srv := servertest.Start(t, nil, service.WithMaxPulseStreams(1))
	c := newClient(srv, nil)
	a := open(t, c, 0)
	p1 := openPulse(t, c)
	p1.send(creds(a))
	p1.answer(nil)
	p2 := openPulse(t, c)
	p2.send(creds(a))
	err := p2.ended()
	if connect.CodeOf(err) != connect.CodeUnavailable || reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE {
		t.Fatalf("second stream: %v, want Unavailable", err)
	}
	// The first still works.
	p1.send(creds(a))
	if r := p1.answer(nil); r[0].GetErrorReason() != 0 {
		t.Fatal(r)
	}
}
