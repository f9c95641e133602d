package robustness

import (
	"fmt"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The model is what a client can observe of dlm, split into independent
// partitions: each lock (acquire in a mode returns a token; appends are
// accepted only from the default lock's exclusive holder with its token;
// release or abort ends the grant; CheckToken says whether a token is
// current; a lease may end a grant at any moment, which shows only as the
// next conflicting grant, a CheckToken that says not current, or a holder's
// release refused) and one append-only file each (a committed critical
// section adds its appends to the file in one step; a read returns exactly
// the committed content). Locks are independent of each other, so each is a
// partition of its own; that tokens are unique and increasing across locks
// is checked by checkTokens, which sees every grant.

// lockKey is the default lock's partition; a named lock's is lockKeyOf.
const lockKey = "lock"

// lockKeyOf is the partition of a lock ("" is the default lock). File names
// never start with "lock".
func lockKeyOf(name string) string {
	if name == "" {
		return lockKey
	}
	return lockKey + "/" + name
}

type opKind int

const (
	mAcquire opKind = iota + 1
	mAppend
	mRelease
	mCommit
	mRead
	// mCheck is a CheckToken answer: current or not.
	mCheck
)

// input is one operation as the model sees it.
type input struct {
	key    string // a lock's partition (lockKeyOf) or a file name
	kind   opKind
	worker int
	token  uint64
	// shared: an acquire in shared mode (exclusive otherwise).
	shared bool
	// current: CheckToken's answer.
	current bool
	// unknown: the outcome was never learned (a release that may or may
	// not have happened).
	unknown bool
	// For commits and reads: the content's length and hash; for commits
	// also base^len, to extend a hash.
	n    int
	hash uint64
	pow  uint64
	desc string
}

// grant is one holder of a lock as the model knows it.
type grant struct {
	worker int
	token  uint64
}

// lockState is one lock: either free, one exclusive holder, or any number
// of shared holders. A holder the model still lists may have lost its grant
// to a lease expiry unseen; keeping it is the permissive choice, since only
// that holder's own later success (an append, a release, a current
// CheckToken) can contradict it.
type lockState struct {
	shared  bool
	holders []grant // in token order; at most one when exclusive
	last    uint64  // the highest token granted on this lock
}

func (s lockState) find(worker int, token uint64) int {
	for i, g := range s.holders {
		if g.worker == worker && g.token == token {
			return i
		}
	}
	return -1
}

// without returns the state less holder i, leaving s untouched (porcupine
// keeps earlier states).
func (s lockState) without(i int) lockState {
	hs := make([]grant, 0, len(s.holders)-1)
	hs = append(hs, s.holders[:i]...)
	hs = append(hs, s.holders[i+1:]...)
	if len(hs) == 0 {
		hs = nil
	}
	return lockState{shared: s.shared && hs != nil, holders: hs, last: s.last}
}

func (s lockState) equal(o lockState) bool {
	if s.shared != o.shared || s.last != o.last || len(s.holders) != len(o.holders) {
		return false
	}
	for i := range s.holders {
		if s.holders[i] != o.holders[i] {
			return false
		}
	}
	return true
}

type fileState struct {
	n    int
	hash uint64
}

const hashBase = 1099511628211

// contentHash returns the polynomial hash of b and base^len(b), so that
// hash(a+b) = hash(a)*pow(b) + hash(b).
func contentHash(b []byte) (h, pow uint64) {
	pow = 1
	for _, c := range b {
		h = h*hashBase + uint64(c)
		pow *= hashBase
	}
	return h, pow
}

func lockStep(s lockState, op input) (bool, lockState) {
	switch op.kind {
	case mAcquire:
		if i := s.find(op.worker, op.token); i >= 0 {
			// Re-entrant in the same mode (an abort that never arrived
			// left the grant); a token never changes its mode.
			return s.shared == op.shared, s
		}
		// Grant order is token order, on every lock.
		if op.token <= s.last {
			return false, s
		}
		g := grant{worker: op.worker, token: op.token}
		if op.shared && s.shared {
			// Joins the shared holders.
			hs := make([]grant, len(s.holders), len(s.holders)+1)
			copy(hs, s.holders)
			return true, lockState{shared: true, holders: append(hs, g), last: op.token}
		}
		// Any holder of a conflicting grant lost it to a lease expiry.
		return true, lockState{shared: op.shared, holders: []grant{g}, last: op.token}
	case mAppend:
		// Only the default lock held exclusively stages appends.
		return op.key == lockKey && !s.shared && s.find(op.worker, op.token) >= 0, s
	case mRelease:
		if i := s.find(op.worker, op.token); i >= 0 {
			return true, s.without(i)
		}
		return op.unknown, s
	case mCheck:
		i := s.find(op.worker, op.token)
		if op.current {
			return i >= 0, s
		}
		if i >= 0 {
			// Not current: the grant ended unseen (a lease expiry), and
			// nothing of it may succeed later.
			return true, s.without(i)
		}
		return true, s
	}
	return false, s
}

func modelStep(state, in, _ any) (bool, any) {
	op := in.(input)
	if s, ok := state.(lockState); ok {
		return lockStep(s, op)
	}
	s := state.(fileState)
	switch op.kind {
	case mCommit:
		return true, fileState{n: s.n + op.n, hash: s.hash*op.pow + op.hash}
	case mRead:
		return s == fileState{n: op.n, hash: op.hash}, s
	}
	return false, s
}

func isLockKey(k string) bool { return k == lockKey || strings.HasPrefix(k, lockKey+"/") }

// dlmModel is the porcupine model of dlm.
var dlmModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := make(map[string][]porcupine.Operation)
		for _, op := range history {
			k := op.Input.(input).key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return nil },
	Step: func(state, in, out any) (bool, any) {
		if state == nil {
			// Each partition starts from its own initial state.
			if isLockKey(in.(input).key) {
				state = lockState{}
			} else {
				state = fileState{}
			}
		}
		return modelStep(state, in, out)
	},
	Equal: func(a, b any) bool {
		if sa, ok := a.(lockState); ok {
			sb, ok := b.(lockState)
			return ok && sa.equal(sb)
		}
		return a == b
	},
	DescribeOperation: func(in, _ any) string {
		return in.(input).desc
	},
	DescribeState: func(state any) string {
		switch s := state.(type) {
		case lockState:
			if len(s.holders) == 0 {
				return fmt.Sprintf("free (last token %d)", s.last)
			}
			var hs []string
			for _, g := range s.holders {
				hs = append(hs, fmt.Sprintf("w%d with token %d", g.worker, g.token))
			}
			mode := "exclusively"
			if s.shared {
				mode = "shared"
			}
			return fmt.Sprintf("held %s by %s", mode, strings.Join(hs, ", "))
		case fileState:
			return fmt.Sprintf("%d bytes (hash %x)", s.n, s.hash)
		}
		return "initial"
	},
}

// operations turns the recorded history into the model's operations.
func operations(h *history) []porcupine.Operation {
	var ops []porcupine.Operation
	add := func(worker int, in input, call, ret int64) {
		ops = append(ops, porcupine.Operation{ClientId: worker, Input: in, Call: call, Output: nil, Return: ret})
	}
	for _, e := range h.events {
		switch {
		case e.Kind == "acquire" && e.Result == ok:
			add(e.Worker, input{key: lockKeyOf(e.Lock), kind: mAcquire, worker: e.Worker, token: e.Token, shared: e.Shared,
				desc: fmt.Sprintf("w%d acquire%s -> token %d", e.Worker, lockDesc(e.Lock, e.Shared), e.Token)}, e.Call, e.Return)
		case e.Kind == "append" && e.Result == ok:
			add(e.Worker, input{key: lockKey, kind: mAppend, worker: e.Worker, token: e.Token,
				desc: fmt.Sprintf("w%d append %s %q token %d -> ok", e.Worker, e.File, strings.TrimSpace(e.Data), e.Token)}, e.Call, e.Return)
		case e.Kind == "release" && e.Result != failed:
			ret := e.Return
			if e.Result == unknown {
				ret = unknownReturn
			}
			add(e.Worker, input{key: lockKeyOf(e.Lock), kind: mRelease, worker: e.Worker, token: e.Token, unknown: e.Result == unknown,
				desc: fmt.Sprintf("w%d release%s token %d -> %s", e.Worker, lockDesc(e.Lock, false), e.Token, e.Result)}, e.Call, ret)
		case e.Kind == "checktoken" && e.Result == ok:
			add(e.Worker, input{key: lockKeyOf(e.Lock), kind: mCheck, worker: e.Worker, token: e.Token, current: e.Current,
				desc: fmt.Sprintf("w%d check%s token %d -> current %v", e.Worker, lockDesc(e.Lock, false), e.Token, e.Current)}, e.Call, e.Return)
		case e.Kind == "read" && e.Result == ok:
			hsh, _ := contentHash([]byte(e.Data))
			add(e.Worker, input{key: e.File, kind: mRead, n: len(e.Data), hash: hsh,
				desc: fmt.Sprintf("w%d read %s -> %d bytes%s", e.Worker, e.File, len(e.Data), tail(e.Data))}, e.Call, e.Return)
		}
	}
	for _, s := range h.sections {
		if s.End == aborted {
			continue
		}
		ret := s.Return
		if s.End == undecided {
			ret = unknownReturn
		}
		perFile := make(map[string][]byte)
		var files []string
		for _, a := range s.Appends {
			if _, seen := perFile[a.File]; !seen {
				files = append(files, a.File)
			}
			perFile[a.File] = append(perFile[a.File], a.Data...)
		}
		for _, f := range files {
			hsh, pow := contentHash(perFile[f])
			add(s.Worker, input{key: f, kind: mCommit, worker: s.Worker, n: len(perFile[f]), hash: hsh, pow: pow, unknown: s.End == undecided,
				desc: fmt.Sprintf("w%d section %d commits %d bytes to %s (%s)", s.Worker, s.Section, len(perFile[f]), f, s.End)}, s.Call, ret)
		}
	}
	return ops
}

// tail shows the last record of a read, for the visualization.
func tail(data string) string {
	data = strings.TrimRight(data, "\n")
	if i := strings.LastIndexByte(data, '\n'); i >= 0 {
		data = data[i+1:]
	}
	if data == "" {
		return ""
	}
	return ", ending " + data
}

// lockDesc names a named lock and a shared mode, for the visualization.
func lockDesc(lock string, shared bool) string {
	var d string
	if lock != "" {
		d = fmt.Sprintf(" %q", lock)
	}
	if shared {
		d += " shared"
	}
	return d
}
