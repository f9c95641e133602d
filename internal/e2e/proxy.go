package e2e

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// LinkMode is what a link does to the bytes that cross it.
type LinkMode int

const (
	LinkOK        LinkMode = iota
	LinkCut                // connections are closed and new ones refused
	LinkBlackhole          // connections stay open but nothing gets through until healed
)

// Link is the state of one path between two parties: healthy, cut or
// black-holed, with an added one-way delay. A partition is links set to
// LinkCut or LinkBlackhole; Set(LinkOK, 0) heals it.
type Link struct {
	mu    sync.Mutex
	mode  LinkMode
	delay time.Duration
	// changed is closed and replaced when the state changes, so that
	// copiers waiting on a black hole wake up.
	changed chan struct{}
	conns   map[net.Conn]struct{}
}

// NewLink returns a healthy link.
func NewLink() *Link {
	return &Link{changed: make(chan struct{}), conns: make(map[net.Conn]struct{})}
}

func (l *Link) state() (LinkMode, time.Duration, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode, l.delay, l.changed
}

// Set changes the link; cutting it closes every open connection on it.
func (l *Link) Set(mode LinkMode, delay time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mode, l.delay = mode, delay
	close(l.changed)
	l.changed = make(chan struct{})
	if mode == LinkCut {
		for c := range l.conns {
			c.Close()
		}
	}
}

func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mode == LinkCut {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

// Proxy is a TCP proxy in front of one node's port. Every connection
// belongs to a link, chosen by classify from the connection's first bytes
// (for Raft, the sender's advertised address in the RPC header), so that
// one listener can still cut a single node-to-node path.
type Proxy struct {
	ln       net.Listener
	target   string
	classify func(first []byte) *Link
	fallback *Link // for connections classify cannot place

	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// NewProxy listens on a loopback port of its own and forwards every
// connection to target, on the link classify picks from its first bytes
// (fallback when classify is nil or recognises none).
func NewProxy(target string, classify func([]byte) *Link, fallback *Link) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, classify: classify, fallback: fallback, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) own(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) disown(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	c.Close()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.own(c) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.disown(c)
			p.handle(c)
		}()
	}
}

// handle identifies the connection's link, dials the target and copies
// both ways under the link's rules until either side ends.
func (p *Proxy) handle(in net.Conn) {
	first, l := p.identify(in)
	if !l.track(in) {
		return
	}
	defer l.untrack(in)
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return
	}
	if !p.own(out) {
		return
	}
	defer p.disown(out)
	if !l.track(out) {
		return
	}
	defer l.untrack(out)
	done := make(chan struct{}, 2)
	go func() { pump(l, out, io.MultiReader(bytes.NewReader(first), in)); done <- struct{}{} }()
	go func() { pump(l, in, out); done <- struct{}{} }()
	<-done
	in.Close()
	out.Close()
	<-done
}

// identify reads the first bytes of a connection (bounded in size and
// time) until classify recognises them.
func (p *Proxy) identify(in net.Conn) ([]byte, *Link) {
	if p.classify == nil {
		return nil, p.fallback
	}
	buf := make([]byte, 0, 1024)
	deadline := time.Now().Add(2 * time.Second)
	in.SetReadDeadline(deadline)
	defer in.SetReadDeadline(time.Time{})
	for len(buf) < cap(buf) {
		n, err := in.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if l := p.classify(buf); l != nil {
			return buf, l
		}
		if err != nil {
			break
		}
	}
	return buf, p.fallback
}

// pump copies src to dst chunk by chunk, holding each chunk for the link's
// delay, holding it as long as the link is black-holed (as TCP would keep
// retransmitting into the void), and stopping when the link is cut.
func pump(l *Link, dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !l.pass() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
			}
			return
		}
	}
}

// pass waits until a chunk may cross the link: after the link's delay, and
// not while it is black-holed. It reports false once the link is cut. Every
// wait ends when the link changes, and the harness heals every link before
// it closes the proxies.
func (l *Link) pass() bool {
	for {
		mode, delay, changed := l.state()
		switch {
		case mode == LinkCut:
			return false
		case mode == LinkBlackhole:
			<-changed
			continue
		case delay > 0:
			// Fault schedule: the link's configured latency.
			t := time.NewTimer(delay)
			select {
			case <-t.C:
				return true
			case <-changed:
				t.Stop()
				continue
			}
		}
		return true
	}
}
