package staging

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Write is one staged append.
type Write struct {
	File string
	Data []byte
}

// Counts is the size of a section: appends and bytes.
type Counts struct {
	Appends uint32
	Bytes   uint64
}

// Add is c followed by d.
func (c Counts) Add(d Counts) Counts {
	return Counts{Appends: c.Appends + d.Appends, Bytes: c.Bytes + d.Bytes}
}

// Errors of Stage and Take. Each leaves the memory as it was.
var (
	// ErrNotLeading: the epoch passed is not the current one, or no
	// leadership is current.
	ErrNotLeading = errors.New("staging: leadership changed")
	// ErrSealed: a release of the section is being proposed.
	ErrSealed = errors.New("staging: the section is being released")
)

// GapError is an append at a place past the next one: the memory holds
// fewer appends than the client sent.
type GapError struct {
	// Staged is what is staged (base and memory).
	Staged Counts
}

func (e *GapError) Error() string {
	return fmt.Sprintf("staging: %d appends are staged", e.Staged.Appends)
}

// MismatchError is a repeat whose size differs from the append staged at its
// place: the client sent two different appends for one place.
type MismatchError struct {
	Position uint32
	Size     int
	Staged   int
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("append at place %d has %d bytes, but the append staged there has %d", e.Position, e.Size, e.Staged)
}

type section struct {
	writes  []Write
	size    uint64
	perFile map[string]uint64
	sealed  bool
	// moving, when set, is a move of the first moving.n writes to the log
	// in flight: it has applied once the log holds moving.after appends.
	moving *move
}

type move struct {
	n     int
	after uint32
}

// MoveError says the append does not fit the memory's bound: the caller
// writes Writes (what the memory holds) and the append to the log in one
// entry that stages only while the log holds Base appends, then calls
// Settle. Until then, new appends to the section are refused (ErrSealed),
// and the same append again gets the same move.
type MoveError struct {
	Writes []Write
	Base   uint32
}

func (e *MoveError) Error() string {
	return fmt.Sprintf("staging: %d appends move to the log", len(e.Writes)+1)
}

// settle drops what a move put in the log once it has applied: the log
// now holds it, the memory must not count it twice.
func (sec *section) settle(base Counts) {
	m := sec.moving
	if m == nil || base.Appends < m.after {
		return
	}
	for _, w := range sec.writes[:m.n] {
		sec.size -= uint64(len(w.Data))
		sec.perFile[w.File] -= uint64(len(w.Data))
	}
	sec.writes = slices.Clone(sec.writes[m.n:])
	sec.moving = nil
}

func (s *section) counts() Counts { return Counts{Appends: uint32(len(s.writes)), Bytes: s.size} }

// Store is the memory. It is safe for concurrent use.
type Store struct {
	mu sync.Mutex
	// bound is the bytes one section may hold in memory (0: no bound).
	bound    uint64
	epoch    uint64
	leading  bool
	begin    uint64
	sections map[uint64]*section
}

// New returns the memory of a node that does not lead. A section holds at
// most bound bytes in memory (0: no bound); an append past it moves the
// section to the log (MoveError).
func New(bound uint64) *Store { return &Store{bound: bound, sections: make(map[uint64]*section)} }

// Begin starts a stretch of leadership whose first own entry follows log
// index begin, forgetting everything, and returns its epoch.
func (s *Store) Begin(begin uint64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	s.leading, s.begin = true, begin
	clear(s.sections)
	return s.epoch
}

// End ends the stretch of leadership, forgetting everything.
func (s *Store) End() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	s.leading, s.begin = false, 0
	clear(s.sections)
}

// Epoch is the current epoch, to pass to Stage and Take.
func (s *Store) Epoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// SawWhole reports whether this leadership saw every append of the grant
// with token: the grant was made after it began, so no earlier leader
// staged any of it.
func (s *Store) SawWhole(epoch, token uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leading && s.epoch == epoch && token > s.begin
}

// Stage places an append of the grant token at position (0: the next
// place), after base appends that log entries staged. check, called with
// the bytes the memory holds for the section and for file, says whether
// the append fits the limits (a nil error) and is asked only for a new
// append. It returns the counts staged (base and memory) afterwards, and
// whether the append was a repeat.
func (s *Store) Stage(epoch, token uint64, base Counts, position uint32, file string, data []byte, check func(section, file uint64) error) (Counts, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading || s.epoch != epoch {
		return Counts{}, false, ErrNotLeading
	}
	sec := s.sections[token]
	if sec == nil {
		sec = &section{}
	}
	sec.settle(base)
	total := base.Add(sec.counts())
	if position == 0 {
		position = total.Appends + 1
	}
	switch {
	case position <= total.Appends:
		if i := int(position) - int(base.Appends) - 1; i >= 0 && len(sec.writes[i].Data) != len(data) {
			return Counts{}, false, &MismatchError{Position: position, Size: len(data), Staged: len(sec.writes[i].Data)}
		}
		return total, true, nil
	case position > total.Appends+1:
		return Counts{}, false, &GapError{Staged: total}
	case sec.moving != nil && sec.moving.n == len(sec.writes):
		// The append whose move is in flight, again: the same move.
		return Counts{}, false, &MoveError{Writes: sec.writes, Base: sec.moving.after - uint32(sec.moving.n) - 1}
	case sec.sealed || sec.moving != nil:
		return Counts{}, false, ErrSealed
	}
	if err := check(sec.size, sec.perFile[file]); err != nil {
		return Counts{}, false, err
	}
	if s.bound > 0 && sec.size+uint64(len(data)) > s.bound {
		sec.moving = &move{n: len(sec.writes), after: base.Appends + uint32(len(sec.writes)) + 1}
		s.sections[token] = sec
		return Counts{}, false, &MoveError{Writes: sec.writes, Base: base.Appends}
	}
	// The lock has one holder: any other token's section is over.
	for t := range s.sections {
		if t != token {
			delete(s.sections, t)
		}
	}
	if sec.perFile == nil {
		sec.perFile = make(map[string]uint64)
	}
	sec.writes = append(sec.writes, Write{File: file, Data: data})
	sec.size += uint64(len(data))
	sec.perFile[file] += uint64(len(data))
	s.sections[token] = sec
	return base.Add(sec.counts()), false, nil
}

// Settle ends the move of the section of token (see MoveError), given the
// appends the log now holds: a move that applied leaves the memory, one that
// did not stays in it, and new appends are taken again.
func (s *Store) Settle(token uint64, base Counts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec := s.sections[token]; sec != nil {
		sec.settle(base)
		sec.moving = nil
	}
}

// Held is what the memory holds for the grant with token: its appends in
// order (not to be modified) and the bytes per file.
func (s *Store) Held(token uint64) ([]Write, map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.sections[token]
	if sec == nil {
		return nil, nil
	}
	return sec.writes, sec.perFile
}

// Counts is the size of the memory's section for token, when log entries
// staged base.
func (s *Store) Counts(token uint64, base Counts) Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec := s.sections[token]; sec != nil {
		sec.settle(base)
		return sec.counts()
	}
	return Counts{}
}

// Seal marks the section of token as being released and returns its
// appends in order and the bytes per file, when log entries staged base, so
// that none joins it unseen until Unseal or Drop.
func (s *Store) Seal(epoch, token uint64, base Counts) ([]Write, map[string]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading || s.epoch != epoch {
		return nil, nil, ErrNotLeading
	}
	sec := s.sections[token]
	if sec == nil {
		sec = &section{}
		s.sections[token] = sec
	}
	sec.settle(base)
	if sec.moving != nil {
		return nil, nil, ErrSealed
	}
	sec.sealed = true
	return sec.writes, sec.perFile, nil
}

// Unseal reopens a section whose release did not commit.
func (s *Store) Unseal(token uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec := s.sections[token]; sec != nil {
		sec.sealed = false
	}
}

// Drop forgets the section of a grant that ended.
func (s *Store) Drop(token uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sections, token)
}

// Len is the number of sections held, so tests can prove the bound.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sections)
}
