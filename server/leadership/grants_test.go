package leadership

import "testing"

// A no_wait acquire's grant goes to the listener of its session, once, and
// only for the seq recorded; a full listener drops grants instead of
// blocking the apply.
func TestGrantsReachTheSessionsListener(t *testing.T) {
	clock := newFakeClock()
	c := New(clock)
	c.Begin(nil, nil)
	log := newLockLog(t, c)
	holder, a, b := log.open(), log.open(), log.open()
	log.acquire(holder)
	la, lb := c.NewListener(4), c.NewListener(1)
	c.Listen(la, a)
	c.Listen(lb, b)
	c.NoWait(a, log.seq[a]+1)
	log.acquire(a)
	// b waits with a parked call: no listener hears of its grant.
	log.acquire(b)
	log.release(holder)
	select {
	case g := <-la.C():
		if g.ClientID != a || g.Seq != log.seq[a] || g.Token == 0 {
			t.Fatalf("grant %+v, want session %d seq %d", g, a, log.seq[a])
		}
	default:
		t.Fatal("no grant reached a's listener")
	}
	log.release(a)
	select {
	case g := <-lb.C():
		t.Fatalf("b's listener heard %+v, but b did not ask with no_wait", g)
	default:
	}
	if l, n := c.Listening(); l != 2 || n != 0 {
		t.Fatalf("listening %d, no_waits %d; want 2 and 0", l, n)
	}
	// A session that moves to another stream is heard there only.
	c.Listen(lb, a)
	c.Unlisten(la)
	if l, _ := c.Listening(); l != 2 {
		t.Fatalf("after a moved, listening %d, want 2", l)
	}
	c.Unlisten(lb)
	if l, _ := c.Listening(); l != 0 {
		t.Fatalf("after both streams ended, listening %d", l)
	}
	// The end of a term forgets everything.
	c.Listen(la, a)
	c.NoWait(b, 99)
	c.End()
	if l, n := c.Listening(); l != 0 || n != 0 {
		t.Fatalf("after the term, listening %d, no_waits %d", l, n)
	}
}

func TestFullListenerDropsGrants(t *testing.T) {
	c := New(newFakeClock())
	c.Begin(nil, nil)
	log := newLockLog(t, c)
	holder := log.open()
	log.acquire(holder)
	l := c.NewListener(1)
	var ids []uint64
	for range 3 {
		id := log.open()
		ids = append(ids, id)
		c.Listen(l, id)
		c.NoWait(id, log.seq[id]+1)
		log.acquire(id)
	}
	log.release(holder)
	log.release(ids[0])
	log.release(ids[1])
	if got := len(l.C()); got != 1 {
		t.Fatalf("queue holds %d grants, want 1", got)
	}
	if l.Dropped() != 2 {
		t.Fatalf("dropped %d, want 2", l.Dropped())
	}
}
