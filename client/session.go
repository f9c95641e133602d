package client

import (
	"sync"
	"time"
)

// session is one server session: its credentials, its request numbering
// and what the client knows of its lease.
type session struct {
	id     uint64
	secret string

	mu       sync.Mutex
	lease    time.Duration
	next     uint64              // the next sequence number to hand out
	inflight map[uint64]struct{} // numbers handed out whose final answer is not known
	expired  bool
	aliveAt  time.Time // when the last request that proved the lease was sent
}

func newSession(id uint64, secret string, lease time.Duration, sentAt time.Time) *session {
	return &session{
		id:       id,
		secret:   secret,
		lease:    lease,
		next:     1,
		inflight: make(map[uint64]struct{}),
		aliveAt:  sentAt,
	}
}

// begin hands out the next sequence number and counts it as in flight.
func (s *session) begin() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.next
	s.next++
	s.inflight[seq] = struct{}{}
	return seq
}

// end records that the client needs no more answers for seq: it has the
// final one, or it gave the request up and will never repeat it.
func (s *session) end(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inflight, seq)
}

// ackedBelow is the acknowledgement sent with every request: the lowest
// sequence number still in flight, or the next one when none is. The server
// may forget the answers below it.
func (s *session) ackedBelow() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	low := s.next
	for seq := range s.inflight {
		low = min(low, seq)
	}
	return low
}

// renewed records a keepalive answer to a request sent at sentAt.
func (s *session) renewed(sentAt time.Time, lease time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lease > 0 {
		s.lease = lease
	}
	if sentAt.After(s.aliveAt) {
		s.aliveAt = sentAt
	}
}

// silentFor reports how long ago the last request that proved the lease
// was sent, and the lease.
func (s *session) silentFor(now time.Time) (silence, lease time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return now.Sub(s.aliveAt), s.lease
}

func (s *session) leaseLength() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lease
}

func (s *session) markExpired() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expired = true
}

func (s *session) isExpired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expired
}
