package node

import (
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/leadership"
	"github.com/dlm/dlm/server/lockstate"
)

// MaxPulseSessions bounds the sessions one Pulse message renews, so that one
// message holds the state machine's read lock only briefly.
const MaxPulseSessions = 1000

// pulseQueue is how many grants a Pulse stream may have waiting to be sent:
// far more than one client process waits for at once, and a stream that
// falls that far behind loses grants rather than hold up an apply (the
// client's repeated acquire finds them).
const pulseQueue = 1024

// Credentials name a session and prove the caller owns it.
type Credentials struct {
	ClientID uint64
	Secret   string
}

// Renewal is one session's answer to a keepalive: the lease, the default
// lock's token and every grant it holds when renewed, or why not.
type Renewal struct {
	ClientID uint64
	Lease    time.Duration
	Token    uint64
	Held     []lockstate.HeldLock
	Reason   dlmv1.ErrorReason
}

// Pulse is one client's stream of keepalives on this leader, and the way
// back for the grants of its sessions' no_wait acquires. It lives in one
// term: when the term ends, Lost is closed and the stream must end.
type Pulse struct {
	n    *Node
	term *leadership.Term
	l    *leadership.Listener
}

// OpenPulse starts a Pulse on this leader, or fails with NOT_LEADER.
func (n *Node) OpenPulse() (*Pulse, error) {
	t, err := n.leading()
	if err != nil {
		return nil, err
	}
	return &Pulse{n: n, term: t, l: n.lead.NewListener(pulseQueue)}, nil
}

// Lost is closed when this node stops leading in the Pulse's term.
func (p *Pulse) Lost() <-chan struct{} { return p.term.Lost() }

// Grants delivers the grants of no_wait acquires of the sessions this Pulse
// renewed.
func (p *Pulse) Grants() <-chan leadership.Granted { return p.l.C() }

// Dropped counts grants lost because the stream fell behind.
func (p *Pulse) Dropped() uint64 { return p.l.Dropped() }

// Err says why the Pulse must end: NOT_LEADER (naming the leader when
// known), or the node's fault.
func (p *Pulse) Err() error {
	t, err := p.n.leading()
	if err != nil {
		return err
	}
	if t != p.term {
		return fail(dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, "leadership changed: open a new stream")
	}
	return nil
}

// Close stops the Pulse's grants.
func (p *Pulse) Close() { p.n.lead.Unlisten(p.l) }

// Renew renews the leases of sessions in memory, under the rules of
// KeepAlive: each must authenticate, and a saturated session is not renewed.
// Each gets its own answer, in order; renewed sessions report their grants
// to this Pulse from now on. It fails as a whole only when this node no
// longer leads in the Pulse's term, or with more than MaxPulseSessions.
func (p *Pulse) Renew(sessions []Credentials) ([]Renewal, error) {
	if len(sessions) > MaxPulseSessions {
		return nil, fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT,
			"a Pulse message lists %d sessions; the limit is %d: send them in several messages", len(sessions), MaxPulseSessions)
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	out := make([]Renewal, len(sessions))
	// One view for the whole message: a message costs one read lock.
	p.n.fsm.View(func(m *lockstate.Machine) {
		for i, s := range sessions {
			r := Renewal{ClientID: s.ClientID}
			if r.Reason = m.Authenticate(s.ClientID, s.Secret); r.Reason == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
				info, _ := m.Session(s.ClientID)
				r.Lease = time.Duration(info.LeaseMs) * time.Millisecond
				r.Token = m.HeldToken(s.ClientID)
				r.Held = m.Held(s.ClientID)
				if m.Saturated(s.ClientID) {
					r.Reason = dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS
				}
			}
			out[i] = r
		}
	})
	for i := range out {
		r := &out[i]
		if r.Reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			r.Lease, r.Token, r.Held = 0, 0, nil
			continue
		}
		if !p.n.lead.Renew(r.ClientID, r.Lease) {
			r.Reason, r.Lease, r.Token, r.Held = dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED, 0, 0, nil
			continue
		}
		p.n.lead.Listen(p.l, r.ClientID)
	}
	// A lease the leader could not renew because its term just ended is
	// not an expiry: the whole message fails instead.
	if err := p.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
