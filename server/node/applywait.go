package node

import (
	"sync"

	"github.com/dlm/dlm/server/lockstate"
)

// applyWaits hands a leader's applied results straight to the calls that
// proposed them, from the FSM's goroutine. A raft.ApplyFuture can only be
// waited on by blocking in Error(), so waiting for it beside the call's
// context and the storage-fault channel took a goroutine per proposal;
// this takes none while the entry is applied here. An entry is known by
// its data's first byte: on the leader, Raft passes the proposer's own
// slice to the FSM (the future's log), so the address is the proposal's
// identity and no id need be stored in the log.
type applyWaits struct {
	mu sync.Mutex
	m  map[*byte]chan lockstate.Result
}

// add registers data's proposal, before it is given to Raft.
func (w *applyWaits) add(data []byte) chan lockstate.Result {
	ch := make(chan lockstate.Result, 1)
	w.mu.Lock()
	if w.m == nil {
		w.m = make(map[*byte]chan lockstate.Result)
	}
	w.m[&data[0]] = ch
	w.mu.Unlock()
	return ch
}

func (w *applyWaits) remove(data []byte) {
	w.mu.Lock()
	delete(w.m, &data[0])
	w.mu.Unlock()
}

// applied delivers an applied entry's result to its proposer, if this node
// proposed it and the proposer still waits.
func (w *applyWaits) applied(data []byte, res lockstate.Result) {
	if len(data) == 0 {
		return
	}
	w.mu.Lock()
	ch, ok := w.m[&data[0]]
	if ok {
		delete(w.m, &data[0])
	}
	w.mu.Unlock()
	if ok {
		ch <- res // buffered: never blocks the FSM
	}
}
