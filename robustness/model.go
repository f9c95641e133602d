package robustness

import (
	"fmt"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The model is what a client can observe of dlm, split into independent
// partitions: the lock (acquire returns a token; appends are accepted only
// from the holder with its token; release or abort ends the grant; a lease
// may end a grant at any moment, which shows only as the next grant) and
// one append-only file each (a committed critical section adds its appends
// to the file in one step; a read returns exactly the committed content).

const lockKey = "lock"

type opKind int

const (
	mAcquire opKind = iota + 1
	mAppend
	mRelease
	mCommit
	mRead
)

// input is one operation as the model sees it.
type input struct {
	key    string // lockKey or a file name
	kind   opKind
	worker int
	token  uint64
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

type lockState struct {
	holder int // worker, or -1
	token  uint64
	last   uint64
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

func modelStep(state, in, _ any) (bool, any) {
	op := in.(input)
	if op.key == lockKey {
		s := state.(lockState)
		switch op.kind {
		case mAcquire:
			// Grant order is token order; the previous holder, if any,
			// lost its grant to a lease expiry.
			if s.holder == op.worker && s.token == op.token {
				// Re-entrant: an abort that never arrived left the grant.
				return true, s
			}
			if op.token <= s.last {
				return false, s
			}
			return true, lockState{holder: op.worker, token: op.token, last: op.token}
		case mAppend:
			return s.holder == op.worker && s.token == op.token, s
		case mRelease:
			if s.holder == op.worker && s.token == op.token {
				return true, lockState{holder: -1, last: s.last}
			}
			return op.unknown, s
		}
		return false, s
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
			if in.(input).key == lockKey {
				state = lockState{holder: -1}
			} else {
				state = fileState{}
			}
		}
		return modelStep(state, in, out)
	},
	Equal: func(a, b any) bool { return a == b },
	DescribeOperation: func(in, _ any) string {
		return in.(input).desc
	},
	DescribeState: func(state any) string {
		switch s := state.(type) {
		case lockState:
			if s.holder < 0 {
				return fmt.Sprintf("free (last token %d)", s.last)
			}
			return fmt.Sprintf("held by w%d with token %d", s.holder, s.token)
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
			add(e.Worker, input{key: lockKey, kind: mAcquire, worker: e.Worker, token: e.Token,
				desc: fmt.Sprintf("w%d acquire -> token %d", e.Worker, e.Token)}, e.Call, e.Return)
		case e.Kind == "append" && e.Result == ok:
			add(e.Worker, input{key: lockKey, kind: mAppend, worker: e.Worker, token: e.Token,
				desc: fmt.Sprintf("w%d append %s %q token %d -> ok", e.Worker, e.File, strings.TrimSpace(e.Data), e.Token)}, e.Call, e.Return)
		case e.Kind == "release" && e.Result != failed:
			ret := e.Return
			if e.Result == unknown {
				ret = unknownReturn
			}
			add(e.Worker, input{key: lockKey, kind: mRelease, worker: e.Worker, token: e.Token, unknown: e.Result == unknown,
				desc: fmt.Sprintf("w%d release token %d -> %s", e.Worker, e.Token, e.Result)}, e.Call, ret)
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
