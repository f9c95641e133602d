package service

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
)

// InitRate limits how fast one client address opens sessions: a token
// bucket per address, Rate tokens a second up to Burst.
type InitRate struct {
	// Rate is the sustained opens per second per address; 0 turns the limit
	// off.
	Rate float64
	// Burst is how many opens an address may make at once after a pause.
	Burst int
	// MaxAddresses bounds the table of addresses (0: 10000). Addresses
	// beyond it share one bucket until idle ones are forgotten.
	MaxAddresses int
}

// initLimiter keeps a token bucket per client address. A bucket that has
// refilled to Burst is forgotten when room is needed: it is the same as a
// new one.
type initLimiter struct {
	rate, burst float64
	max         int
	now         func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Prefix]*bucket
	overflow  bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newInitLimiter(r InitRate) *initLimiter {
	if r.Rate <= 0 {
		return nil
	}
	if r.MaxAddresses <= 0 {
		r.MaxAddresses = 10000
	}
	return &initLimiter{
		rate: r.Rate, burst: float64(max(r.Burst, 1)), max: r.MaxAddresses, now: time.Now,
		buckets: make(map[netip.Prefix]*bucket),
	}
}

// allow takes a token for the address addr (host:port) and, when there is
// none, says how long until there is.
func (l *initLimiter) allow(addr string) (bool, time.Duration) {
	key := addressKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max && now.Sub(l.lastSweep) >= time.Second {
			// At most one sweep a second: a flood of new addresses must
			// not make every open walk the table.
			l.lastSweep = now
			for k, o := range l.buckets {
				if l.refill(o, now) >= l.burst {
					delete(l.buckets, k)
				}
			}
		}
		if len(l.buckets) < l.max {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[key] = b
		} else {
			b = &l.overflow
		}
	}
	if l.refill(b, now) >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration(math.Ceil((1 - b.tokens) / l.rate * float64(time.Second)))
	return false, wait
}

// refund gives back the token of an open that opened nothing (the node was
// not the leader, the cluster had no quorum or was full), so that a client
// retrying through an election is not held back for it.
func (l *initLimiter) refund(addr string) {
	key := addressKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		b = &l.overflow
	}
	b.tokens = min(l.burst, b.tokens+1)
}

// refill adds the tokens earned since the bucket was last used.
func (l *initLimiter) refill(b *bucket, now time.Time) float64 {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	return b.tokens
}

// addressKey is the part of a client address that one client controls: the
// IPv4 address, or the /64 of an IPv6 one (a host gets a whole /64 and could
// otherwise pick a fresh address for every open).
func addressKey(addr string) netip.Prefix {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

func rateLimited(wait time.Duration) error {
	return &node.Error{
		Reason: dlmv1.ErrorReason_ERROR_REASON_INIT_RATE_LIMITED,
		Msg:    fmt.Sprintf("this address opens sessions faster than the server allows (--init-rate): nothing changed; retry in %s", wait.Round(time.Millisecond)),
	}
}
