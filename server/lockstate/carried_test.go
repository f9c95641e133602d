package lockstate_test

import (
	"testing"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// releaseWith is a release that carries the appends the leader staged in
// memory, with the limits it staged them under.
func releaseWith(cl *raftlogv1.Caller, token, maxSection, maxFile uint64, ws ...lockstate.Write) *raftlogv1.Command {
	cmd := releaseCmd(cl, token)
	r := cmd.GetRelease()
	r.MaxSectionBytes, r.MaxFileBytes = maxSection, maxFile
	for _, x := range ws {
		r.Writes = append(r.Writes, &raftlogv1.Write{File: x.File, Data: x.Data})
	}
	return cmd
}

func closeWith(cl *raftlogv1.Caller, maxSection, maxFile uint64, ws ...lockstate.Write) *raftlogv1.Command {
	cmd := closeCmd(cl)
	o := cmd.GetCloseSession()
	o.MaxSectionBytes, o.MaxFileBytes = maxSection, maxFile
	for _, x := range ws {
		o.Writes = append(o.Writes, &raftlogv1.Write{File: x.File, Data: x.Data})
	}
	return cmd
}

func TestReleaseCarriesWrites(t *testing.T) {
	held := then(opens(2),
		step{idx: 3, now: 3000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 3)},
		step{idx: 4, now: 4000, cmd: acquireCmd(c(2, 1)), want: queued()},
	)
	bad := func(idx uint64, cmd *raftlogv1.Command, want lockstate.Result) step {
		return step{idx: idx, now: int64(idx) * 1000, cmd: cmd, want: want, effect: recordOnly}
	}
	runScripts(t, []script{{
		name: "the writes commit after the appends staged by entries, and the lock moves on",
		steps: then(held,
			step{idx: 5, now: 5000, cmd: appendCmd(c(1, 2), 3, "file_0", "a"), want: staged(1, 1)},
			step{idx: 6, now: 6000, cmd: releaseWith(c(1, 3), 3, 100, 0, w("file_1", "bb"), w("file_0", "ccc")),
				want: with(committed(3, 6, w("file_0", "a"), w("file_1", "bb"), w("file_0", "ccc")), grant(2, 1, 6))},
			// A repeat is answered from the record, writes or not.
			step{idx: 7, now: 7000, cmd: releaseWith(c(1, 3), 3, 100, 0, w("file_1", "zz")), want: committed(3, 6), effect: noEffect},
		),
		check: all(sizesAre("file_0", 4, "file_1", 2), lockIs(2, 6), stagedIs(0, 0)),
	}, {
		name: "writes past the section limit commit nothing and keep the grant",
		steps: then(held,
			step{idx: 5, now: 5000, cmd: appendMax(c(1, 2), 3, "file_0", "123456", 10), want: staged(1, 6)},
			bad(6, releaseWith(c(1, 3), 3, 10, 0, w("file_0", "12"), w("file_0", "123")), fails(rSectionLarge)),
			// The limit travels in the entry.
			step{idx: 7, now: 7000, cmd: releaseWith(c(1, 4), 3, 11, 0, w("file_0", "12"), w("file_0", "123")),
				want: with(committed(3, 11, w("file_0", "123456"), w("file_0", "12"), w("file_0", "123")), grant(2, 1, 7))},
		),
		check: all(sizesAre("file_0", 11), lockIs(2, 7)),
	}, {
		name: "writes past a file's limit, or bad, commit nothing",
		steps: then(held,
			step{idx: 5, now: 5000, cmd: appendFileMax(c(1, 2), 3, "file_0", "1234", 6), want: staged(1, 4)},
			bad(6, releaseWith(c(1, 3), 3, 100, 6, w("file_1", "123456"), w("file_0", "1"), w("file_0", "12")), fails(rFileLarge)),
			bad(7, releaseWith(c(1, 4), 3, 100, 0, w("file_1", "1"), w("../x", "1")), fails(rInvalidFile)),
			bad(8, releaseWith(c(1, 5), 3, 100, 0, w("file_1", "")), fails(rDataEmpty)),
			bad(9, releaseWith(c(1, 6), 3, 100, 0, w("file_100", "1")), fails(rFileNotFound)),
		),
		check: all(sizesAre("file_0", 0, "file_1", 0), lockIs(1, 3, 2), stagedIs(1, 4)),
	}, {
		name: "an abort and a release by token 0 carry no writes",
		steps: then(held,
			step{idx: 5, now: 5000, cmd: func() *raftlogv1.Command {
				cmd := releaseWith(c(1, 2), 3, 100, 0, w("file_0", "x"))
				cmd.GetRelease().Abort = true
				return cmd
			}(), want: with(ok(), grant(2, 1, 5))},
			step{idx: 6, now: 6000, cmd: releaseWith(c(2, 2), 0, 100, 0, w("file_0", "x")), want: ok(), effect: anyEffect},
		),
		check: sizesAre("file_0", 0),
	}, {
		name: "a stale token's writes are refused",
		steps: then(held,
			step{idx: 5, now: 5000, cmd: releaseCmd(c(1, 2), 3), want: with(committed(0, 0), grant(2, 1, 5))},
			bad(6, releaseWith(c(1, 3), 3, 100, 0, w("file_0", "x")), fails(rLockExpired)),
		),
		check: all(sizesAre("file_0", 0), lockIs(2, 5)),
	}, {
		name: "close commits the writes it carries",
		steps: then(held,
			step{idx: 5, now: 5000, cmd: appendCmd(c(1, 2), 3, "file_0", "a"), want: staged(1, 1)},
			step{idx: 6, now: 6000, cmd: closeWith(c(1, 3), 100, 0, w("file_2", "kept")),
				want: with(committed(2, 5, w("file_0", "a"), w("file_2", "kept")), grant(2, 1, 6), ended(1))},
		),
		check: all(sizesAre("file_0", 1, "file_2", 4), lockIs(2, 6)),
	}, {
		name: "close with writes past a limit closes nothing",
		steps: then(held,
			bad(5, closeWith(c(1, 2), 3, 0, w("file_2", "kept")), fails(rSectionLarge)),
		),
		check: all(sizesAre("file_2", 0), lockIs(1, 3, 2)),
	}})
}

func TestEndedToken(t *testing.T) {
	m := lockstate.New(lockstate.DefaultLimits())
	var h history
	h.run(t, m, openCmd(1), openCmd(2), acquireCmd(c(1, 1)), acquireCmd(c(2, 1)))
	if got := m.Apply(5, releaseCmd(c(1, 2), 3)).EndedToken; got != 3 {
		t.Errorf("release: ended token %d, want 3", got)
	}
	if got := m.Apply(6, appendCmd(c(2, 2), 5, "file_0", "x")).EndedToken; got != 0 {
		t.Errorf("append: ended token %d, want 0", got)
	}
	if got := m.Apply(7, closeCmd(c(2, 3))).EndedToken; got != 5 {
		t.Errorf("close: ended token %d, want 5", got)
	}
}

// spillCmd is the entry a leader writes when a section outgrows its memory:
// the appends it held, then the append itself, guarded by the count of
// appends log entries staged before.
func spillCmd(cl *raftlogv1.Caller, token uint64, base uint32, file, data string, held ...lockstate.Write) *raftlogv1.Command {
	cmd := appendCmd(cl, token, file, data)
	a := cmd.GetAppend()
	a.BaseAppends = &base
	for _, x := range held {
		a.Writes = append(a.Writes, &raftlogv1.Write{File: x.File, Data: x.Data})
	}
	return cmd
}

func TestAppendCarriesTheHeldWrites(t *testing.T) {
	held := then(opens(1), step{idx: 2, now: 2000, cmd: acquireCmd(c(1, 1)), want: grantedNow(1, 1, 2)})
	runScripts(t, []script{{
		name: "the same writes proposed twice are staged once",
		steps: then(held,
			step{idx: 3, now: 3000, cmd: spillCmd(c(1, 2), 2, 0, "file_0", "c", w("file_0", "a"), w("file_1", "b")), want: staged(3, 3)},
			step{idx: 4, now: 4000, cmd: spillCmd(c(1, 3), 2, 0, "file_0", "c", w("file_0", "a"), w("file_1", "b")),
				want: res(&raftlogv1.Outcome{ErrorReason: uint32(rIncomplete), Appends: 3, Bytes: 3}), effect: recordOnly},
			step{idx: 5, now: 5000, cmd: spillCmd(c(1, 4), 2, 3, "file_0", "d"), want: staged(4, 4)},
			step{idx: 6, now: 6000, cmd: releaseWith(c(1, 5), 2, 100, 0, w("file_1", "e")),
				want: committed(5, 5, w("file_0", "a"), w("file_1", "b"), w("file_0", "c"), w("file_0", "d"), w("file_1", "e"))},
		),
		check: sizesAre("file_0", 3, "file_1", 2),
	}, {
		name: "held writes past a limit stage nothing",
		steps: then(held,
			step{idx: 3, now: 3000, cmd: func() *raftlogv1.Command {
				cmd := spillCmd(c(1, 2), 2, 0, "file_0", "cc", w("file_0", "aaaa"))
				cmd.GetAppend().MaxSectionBytes = 5
				return cmd
			}(), want: fails(rSectionLarge), effect: recordOnly},
		),
		check: stagedIs(0, 0),
	}})
}
