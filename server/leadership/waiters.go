package leadership

import "sync"

// waiters wakes acquire calls waiting on a session when something happens to
// it (a grant, or its end). Waiting lives in the leader's memory; the queue
// itself is replicated state.
type waiters struct {
	mu   sync.Mutex
	byID map[uint64]chan struct{}
}

func newWaiters() *waiters { return &waiters{byID: make(map[uint64]chan struct{})} }

// watch returns a channel closed at the session's next event. Watch before
// reading the state, so that an event between the read and the wait is not
// missed.
func (w *waiters) watch(id uint64) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch, ok := w.byID[id]
	if !ok {
		ch = make(chan struct{})
		w.byID[id] = ch
	}
	return ch
}

func (w *waiters) wake(id uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.byID[id]; ok {
		close(ch)
		delete(w.byID, id)
	}
}

// watched reports whether a call waits on the session.
func (w *waiters) watched(id uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.byID[id]
	return ok
}
