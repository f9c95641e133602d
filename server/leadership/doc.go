// Package leadership is what a dlm leader keeps in memory and nowhere else:
// its term (one stretch of leadership, begun after a barrier applied every
// earlier entry), the lease deadlines of the sessions, the lock-delays it
// times, and the acquire calls waiting for their grant.
//
// It has no Raft and no I/O, and reads time only through a Clock, so every
// rule here is tested with a fake clock. server/node feeds it: it begins and
// ends terms as Raft elects and deposes this node, passes on every applied
// lockstate.Result, and proposes the expiries it asks for.
//
// The rules:
//   - Leases live only in a term. A follower promises no lease (Renew fails),
//     and a new term gives every session a full fresh lease from the term's
//     start: keepalives are not logged, so no one knows when each session was
//     last seen, and a failover alone never takes a lock away.
//   - A lease expires at its deadline, not before; renewing moves it. A
//     session whose expiry is being proposed cannot be renewed until the
//     expiry is known to have failed (Spared).
//   - A waiter watches before it reads the state, so a grant in between is
//     not missed; a grant wakes the granted session's waiters only; a
//     session's end wakes its waiters; the end of a term wakes every waiter
//     of that term.
//   - A lock-delay ends (the node proposes EndLockDelay) once its length has
//     passed on the leader's clock since the leader learned of it: from the
//     apply that started it, or, for one an earlier leader started, from the
//     start of the term. A failover makes a delay longer, never shorter.
package leadership
