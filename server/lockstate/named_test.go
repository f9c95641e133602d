package lockstate_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

const (
	rModeMismatch  = dlmv1.ErrorReason_ERROR_REASON_LOCK_MODE_MISMATCH
	rNeedsExcl     = dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_EXCLUSIVE
	rNeedsDefault  = dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_DEFAULT_LOCK
	rTooManyLocks  = dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_LOCKS
	rNameEmpty     = dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_EMPTY
	rNameTooLong   = dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_TOO_LONG
	rNameInvalid   = dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_INVALID
	rModeUnknown   = dlmv1.ErrorReason_ERROR_REASON_LOCK_MODE_UNKNOWN
	rDelayInvalid  = dlmv1.ErrorReason_ERROR_REASON_LOCK_DELAY_INVALID
	rLockUnknown   = dlmv1.ErrorReason_ERROR_REASON_LOCK_UNKNOWN
	endReleased    = dlmv1.LockEnd_LOCK_END_RELEASED
	endAborted     = dlmv1.LockEnd_LOCK_END_ABORTED
	endClosed      = dlmv1.LockEnd_LOCK_END_CLOSED
	endExpired     = dlmv1.LockEnd_LOCK_END_EXPIRED
	modeUnspecifed = dlmv1.LockMode_LOCK_MODE_UNSPECIFIED
)

// acquireOn asks for lock in mode.
func acquireOn(cl *raftlogv1.Caller, lock string, mode dlmv1.LockMode) *raftlogv1.Command {
	cmd := acquireCmd(cl)
	cmd.GetAcquire().Lock, cmd.GetAcquire().Mode = lock, uint32(mode)
	return cmd
}

// tryOn is acquireOn in try mode.
func tryOn(cl *raftlogv1.Caller, lock string, mode dlmv1.LockMode) *raftlogv1.Command {
	cmd := acquireOn(cl, lock, mode)
	cmd.GetAcquire().Try = true
	return cmd
}

// delayedOn is acquireOn with a lock-delay.
func delayedOn(cl *raftlogv1.Caller, lock string, mode dlmv1.LockMode, delayMs uint32) *raftlogv1.Command {
	cmd := acquireOn(cl, lock, mode)
	cmd.GetAcquire().LockDelayMs = delayMs
	return cmd
}

// releaseOn releases the grant token of lock.
func releaseOn(cl *raftlogv1.Caller, lock string, token uint64) *raftlogv1.Command {
	cmd := releaseCmd(cl, token)
	cmd.GetRelease().Lock = lock
	return cmd
}

func endDelayCmd(lock string, token uint64) *raftlogv1.Command {
	return &raftlogv1.Command{Op: &raftlogv1.Command_EndLockDelay{EndLockDelay: &raftlogv1.EndLockDelay{Lock: lock, Token: token}}}
}

// grantedOn is an acquire of lock granted by the command itself.
func grantedOn(lock string, mode dlmv1.LockMode, id, seq, token uint64) lockstate.Result {
	return with(granted(token), grantOn(lock, mode, id, seq, token))
}

// holdersAre checks a lock's holders (ids with tokens, in grant order) and
// its queue.
func holdersAre(lock string, holders []lockstate.HolderView, queue ...uint64) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		v, live := m.LockNamed(lock)
		if want := lock == "" || len(holders) > 0 || len(queue) > 0; live != want {
			t.Errorf("lock %q live %t, want %t", lock, live, want)
		}
		var got []lockstate.HolderView
		for _, h := range v.Holders {
			got = append(got, lockstate.HolderView{ClientID: h.ClientID, Token: h.Token, Mode: h.Mode})
		}
		if !slices.Equal(got, holders) || !slices.Equal(v.Queue, queue) {
			t.Errorf("lock %q holders %+v queue %v, want %+v queue %v", lock, got, v.Queue, holders, queue)
		}
		if len(holders) > 0 && (v.Holder != holders[0].ClientID || v.Token != holders[0].Token || v.Mode != holders[0].Mode) {
			t.Errorf("lock %q view names holder %d token %d mode %s, want the oldest %+v", lock, v.Holder, v.Token, v.Mode, holders[0])
		}
	}
}

func hv(id, token uint64, mode dlmv1.LockMode) lockstate.HolderView {
	return lockstate.HolderView{ClientID: id, Token: token, Mode: mode}
}

// heldAre checks Held(id).
func heldAre(id uint64, want ...lockstate.HeldLock) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		if got := m.Held(id); !slices.Equal(got, want) {
			t.Errorf("Held(%d) = %+v, want %+v", id, got, want)
		}
	}
}

func lockCountIs(n int) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		if got := m.LockCount(); got != n {
			t.Errorf("LockCount %d, want %d", got, n)
		}
	}
}

// answers checks the recorded outcome of an acquire.
func answers(id, seq uint64, want lockstate.Result) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		o, r := check(m, c(id, seq), raftlogv1.Method_METHOD_ACQUIRE)
		if r != rNone || !proto.Equal(withoutMethod(o), want.Outcome) {
			t.Errorf("acquire (%d, %d) answers %s, %s; want %s", id, seq, fmtOutcome(o), r, fmtOutcome(want.Outcome))
		}
	}
}

func TestNamedLocks(t *testing.T) {
	runScripts(t, []script{{
		name: "named locks are independent of each other and of the default lock",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireOn(c(1, 1), "a", exclusive), want: grantedOn("a", exclusive, 1, 1, 3)},
			step{idx: 4, now: 4000, cmd: acquireOn(c(2, 1), "b", modeUnspecifed), want: grantedOn("b", exclusive, 2, 1, 4)},
			step{idx: 5, now: 5000, cmd: acquireCmd(c(2, 2)), want: grantedNow(2, 2, 5)},
			step{idx: 6, now: 6000, cmd: acquireOn(c(1, 2), "b", exclusive), want: queued(),
				check: all(holdersAre("b", []lockstate.HolderView{hv(2, 4, exclusive)}, 1), lockCountIs(3), heldAre(1, lockstate.HeldLock{Lock: "a", Token: 3, Mode: exclusive}))},
			// Session 2 holds token 4, but on b: on a it is not a holder, not
			// an expired one.
			step{idx: 7, now: 7000, cmd: releaseOn(c(2, 3), "a", 4), want: fails(rNotHolder), effect: recordOnly},
			step{idx: 8, now: 8000, cmd: releaseOn(c(2, 4), "b", 4), want: with(ok(), grantOn("b", exclusive, 1, 2, 8)),
				check: all(holdersAre("b", []lockstate.HolderView{hv(1, 8, exclusive)}), answers(1, 2, granted(8)),
					heldAre(1, lockstate.HeldLock{Lock: "a", Token: 3, Mode: exclusive}, lockstate.HeldLock{Lock: "b", Token: 8, Mode: exclusive}),
					heldAre(2, lockstate.HeldLock{Lock: "", Token: 5, Mode: exclusive}))},
			// A named lock with nothing left leaves no state behind.
			step{idx: 9, now: 9000, cmd: releaseOn(c(1, 3), "a", 3), want: ok(), check: all(holdersAre("a", nil), lockCountIs(2))},
			step{idx: 10, now: 10_000, cmd: releaseOn(c(1, 4), "a", 3), want: fails(rLockExpired), effect: recordOnly},
			step{idx: 11, now: 11_000, cmd: releaseOn(c(1, 5), "a", 0), want: ok(), effect: recordOnly},
			// The default lock's release is untouched by all this.
			step{idx: 12, now: 12_000, cmd: releaseCmd(c(2, 5), 5), want: committed(0, 0), check: lockIs(0, 0)},
			// Token 5 was session 2's grant of the default lock, as the history
			// remembers: on b it is not an expired grant of the session's.
			step{idx: 13, now: 13_000, cmd: releaseOn(c(2, 6), "b", 5), want: fails(rNotHolder), effect: recordOnly},
			step{idx: 14, now: 14_000, cmd: releaseOn(c(2, 7), "", 5), want: fails(rLockExpired), effect: recordOnly},
		),
		check: func(t *testing.T, m *lockstate.Machine) {
			page, more := m.Locks(nil, 10)
			if len(page) != 2 || page[0].Name != "" || page[1].Name != "b" || more {
				t.Errorf("Locks = %+v, %t", page, more)
			}
			if tc, r := m.CheckToken("a", 3); r != rLockUnknown || tc.Current {
				t.Errorf("CheckToken(a, 3) = %+v, %s", tc, r)
			}
			if tc, r := m.CheckToken("b", 8); r != rNone || !tc.Current || tc.Mode != exclusive || tc.LatestToken != 8 {
				t.Errorf("CheckToken(b, 8) = %+v, %s", tc, r)
			}
			if tc, r := m.CheckToken("", 5); r != rNone || tc.Current || tc.LatestToken != 0 {
				t.Errorf("CheckToken('', 5) = %+v, %s", tc, r)
			}
		},
	}, {
		name: "bad names, modes and delays are refused and change nothing",
		steps: then(opens(1),
			step{idx: 2, now: 2000, cmd: acquireOn(c(1, 1), string(make([]byte, lockstate.MaxLockName+1)), exclusive), want: fails(rNameTooLong), effect: recordOnly},
			step{idx: 3, now: 3000, cmd: acquireOn(c(1, 2), "a\nb", exclusive), want: fails(rNameInvalid), effect: recordOnly},
			step{idx: 4, now: 4000, cmd: acquireOn(c(1, 3), "\xff", exclusive), want: fails(rNameInvalid), effect: recordOnly},
			step{idx: 5, now: 5000, cmd: acquireOn(c(1, 4), "a", 9), want: fails(rModeUnknown), effect: recordOnly},
			step{idx: 6, now: 6000, cmd: delayedOn(c(1, 5), "a", shared, lockstate.MaxLockDelayMs+1), want: fails(rDelayInvalid), effect: recordOnly},
			step{idx: 7, now: 7000, cmd: releaseOn(c(1, 6), "a\x00", 3), want: fails(rNameInvalid), effect: recordOnly},
			step{idx: 8, now: 8000, cmd: delayedOn(c(1, 7), "a b", shared, lockstate.MaxLockDelayMs), want: grantedOn("a b", shared, 1, 7, 8)},
		),
	}, {
		name: "the last grants of an entry's shared batch push the next entry's token up",
		steps: then(opens(4),
			step{idx: 5, now: 5000, cmd: acquireOn(c(1, 1), "r", exclusive), want: grantedOn("r", exclusive, 1, 1, 5)},
			step{idx: 6, now: 6000, cmd: acquireOn(c(2, 1), "r", shared), want: queued()},
			step{idx: 7, now: 7000, cmd: acquireOn(c(3, 1), "r", shared), want: queued()},
			step{idx: 8, now: 8000, cmd: acquireOn(c(4, 1), "r", shared), want: queued()},
			step{idx: 9, now: 9000, cmd: releaseOn(c(1, 2), "r", 5),
				want:  with(ok(), grantOn("r", shared, 2, 1, 9), grantOn("r", shared, 3, 1, 10), grantOn("r", shared, 4, 1, 11)),
				check: all(holdersAre("r", []lockstate.HolderView{hv(2, 9, shared), hv(3, 10, shared), hv(4, 11, shared)}), answers(3, 1, granted(10)))},
			// Index 10 was handed out as a token: the next grant gets 12.
			step{idx: 10, now: 10_000, cmd: acquireCmd(c(1, 3)), want: grantNowAt(1, 3, 12)},
			step{idx: 13, now: 13_000, cmd: acquireOn(c(1, 4), "x", shared), want: grantedOn("x", shared, 1, 4, 13)},
		),
		check: func(t *testing.T, m *lockstate.Machine) {
			if tc, _ := m.CheckToken("r", 10); !tc.Current || tc.Mode != shared || tc.LatestToken != 11 {
				t.Errorf("CheckToken(r, 10) = %+v", tc)
			}
		},
	}})
}

// grantNowAt is a default-lock acquire granted by the command with token.
func grantNowAt(id, seq, token uint64) lockstate.Result { return grantedNow(id, seq, token) }

func TestSharedLocks(t *testing.T) {
	runScripts(t, []script{{
		name: "readers share; a reader behind a waiting writer waits",
		steps: then(opens(4),
			step{idx: 5, now: 5000, cmd: acquireOn(c(1, 1), "r", shared), want: grantedOn("r", shared, 1, 1, 5)},
			step{idx: 6, now: 6000, cmd: acquireOn(c(2, 1), "r", shared), want: grantedOn("r", shared, 2, 1, 6)},
			step{idx: 7, now: 7000, cmd: acquireOn(c(3, 1), "r", exclusive), want: queued()},
			step{idx: 8, now: 8000, cmd: acquireOn(c(4, 1), "r", shared), want: queued()},
			// A try behind the writer is not granted either.
			step{idx: 9, now: 9000, cmd: tryOn(c(4, 2), "r", shared), want: queued(),
				check: holdersAre("r", []lockstate.HolderView{hv(1, 5, shared), hv(2, 6, shared)}, 3, 4)},
			step{idx: 10, now: 10_000, cmd: releaseOn(c(1, 2), "r", 5), want: ok(),
				check: holdersAre("r", []lockstate.HolderView{hv(2, 6, shared)}, 3, 4)},
			step{idx: 11, now: 11_000, cmd: releaseOn(c(2, 2), "r", 6), want: with(ok(), grantOn("r", exclusive, 3, 1, 11))},
			step{idx: 12, now: 12_000, cmd: releaseOn(c(3, 2), "r", 11), want: with(ok(), grantOn("r", shared, 4, 1, 12)),
				check: all(answers(4, 1, granted(12)), answers(4, 2, granted(12)))},
			step{idx: 13, now: 13_000, cmd: tryOn(c(1, 3), "r", shared), want: grantedOn("r", shared, 1, 3, 13)},
			step{idx: 14, now: 14_000, cmd: tryOn(c(2, 3), "r", exclusive), want: ok(), effect: recordOnly},
		),
		check: func(t *testing.T, m *lockstate.Machine) {
			v, _ := m.LockNamed("r")
			if v.Mode != shared || v.GrantedUnixMs != 12_000 || v.LastToken != 13 {
				t.Errorf("view %+v", v)
			}
		},
	}, {
		name: "re-acquiring in the other mode is refused, holding or waiting",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireOn(c(1, 1), "m", shared), want: grantedOn("m", shared, 1, 1, 3)},
			step{idx: 4, now: 4000, cmd: acquireOn(c(1, 2), "m", exclusive), want: fails(rModeMismatch), effect: recordOnly},
			step{idx: 5, now: 5000, cmd: acquireOn(c(1, 3), "m", modeUnspecifed), want: fails(rModeMismatch), effect: recordOnly},
			step{idx: 6, now: 6000, cmd: acquireOn(c(1, 4), "m", shared), want: granted(3), effect: recordOnly},
			step{idx: 7, now: 7000, cmd: acquireOn(c(2, 1), "m", exclusive), want: queued()},
			step{idx: 8, now: 8000, cmd: acquireOn(c(2, 2), "m", shared), want: fails(rModeMismatch), effect: recordOnly},
			step{idx: 9, now: 9000, cmd: acquireOn(c(2, 3), "m", exclusive), want: queued()},
			step{idx: 10, now: 10_000, cmd: releaseOn(c(1, 5), "m", 3), want: with(ok(), grantOn("m", exclusive, 2, 1, 10)),
				check: all(answers(2, 1, granted(10)), answers(2, 3, granted(10)), answers(2, 2, fails(rModeMismatch)))},
		),
	}, {
		name: "a shared holder of the default lock may not append",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: acquireOn(c(1, 1), "", shared), want: grantedOn("", shared, 1, 1, 3)},
			step{idx: 4, now: 4000, cmd: appendCmd(c(1, 2), 3, "file_0", "x"), want: fails(rNeedsExcl), effect: recordOnly},
			step{idx: 5, now: 5000, cmd: releaseOnWith(c(1, 3), "", 3, "file_0", "y"), want: fails(rNeedsExcl), effect: recordOnly},
			step{idx: 6, now: 6000, cmd: closeWith(c(1, 4), defaultMaxSect, 0, w("file_0", "z")), want: fails(rNeedsExcl), effect: recordOnly},
			step{idx: 7, now: 7000, cmd: acquireOn(c(2, 1), "n", exclusive), want: grantedOn("n", exclusive, 2, 1, 7)},
			step{idx: 8, now: 8000, cmd: releaseOnWith(c(2, 2), "n", 7, "file_0", "y"), want: fails(rNeedsDefault), effect: recordOnly},
			step{idx: 9, now: 9000, cmd: releaseCmd(c(1, 5), 3), want: ok(), check: sizesAre()},
		),
		check: func(t *testing.T, m *lockstate.Machine) {
			if r := m.CheckGrant(1, sec(1), 3); r != rLockExpired {
				t.Errorf("CheckGrant after release: %s", r)
			}
		},
	}})
}

// releaseOnWith is a release of lock carrying one write.
func releaseOnWith(cl *raftlogv1.Caller, lock string, token uint64, file, data string) *raftlogv1.Command {
	cmd := releaseWith(cl, token, defaultMaxSect, 0, w(file, data))
	cmd.GetRelease().Lock = lock
	return cmd
}

func TestCheckGrantRefusesASharedHolder(t *testing.T) {
	var h history
	m := h.run(t, lockstate.New(lockstate.DefaultLimits()), openCmd(1), acquireOn(c(1, 1), "", shared))
	if r := m.CheckGrant(1, sec(1), 2); r != rNeedsExcl {
		t.Errorf("CheckGrant of a shared grant: %s", r)
	}
	if got := m.HeldToken(1); got != 2 {
		t.Errorf("HeldToken %d", got)
	}
}

// delayStarted expects the command to start these lock-delays.
func delayStarted(ds ...lockstate.Delay) mod {
	return func(r *lockstate.Result) { r.DelayStarted = append(r.DelayStarted, ds...) }
}

// delaysAre checks Delays().
func delaysAre(want ...lockstate.Delay) func(*testing.T, *lockstate.Machine) {
	return func(t *testing.T, m *lockstate.Machine) {
		t.Helper()
		if got := m.Delays(); !slices.Equal(got, want) {
			t.Errorf("Delays() = %+v, want %+v", got, want)
		}
		for _, d := range want {
			if v, live := m.LockNamed(d.Lock); !live || !v.Delayed || v.DelayMs != d.DelayMs {
				t.Errorf("lock %q: live %t, view %+v", d.Lock, live, v)
			}
		}
	}
}

func TestLockDelay(t *testing.T) {
	runScripts(t, []script{{
		name: "an expired holder's delay holds the waiters until EndLockDelay names it",
		steps: then(opens(3),
			step{idx: 4, now: 4000, cmd: delayedOn(c(1, 1), "d", exclusive, 500), want: grantedOn("d", exclusive, 1, 1, 4)},
			step{idx: 5, now: 5000, cmd: delayedOn(c(2, 1), "d", exclusive, 300), want: queued()},
			step{idx: 6, now: 6000, cmd: expireCmd(1, 4), want: with(ok(), ended(1), delayStarted(lockstate.Delay{Lock: "d", Token: 4, DelayMs: 500})),
				check: all(delaysAre(lockstate.Delay{Lock: "d", Token: 4, DelayMs: 500}), holdersAre("d", nil, 2))},
			// Nothing is granted during the delay: a try is refused, others queue.
			step{idx: 7, now: 7000, cmd: tryOn(c(3, 1), "d", shared), want: ok(), effect: recordOnly},
			step{idx: 8, now: 8000, cmd: acquireOn(c(3, 2), "d", shared), want: queued()},
			step{idx: 9, now: 9000, cmd: endDelayCmd("d", 99), want: ok(), effect: noEffect},
			step{idx: 10, now: 10_000, cmd: endDelayCmd("d", 4), want: with(ok(), grantOn("d", exclusive, 2, 1, 10)), check: delaysAre()},
			step{idx: 11, now: 11_000, cmd: endDelayCmd("d", 4), want: ok(), effect: noEffect},
			// A release starts no delay, whatever the grant carries.
			step{idx: 12, now: 12_000, cmd: releaseOn(c(2, 2), "d", 10), want: with(ok(), grantOn("d", shared, 3, 2, 12)), check: delaysAre()},
			step{idx: 13, now: 13_000, cmd: delayedOn(c(3, 3), "e", shared, 100), want: grantedOn("e", shared, 3, 3, 13)},
			// Expiry ends both of session 3's grants; only e's carries a delay.
			// A delayed lock with nobody stays live until its delay ends.
			step{idx: 14, now: 14_000, cmd: expireCmd(3, 13), want: with(ok(), ended(3), delayStarted(lockstate.Delay{Lock: "e", Token: 13, DelayMs: 100})),
				check: all(delaysAre(lockstate.Delay{Lock: "e", Token: 13, DelayMs: 100}), lockCountIs(2), holdersAre("d", nil))},
			step{idx: 15, now: 15_000, cmd: endDelayCmd("e", 13), want: ok(), check: all(delaysAre(), lockCountIs(1))},
		),
	}, {
		name: "close and abort start no delay",
		steps: then(opens(3),
			step{idx: 4, now: 4000, cmd: delayedOn(c(1, 1), "f", exclusive, 500), want: grantedOn("f", exclusive, 1, 1, 4)},
			step{idx: 5, now: 5000, cmd: delayedOn(c(2, 1), "f", exclusive, 500), want: queued()},
			step{idx: 6, now: 6000, cmd: closeCmd(c(1, 2)), want: with(ok(), ended(1), grantOn("f", exclusive, 2, 1, 6))},
			step{idx: 7, now: 7000, cmd: delayedOn(c(3, 1), "f", exclusive, 500), want: queued()},
			step{idx: 8, now: 8000, cmd: abortOn(c(2, 2), "f", 6), want: with(ok(), grantOn("f", exclusive, 3, 1, 8)), check: delaysAre()},
		),
	}, {
		name: "the default lock's delay after an expiry",
		steps: then(opens(2),
			step{idx: 3, now: 3000, cmd: delayedOn(c(1, 1), "", exclusive, 1000), want: grantedNow(1, 1, 3)},
			step{idx: 4, now: 4000, cmd: appendCmd(c(1, 2), 3, "file_0", "lost"), want: staged(1, 4)},
			step{idx: 5, now: 5000, cmd: acquireCmd(c(2, 1)), want: queued()},
			step{idx: 6, now: 6000, cmd: expireCmd(1, 4), want: with(ok(), ended(1), delayStarted(lockstate.Delay{Lock: "", Token: 3, DelayMs: 1000})),
				check: all(lockIs(0, 0, 2), sizesAre())},
			step{idx: 7, now: 7000, cmd: endDelayCmd("", 3), want: with(ok(), grant(2, 1, 7)), check: lockIs(2, 7)},
		),
	}})
}

func abortOn(cl *raftlogv1.Caller, lock string, token uint64) *raftlogv1.Command {
	cmd := abortCmd(cl, token)
	cmd.GetRelease().Lock = lock
	return cmd
}
