package robustness

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// linkMode is what a link does to the bytes that cross it.
type linkMode int

const (
	linkOK        linkMode = iota
	linkCut                // connections are closed and new ones refused
	linkBlackhole          // connections stay open but nothing gets through until healed
)

// link is the state of one path between two parties: healthy, cut or
// black-holed, with an added one-way delay.
type link struct {
	mu    sync.Mutex
	mode  linkMode
	delay time.Duration
	// changed is closed and replaced when the state changes, so that
	// copiers waiting on a black hole wake up.
	changed chan struct{}
	conns   map[net.Conn]struct{}
}

func newLink() *link {
	return &link{changed: make(chan struct{}), conns: make(map[net.Conn]struct{})}
}

func (l *link) state() (linkMode, time.Duration, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode, l.delay, l.changed
}

// set changes the link; cutting it closes every open connection on it.
func (l *link) set(mode linkMode, delay time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mode, l.delay = mode, delay
	close(l.changed)
	l.changed = make(chan struct{})
	if mode == linkCut {
		for c := range l.conns {
			c.Close()
		}
	}
}

func (l *link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mode == linkCut {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *link) untrack(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

// proxy is a TCP proxy in front of one node's port. Every connection
// belongs to a link, chosen by classify from the connection's first bytes
// (for Raft, the sender's advertised address in the RPC header), so that
// one listener can still cut a single node-to-node path.
type proxy struct {
	ln       net.Listener
	target   string
	classify func(first []byte) *link
	fallback *link // for connections classify cannot place

	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func newProxy(target string, classify func([]byte) *link, fallback *link) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: target, classify: classify, fallback: fallback, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *proxy) own(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) disown(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	c.Close()
}

func (p *proxy) serve() {
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
func (p *proxy) handle(in net.Conn) {
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
func (p *proxy) identify(in net.Conn) ([]byte, *link) {
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
func pump(l *link, dst io.Writer, src io.Reader) {
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
func (l *link) pass() bool {
	for {
		mode, delay, changed := l.state()
		switch {
		case mode == linkCut:
			return false
		case mode == linkBlackhole:
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
