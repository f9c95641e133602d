package staging_test

import (
	"errors"
	"testing"

	"github.com/dlm/dlm/server/staging"
)

func fits(uint64, uint64) error { return nil }

func mustStage(t *testing.T, s *staging.Store, epoch, token uint64, base staging.Counts, pos uint32, data string, want staging.Counts, repeat bool) {
	t.Helper()
	got, rep, err := s.Stage(epoch, token, base, pos, "file_0", []byte(data), fits)
	if err != nil || got != want || rep != repeat {
		t.Fatalf("stage at %d: %+v repeat=%v err=%v, want %+v repeat=%v", pos, got, rep, err, want, repeat)
	}
}

func TestPlaces(t *testing.T) {
	s := staging.New(0)
	e := s.Begin(10)
	base := staging.Counts{Appends: 1, Bytes: 5}
	mustStage(t, s, e, 11, base, 2, "ab", staging.Counts{Appends: 2, Bytes: 7}, false)
	// Place 0 is the next one.
	mustStage(t, s, e, 11, base, 0, "cde", staging.Counts{Appends: 3, Bytes: 10}, false)
	// Repeats, of memory and of the base, stage nothing.
	mustStage(t, s, e, 11, base, 2, "xy", staging.Counts{Appends: 3, Bytes: 10}, true)
	mustStage(t, s, e, 11, base, 1, "z", staging.Counts{Appends: 3, Bytes: 10}, true)
	// A repeat of another size is refused.
	var mm *staging.MismatchError
	if _, _, err := s.Stage(e, 11, base, 3, "file_0", []byte("c"), fits); !errors.As(err, &mm) {
		t.Fatalf("repeat of another size: %v", err)
	}
	// A gap names what is staged.
	var gap *staging.GapError
	if _, _, err := s.Stage(e, 11, base, 5, "file_0", []byte("c"), fits); !errors.As(err, &gap) || gap.Staged != (staging.Counts{Appends: 3, Bytes: 10}) {
		t.Fatalf("gap: %v", err)
	}
	ws, perFile := s.Held(11)
	if len(ws) != 2 || string(ws[0].Data) != "ab" || string(ws[1].Data) != "cde" || perFile["file_0"] != 5 {
		t.Fatalf("held %q %v", ws, perFile)
	}
}

func TestLimitsAndBounds(t *testing.T) {
	s := staging.New(0)
	e := s.Begin(0)
	tooBig := errors.New("too big")
	mustStage(t, s, e, 1, staging.Counts{}, 1, "abc", staging.Counts{Appends: 1, Bytes: 3}, false)
	var sawSection, sawFile uint64
	_, _, err := s.Stage(e, 1, staging.Counts{}, 2, "file_0", []byte("d"), func(sec, file uint64) error {
		sawSection, sawFile = sec, file
		return tooBig
	})
	if err != tooBig || sawSection != 3 || sawFile != 3 || s.Counts(1, staging.Counts{}).Appends != 1 {
		t.Fatalf("refused append: err %v, saw %d/%d, counts %+v", err, sawSection, sawFile, s.Counts(1, staging.Counts{}))
	}
	// One section per grant: a new token's first append forgets the old one.
	mustStage(t, s, e, 2, staging.Counts{}, 1, "x", staging.Counts{Appends: 1, Bytes: 1}, false)
	if s.Len() != 1 || s.Counts(1, staging.Counts{}) != (staging.Counts{}) {
		t.Fatalf("old section kept: %d sections", s.Len())
	}
	s.Drop(2)
	if s.Len() != 0 {
		t.Fatalf("dropped section kept")
	}
}

func TestEpochs(t *testing.T) {
	s := staging.New(0)
	if _, _, err := s.Stage(s.Epoch(), 1, staging.Counts{}, 1, "file_0", []byte("x"), fits); err != staging.ErrNotLeading {
		t.Fatalf("not leading: %v", err)
	}
	e := s.Begin(7)
	mustStage(t, s, e, 8, staging.Counts{}, 1, "x", staging.Counts{Appends: 1, Bytes: 1}, false)
	if !s.SawWhole(e, 8) || s.SawWhole(e, 7) {
		t.Fatalf("SawWhole: a grant after the start is whole, one at or before it is not")
	}
	s.End()
	if s.Len() != 0 || s.SawWhole(e, 8) {
		t.Fatalf("End kept memory")
	}
	e2 := s.Begin(9)
	if _, _, err := s.Stage(e, 8, staging.Counts{}, 1, "file_0", []byte("x"), fits); err != staging.ErrNotLeading {
		t.Fatalf("old epoch: %v", err)
	}
	if _, _, err := s.Seal(e, 8, staging.Counts{}); err != staging.ErrNotLeading {
		t.Fatalf("seal with an old epoch: %v", err)
	}
	// A new leadership starts empty: the client's place 2 is a gap.
	var gap *staging.GapError
	if _, _, err := s.Stage(e2, 8, staging.Counts{}, 2, "file_0", []byte("y"), fits); !errors.As(err, &gap) || gap.Staged.Appends != 0 {
		t.Fatalf("after a change of leader: %v", err)
	}
}

func TestSeal(t *testing.T) {
	s := staging.New(0)
	e := s.Begin(0)
	mustStage(t, s, e, 1, staging.Counts{}, 1, "x", staging.Counts{Appends: 1, Bytes: 1}, false)
	ws, _, err := s.Seal(e, 1, staging.Counts{})
	if err != nil || len(ws) != 1 {
		t.Fatalf("seal: %v %v", ws, err)
	}
	if _, _, err := s.Stage(e, 1, staging.Counts{}, 2, "file_0", []byte("y"), fits); err != staging.ErrSealed {
		t.Fatalf("append to a sealed section: %v", err)
	}
	// A repeat is still answered.
	mustStage(t, s, e, 1, staging.Counts{}, 1, "x", staging.Counts{Appends: 1, Bytes: 1}, true)
	s.Unseal(1)
	mustStage(t, s, e, 1, staging.Counts{}, 2, "y", staging.Counts{Appends: 2, Bytes: 2}, false)
}

func TestMoveToTheLog(t *testing.T) {
	s := staging.New(4)
	e := s.Begin(0)
	mustStage(t, s, e, 1, staging.Counts{}, 1, "ab", staging.Counts{Appends: 1, Bytes: 2}, false)
	mustStage(t, s, e, 1, staging.Counts{}, 2, "c", staging.Counts{Appends: 2, Bytes: 3}, false)
	// Past the bound: the memory's appends and this one move to the log.
	var mv *staging.MoveError
	if _, _, err := s.Stage(e, 1, staging.Counts{}, 3, "file_0", []byte("de"), fits); !errors.As(err, &mv) || len(mv.Writes) != 2 || mv.Base != 0 {
		t.Fatalf("append past the bound: %v", err)
	}
	// While it is in flight: the same append gets the same move, a new one
	// waits, and a release waits.
	if _, _, err := s.Stage(e, 1, staging.Counts{}, 3, "file_0", []byte("de"), fits); !errors.As(err, &mv) || len(mv.Writes) != 2 || mv.Base != 0 {
		t.Fatalf("the same append again: %v", err)
	}
	if _, _, err := s.Seal(e, 1, staging.Counts{}); err != staging.ErrSealed {
		t.Fatalf("seal during a move: %v", err)
	}
	// The move applied: the log holds 3 appends, the memory none of them.
	logged := staging.Counts{Appends: 3, Bytes: 5}
	s.Settle(1, logged)
	if got := s.Counts(1, logged); got != (staging.Counts{}) {
		t.Fatalf("memory after the move: %+v", got)
	}
	// The append that moved is a repeat now; the next goes to memory.
	mustStage(t, s, e, 1, logged, 3, "de", logged, true)
	mustStage(t, s, e, 1, logged, 4, "f", staging.Counts{Appends: 4, Bytes: 6}, false)

	// A move that did not apply leaves the memory as it was.
	s2 := staging.New(2)
	e2 := s2.Begin(0)
	mustStage(t, s2, e2, 1, staging.Counts{}, 1, "ab", staging.Counts{Appends: 1, Bytes: 2}, false)
	if _, _, err := s2.Stage(e2, 1, staging.Counts{}, 2, "file_0", []byte("c"), fits); !errors.As(err, &mv) {
		t.Fatalf("append past the bound: %v", err)
	}
	s2.Settle(1, staging.Counts{})
	if got := s2.Counts(1, staging.Counts{}); got != (staging.Counts{Appends: 1, Bytes: 2}) {
		t.Fatalf("memory after a failed move: %+v", got)
	}
	// A move applied but not yet settled is not counted twice.
	if _, _, err := s2.Stage(e2, 1, staging.Counts{}, 2, "file_0", []byte("c"), fits); !errors.As(err, &mv) {
		t.Fatalf("append past the bound: %v", err)
	}
	mustStage(t, s2, e2, 1, staging.Counts{Appends: 2, Bytes: 3}, 2, "c", staging.Counts{Appends: 2, Bytes: 3}, true)
}
