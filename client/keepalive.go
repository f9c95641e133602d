package client

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// keepAlive renews the session's lease every third of it until ctx ends,
// and watches the held grants: each is lost when the service says the
// session expired or names another grant of its lock (or none), or when no
// renewal was answered for a whole lease.
func (c *Client) keepAlive(ctx context.Context) {
	defer close(c.keepAliveDone)
	timer := time.NewTimer(c.keepAliveInterval())
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if c.keepAliveOnce(ctx) {
			failures = 0
			timer.Reset(c.keepAliveInterval())
			continue
		}
		failures++
		// Retry soon: during a failover the new leader must hear from the
		// session before the lease runs out.
		timer.Reset(min(backoff(failures), c.keepAliveInterval()/2))
	}
}

func (c *Client) keepAliveInterval() time.Duration {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	return max(s.leaseLength()/3, 10*time.Millisecond)
}

// keepAliveOnce sends one KeepAlive and reports whether it was answered.
func (c *Client) keepAliveOnce(ctx context.Context) bool {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s.isExpired() {
		// Nothing to keep alive until Acquire opens a new session.
		return true
	}
	sent := time.Now()
	c.mu.Lock()
	changes := c.changes
	c.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, min(c.o.attemptTimeout, max(s.leaseLength()/3, 10*time.Millisecond)))
	u, lease, held, err := c.renew(actx, s)
	cancel()
	if ctx.Err() != nil {
		return true
	}
	if err == nil {
		s.renewed(sent, lease)
		c.checkGrants(s, held, changes)
		return true
	}
	switch reasonOf(err) {
	case dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED,
		dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN,
		dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET:
		s.markExpired()
		c.loseGrant(s, &sessionGoneError{newError(err)}, true)
		return true
	case dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS:
		// The service renews no lease of a session that cannot make
		// progress: it expires within a lease, and its grant with it.
		c.log.Warn("dlm: the service refuses to renew the session", "client_id", s.id, "err", err)
		c.loseGrant(s, fmt.Errorf("%w: %w", ErrLockExpired, newError(err)), false)
		return false
	}
	c.log.Debug("dlm: keepalive failed", "client_id", s.id, "endpoint", u, "err", err)
	if retryable(err) && u != "" {
		c.eps.failed(u, err)
	}
	if silence, lease := s.silentFor(time.Now()); silence >= lease {
		c.loseGrant(s, fmt.Errorf("%w: no keepalive answered for %v (lease %v): %w", ErrLockExpired, silence.Round(time.Millisecond), lease, err), false)
	}
	return false
}

// checkGrants compares the grants the service says session s holds with
// the ones the client knows of, lock by lock, when nothing changed since the
// keepalive was sent.
func (c *Client) checkGrants(s *session, held []*dlmv1.HeldLock, changes uint64) {
	c.mu.Lock()
	changed := c.changes != changes || c.releasing > 0
	locks := make([]*Lock, 0, len(c.held))
	for _, lk := range c.held {
		locks = append(locks, lk)
	}
	acquiring := make(map[string]bool, len(c.acquiring))
	for name := range c.acquiring {
		acquiring[name] = true
	}
	c.mu.Unlock()
	if changed {
		return
	}
	byName := make(map[string]*dlmv1.HeldLock, len(held))
	for _, h := range held {
		byName[h.GetLock()] = h
	}
	for _, lk := range locks {
		if lk.s != s {
			continue
		}
		if state, _ := lk.current(); state != stateHeld {
			continue
		}
		h := byName[lk.name]
		delete(byName, lk.name)
		if h.GetToken() != lk.token {
			lk.markLost(fmt.Errorf("%w: the service reports grant %d of %s, not %d", ErrLockExpired, h.GetToken(), describeLock(lk.name), lk.token), true)
		}
	}
	// A grant nobody here uses (an Acquire that gave up after the service
	// granted it, a Lock lost only for want of keepalive answers) would
	// hold the lock for nobody while this session stays alive: give it up.
	for name, h := range byName {
		if h.GetToken() == 0 || acquiring[name] {
			continue
		}
		c.log.Info("dlm: giving up an unused grant", "client_id", s.id, "lock", name, "token", h.GetToken())
		ctx, cancel := context.WithTimeout(context.Background(), c.o.attemptTimeout)
		c.releaseToken(ctx, s, name, h.GetToken())
		cancel()
	}
}

// loseGrant marks every held grant of session s lost.
func (c *Client) loseGrant(s *session, cause error, gone bool) {
	c.mu.Lock()
	locks := make([]*Lock, 0, len(c.held))
	for _, lk := range c.held {
		locks = append(locks, lk)
	}
	c.mu.Unlock()
	for _, lk := range locks {
		if lk.s == s {
			lk.markLost(cause, gone)
		}
	}
}

// renew renews session s once: on the process's Pulse stream when the
// server has one, else with a KeepAlive call. It returns the endpoint of a
// KeepAlive call ("" for the stream, which finds its server by itself), the
// lease and the grants the session holds.
func (c *Client) renew(ctx context.Context, s *session) (string, time.Duration, []*dlmv1.HeldLock, error) {
	if c.hub != nil && c.hub.p.usable() {
		// The stream gets half the time: if it fails to answer, a
		// KeepAlive call still has time to keep the session.
		pctx, cancel := context.WithCancel(ctx)
		if dl, ok := ctx.Deadline(); ok {
			pctx, cancel = context.WithDeadline(ctx, dl.Add(-time.Until(dl)/2))
		}
		lease, held, err := c.hub.p.renew(pctx, s, false)
		cancel()
		if err == nil || refusesSession(err) || ctx.Err() != nil {
			return "", lease, held, err
		}
	}
	u, api := c.eps.pick()
	resp, err := api.KeepAlive(ctx, connect.NewRequest(&dlmv1.KeepAliveRequest{ClientId: s.id, Secret: s.secret}))
	if err != nil {
		return u, 0, nil, err
	}
	return u, time.Duration(resp.Msg.GetLeaseMs()) * time.Millisecond, heldLocks(resp.Msg.GetToken(), resp.Msg.GetHeld()), nil
}

// heldLocks is every grant a renewal reports. A server that predates named
// locks reports only the default lock's token.
func heldLocks(token uint64, held []*dlmv1.HeldLock) []*dlmv1.HeldLock {
	if token == 0 {
		return held
	}
	for _, h := range held {
		if h.GetLock() == "" {
			return held
		}
	}
	return append(held, &dlmv1.HeldLock{Token: token})
}

// refusesSession reports whether err is the service's answer about the
// session itself, which a KeepAlive call would get too.
func refusesSession(err error) bool {
	switch reasonOf(err) {
	case dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED,
		dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN,
		dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET,
		dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS:
		return true
	}
	return false
}
