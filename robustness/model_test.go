package robustness

import (
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Hand-written histories of named and shared locks that the model must
// accept or reject. Times are small integers: an operation is [call, ret].

func acq(w int, lock string, shared bool, token uint64, call, ret int64) event {
	return event{Worker: w, Kind: "acquire", Lock: lock, Shared: shared, Token: token, Session: uint64(100 + w), Result: ok, Call: call, Return: ret}
}

func rel(w int, lock string, token uint64, res outcome, call, ret int64) event {
	return event{Worker: w, Kind: "release", Lock: lock, Token: token, Result: res, Call: call, Return: ret}
}

func check(w int, lock string, token uint64, current bool, call, ret int64) event {
	return event{Worker: w, Kind: "checktoken", Lock: lock, Token: token, Current: current, Result: ok, Call: call, Return: ret}
}

func app(w int, token uint64, call, ret int64) event {
	return event{Worker: w, Kind: "append", Token: token, File: "file_0", Data: "x\n", Result: ok, Call: call, Return: ret}
}

func checkModel(t *testing.T, want bool, events ...event) {
	t.Helper()
	res, _ := porcupine.CheckOperationsVerbose(dlmModel, operations(&history{events: events}), 10*time.Second)
	if got := res == porcupine.Ok; got != want {
		var b strings.Builder
		for _, e := range events {
			b.WriteString("\n  ")
			b.WriteString(e.Kind + " " + e.Lock)
		}
		t.Fatalf("linearizable = %v (%s), want %v:%s", got, res, want, b.String())
	}
}

func TestModelAcceptsNamedAndSharedHistories(t *testing.T) {
	for name, h := range map[string][]event{
		"shared holders overlap": {
			acq(1, "a", true, 10, 0, 1), acq(2, "a", true, 11, 0, 2), check(1, "a", 10, true, 3, 4),
			check(2, "a", 11, true, 3, 4), rel(1, "a", 10, ok, 5, 6), rel(2, "a", 11, ok, 5, 6),
		},
		"exclusive after shared holders released": {
			acq(1, "a", true, 10, 0, 1), acq(2, "a", true, 11, 0, 1), rel(1, "a", 10, ok, 2, 3),
			rel(2, "a", 11, ok, 2, 3), acq(3, "a", false, 12, 4, 5), rel(3, "a", 12, ok, 6, 7),
		},
		"a batch of shared grants answered out of token order": {
			acq(2, "a", true, 12, 0, 3), acq(1, "a", true, 11, 0, 5), rel(2, "a", 12, ok, 6, 7), rel(1, "a", 11, ok, 6, 7),
		},
		"independent locks at once": {
			acq(1, "a", false, 10, 0, 1), acq(2, "b", false, 11, 0, 1), acq(3, "", false, 12, 0, 1),
			app(3, 12, 2, 3), rel(1, "a", 10, ok, 2, 3), rel(2, "b", 11, ok, 2, 3), rel(3, "", 12, ok, 4, 5),
		},
		"a shared holder's grant expired unseen, then an exclusive one": {
			acq(1, "a", true, 10, 0, 1), acq(2, "a", false, 11, 2, 3), rel(1, "a", 10, failed, 4, 5), rel(2, "a", 11, ok, 6, 7),
		},
		"CheckToken says not current after an expiry": {
			acq(1, "a", false, 10, 0, 1), check(1, "a", 10, false, 2, 3), acq(2, "a", false, 11, 4, 5),
		},
		"an unknown release of a grant a later holder replaced": {
			acq(1, "a", true, 10, 0, 1), acq(2, "a", false, 11, 2, 3), rel(1, "a", 10, unknown, 4, 5),
		},
		"re-entrant shared acquire": {
			acq(1, "a", true, 10, 0, 1), acq(2, "a", true, 11, 2, 3), acq(1, "a", true, 10, 4, 5), rel(1, "a", 10, ok, 6, 7),
		},
		"a release concurrent with the next grant": {
			acq(1, "a", false, 10, 0, 1), rel(1, "a", 10, ok, 2, 6), acq(2, "a", false, 11, 3, 5),
		},
	} {
		t.Run(name, func(t *testing.T) { checkModel(t, true, h...) })
	}
}

func TestModelRejectsBrokenHistories(t *testing.T) {
	for name, h := range map[string][]event{
		"two exclusive holders overlap": {
			acq(1, "a", false, 10, 0, 1), acq(2, "a", false, 11, 2, 3), rel(1, "a", 10, ok, 4, 5),
		},
		"two exclusive holders overlap, seen by CheckToken": {
			acq(1, "a", false, 10, 0, 1), acq(2, "a", false, 11, 2, 3), check(1, "a", 10, true, 4, 5),
		},
		"a shared holder overlaps an exclusive one": {
			acq(1, "a", true, 10, 0, 1), acq(2, "a", false, 11, 2, 3), rel(1, "a", 10, ok, 4, 5),
		},
		"an exclusive holder overlaps a shared one": {
			acq(1, "a", false, 10, 0, 1), acq(2, "a", true, 11, 2, 3), check(1, "a", 10, true, 4, 5),
		},
		"a token reused on one lock": {
			acq(1, "a", false, 10, 0, 1), rel(1, "a", 10, ok, 2, 3), acq(2, "a", false, 10, 4, 5),
		},
		"a grant with a token below an earlier one": {
			acq(1, "a", true, 11, 0, 1), acq(2, "a", true, 10, 2, 3),
		},
		"a token current again after CheckToken said not": {
			acq(1, "a", false, 10, 0, 1), check(1, "a", 10, false, 2, 3), check(1, "a", 10, true, 4, 5),
		},
		"a shared holder appends": {
			acq(1, "", true, 10, 0, 1), app(1, 10, 2, 3),
		},
		"a named lock's holder appends": {
			acq(1, "a", false, 10, 0, 1), app(1, 10, 2, 3),
		},
		"a released grant released again": {
			acq(1, "a", true, 10, 0, 1), rel(1, "a", 10, ok, 2, 3), rel(1, "a", 10, ok, 4, 5),
		},
		"a token granted in two modes": {
			acq(1, "a", true, 10, 0, 1), acq(1, "a", false, 10, 2, 3),
		},
	} {
		t.Run(name, func(t *testing.T) { checkModel(t, false, h...) })
	}
}

// Tokens are unique and increasing across locks, which the model's
// partitions by lock cannot see: checkTokens does.
func TestTokensCheckedAcrossLocks(t *testing.T) {
	for name, tc := range map[string]struct {
		events []event
		want   string
	}{
		"one token on two locks": {
			[]event{acq(1, "a", false, 10, 0, 1), acq(2, "b", true, 10, 0, 1)},
			"token 10 granted twice",
		},
		"a later grant on another lock with a smaller token": {
			[]event{acq(1, "a", false, 11, 0, 1), acq(2, "b", true, 10, 2, 3)},
			"was granted token 10 after",
		},
		"a named grant does not raise the default lock's last token": {
			[]event{acq(1, "", false, 5, 0, 1), acq(2, "b", false, 10, 2, 3),
				{Worker: 3, Kind: "status", Result: ok, LastToken: 5, Call: 4, Return: 5}},
			"",
		},
	} {
		t.Run(name, func(t *testing.T) {
			v := checkTokens(&history{events: tc.events})
			if tc.want == "" {
				if len(v) > 0 {
					t.Fatalf("violations %q, want none", v)
				}
				return
			}
			if len(v) != 1 || !strings.Contains(v[0], tc.want) {
				t.Fatalf("violations %q, want one with %q", v, tc.want)
			}
		})
	}
}

func TestIllegalPartitionsNameTheBrokenLock(t *testing.T) {
	h := &history{events: []event{
		acq(1, "alpha", true, 10, 0, 1), acq(2, "alpha", false, 11, 2, 3), rel(1, "alpha", 10, ok, 4, 5),
		acq(3, "beta", false, 12, 0, 1), rel(3, "beta", 12, ok, 2, 3),
		acq(4, "", true, 13, 0, 1), rel(4, "", 13, ok, 2, 3),
	}}
	if got := illegalPartitions(h, 10*time.Second); len(got) != 1 || got[0] != "lock/alpha" {
		t.Fatalf("illegal partitions %q, want [lock/alpha]", got)
	}
}
