package node

import (
	"context"
	"testing"
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// seqCaller numbers the requests of one session.
type seqCaller struct {
	s   Session
	seq uint64
}

func (c *seqCaller) next() Caller {
	c.seq++
	return Caller{ClientID: c.s.ClientID, Secret: c.s.Secret, Seq: c.seq}
}

func (c *seqCaller) same() Caller {
	return Caller{ClientID: c.s.ClientID, Secret: c.s.Secret, Seq: c.seq}
}

func openCaller(t *testing.T, ctx context.Context, n *Node, lease time.Duration, name string) *seqCaller {
	t.Helper()
	s, err := n.OpenSession(ctx, lease, name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	return &seqCaller{s: s}
}

// events returns the remembered grants of lock on n.
func events(t *testing.T, n *Node, lock string) []lockstate.Event {
	t.Helper()
	h, err := n.LockHistory(&lock, 0)
	if err != nil {
		t.Fatal(err)
	}
	return h.Events
}

// grantOf finds the grant of session id in events.
func grantOf(evs []lockstate.Event, id uint64) (lockstate.Event, bool) {
	for _, e := range evs {
		if e.ClientID == id {
			return e, true
		}
	}
	return lockstate.Event{}, false
}

// awaitGrant repeats a waiting acquire (same seq) on whichever node leads
// until it is granted, for up to limit.
func awaitGrant(t *testing.T, ctx context.Context, c *inmemCluster, w *seqCaller, want Want, limit time.Duration) Grant {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		g, err := c.leader(t).AcquireLock(ctx, w.same(), want, false, time.Until(deadline))
		if err == nil && g.Granted {
			return g
		}
		if err != nil {
			// A leader change: the same seq at the new leader.
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Fatalf("not granted within %v", limit)
	return Grant{}
}

// On a three-node cluster, a holder whose lease runs out leaves its named
// lock ungranted for its lock-delay: the waiter is granted only once the
// delay has passed on the leader's clock (timed between the expiry and the
// grant the leader stamped), and a new leader times a delay in full again.
// A clean release starts no delay.
func TestLockDelayHoldsTheLockAfterExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const delay = 1500 * time.Millisecond
	c := startInmemClusterWith(t, 20*time.Second, func(cfg *Config) { cfg.LockDelay = delay })
	leader := c.leader(t)
	res := "res"
	want := Want{Lock: &res}
	// Only the leader checks tokens, and consistent lists; any node lists
	// from its applied state.
	for _, n := range c.nodes {
		if n == leader {
			continue
		}
		if _, err := n.CheckToken(ctx, nil, 1); reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER {
			t.Fatalf("CheckToken on a follower: %v; want NOT_LEADER", err)
		}
		if _, err := n.ListLocks(ctx, LocksQuery{Consistent: true}); reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER {
			t.Fatalf("consistent ListLocks on a follower: %v; want NOT_LEADER", err)
		}
		if p, err := n.ListLocks(ctx, LocksQuery{}); err != nil || len(p.Locks) != 1 || p.LockCount != 1 {
			t.Fatalf("ListLocks on a follower: %+v, %v; want the default lock", p, err)
		}
		if _, err := n.LockHistory(nil, 0); err != nil {
			t.Fatalf("LockHistory on a follower: %v", err)
		}
	}

	// A clean release: the waiter is granted at once, though the server's
	// lock-delay is set (and the grant's own is far longer).
	long := uint32(60000)
	h := openCaller(t, ctx, leader, 0, "releaser")
	g, err := leader.AcquireLock(ctx, h.next(), Want{Lock: &res, DelayMs: &long}, false, 0)
	if err != nil || !g.Granted {
		t.Fatalf("acquire: %v %v", g, err)
	}
	w := openCaller(t, ctx, leader, 0, "waiter")
	if q, err := leader.AcquireLock(ctx, w.next(), want, false, time.Millisecond); err != nil || !q.Queued {
		t.Fatalf("waiter: %v %v; want queued", q, err)
	}
	if _, err := leader.ReleaseLock(ctx, h.next(), &res, g.Token, false, nil, nil); err != nil {
		t.Fatal(err)
	}
	gw := awaitGrant(t, ctx, c, w, want, 10*time.Second)
	if lv, _ := viewLock(leader, res); lv.Delayed {
		t.Fatalf("a clean release delayed the lock: %+v", lv)
	}
	if _, err := leader.ReleaseLock(ctx, w.next(), &res, gw.Token, false, nil, nil); err != nil {
		t.Fatal(err)
	}

	// An expiry: the holder takes the lock and falls silent.
	holder := openCaller(t, ctx, leader, 300*time.Millisecond, "silent")
	if g, err := leader.AcquireLock(ctx, holder.next(), want, false, 0); err != nil || !g.Granted {
		t.Fatalf("acquire by the silent holder: %v %v", g, err)
	}
	w2 := openCaller(t, ctx, leader, 0, "waiter2")
	if q, err := leader.AcquireLock(ctx, w2.next(), want, false, time.Millisecond); err != nil || !q.Queued {
		t.Fatalf("second waiter: %v %v; want queued", q, err)
	}
	g2 := awaitGrant(t, ctx, c, w2, want, 30*time.Second)
	evs := events(t, leader, res)
	expired, ok := grantOf(evs, holder.s.ClientID)
	granted, ok2 := grantOf(evs, w2.s.ClientID)
	if !ok || !ok2 || expired.End != dlmv1.LockEnd_LOCK_END_EXPIRED || granted.Token != g2.Token {
		t.Fatalf("history %+v: want the silent holder's grant expired and the waiter's grant %d", evs, g2.Token)
	}
	if gap := time.Duration(granted.GrantedUnixMs-expired.EndedUnixMs) * time.Millisecond; gap < delay {
		t.Fatalf("the waiter was granted %v after the holder expired; the lock-delay is %v", gap, delay)
	}
	if _, err := leader.ReleaseLock(ctx, w2.next(), &res, g2.Token, false, nil, nil); err != nil {
		t.Fatal(err)
	}

	// A failover while delayed: the new leader times the whole delay again.
	holder = openCaller(t, ctx, leader, 300*time.Millisecond, "silent2")
	if g, err := leader.AcquireLock(ctx, holder.next(), want, false, 0); err != nil || !g.Granted {
		t.Fatalf("acquire by the second silent holder: %v %v", g, err)
	}
	w3 := openCaller(t, ctx, leader, 0, "waiter3")
	if q, err := leader.AcquireLock(ctx, w3.next(), want, false, time.Millisecond); err != nil || !q.Queued {
		t.Fatalf("third waiter: %v %v; want queued", q, err)
	}
	awaitDelayed(t, leader, res)
	c.replicated(t, leader)
	crash := time.Now()
	c.stop(t, leader)
	g3 := awaitGrant(t, ctx, c, w3, want, 30*time.Second)
	evs = events(t, c.leader(t), res)
	granted, ok = grantOf(evs, w3.s.ClientID)
	if !ok || granted.Token != g3.Token {
		t.Fatalf("history %+v lacks the third waiter's grant %d", evs, g3.Token)
	}
	if at := time.UnixMilli(granted.GrantedUnixMs); at.Before(crash.Add(delay).Truncate(time.Millisecond)) {
		t.Fatalf("granted %v after the old leader crashed; the new leader must time the whole delay (%v) from its term", at.Sub(crash), delay)
	}
}

func viewLock(n *Node, name string) (lockstate.LockView, bool) {
	var (
		lv lockstate.LockView
		ok bool
	)
	n.fsm.View(func(m *lockstate.Machine) { lv, ok = m.LockNamed(name) })
	return lv, ok
}

// awaitDelayed waits, up to 30 s, until lock is in its lock-delay on n.
func awaitDelayed(t *testing.T, n *Node, lock string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		applied := n.watchApplied()
		if lv, _ := viewLock(n, lock); lv.Delayed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: lock %q not delayed within 30s", n.cfg.ID, lock)
		}
		select {
		case <-applied:
		case <-time.After(time.Second):
		}
	}
}
