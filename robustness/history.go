package robustness

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sync"
	"time"
)

// unknownReturn is the return time of an operation whose outcome the client
// never learned: it may take effect at any point after its call.
const unknownReturn = math.MaxInt64

// outcome is what the client learned of an operation.
type outcome string

const (
	ok      outcome = "ok"
	failed  outcome = "failed"  // a definite refusal: nothing happened
	unknown outcome = "unknown" // the client cannot tell whether it happened
)

// event is one recorded client operation. Times are nanoseconds since the
// run started, taken before the call and after it returned.
type event struct {
	Worker int    `json:"worker"`
	Kind   string `json:"kind"` // acquire, append, release, abort, read, status, checktoken
	// Lock is a named lock's name; empty for the default lock.
	Lock string `json:"lock,omitempty"`
	// Shared marks an acquire in shared mode (and the named workers'
	// releases and CheckTokens of such a grant).
	Shared bool `json:"shared,omitempty"`
	// Current is CheckToken's answer.
	Current bool    `json:"current,omitempty"`
	Section int     `json:"section,omitempty"`
	Session uint64  `json:"session,omitempty"`
	Token   uint64  `json:"token,omitempty"`
	File    string  `json:"file,omitempty"`
	Data    string  `json:"data,omitempty"`
	Result  outcome `json:"result"`
	Err     string  `json:"err,omitempty"`
	Call    int64   `json:"call"`
	Return  int64   `json:"return"`
	// LastToken is a consistent Status's last granted token.
	LastToken uint64 `json:"last_token,omitempty"`
	// Stale marks an append or release sent on purpose with a token the
	// sender no longer holds.
	Stale bool `json:"stale,omitempty"`
}

// sectionEnd is how a critical section ended, as far as its client knows.
type sectionEnd string

const (
	committed sectionEnd = "committed" // Release answered ok
	aborted   sectionEnd = "aborted"   // definitely not committed
	undecided sectionEnd = "unknown"   // may or may not have committed
)

// section is one critical section of one worker: its appends in order.
type section struct {
	Worker  int        `json:"worker"`
	Section int        `json:"section"`
	Token   uint64     `json:"token"`
	Appends []appended `json:"appends"`
	End     sectionEnd `json:"end"`
	// Release is the event that ended it (zero for an abort).
	Call, Return int64
	// Refused is the refusal the client got for a release one of whose
	// attempts lost its answer (the section is undecided).
	Refused string `json:"refused,omitempty"`
}

type appended struct {
	File string `json:"file"`
	Data string `json:"data"`
}

// sample is one status poll of one node by the harness.
type sample struct {
	Node        int    `json:"node"`
	Incarnation int    `json:"incarnation"`
	At          int64  `json:"at"`
	Applied     uint64 `json:"applied"`
	Holder      uint64 `json:"holder"`
	Token       uint64 `json:"token"`
	LastToken   uint64 `json:"last_token"`
}

// fault is one injected fault, for the summary and the history file.
type fault struct {
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
	At     int64  `json:"at"`
}

// history is everything recorded during one run. It is safe for
// concurrent use.
type history struct {
	start time.Time

	mu       sync.Mutex
	events   []event
	sections []*section
	samples  []sample
	faults   []fault
	// findings are surprises that are not violations of dlm's promises
	// as the suite states them, worth a look.
	findings []string
	// violations are found while the run goes on (a node that does not
	// come back, a client that wedges), not by the checks at the end.
	violations []string
}

func newHistory() *history { return &history{start: time.Now()} }

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(e event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
}

func (h *history) addSection(s *section) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sections = append(h.sections, s)
}

func (h *history) addSample(s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples = append(h.samples, s)
}

func (h *history) addFault(kind, format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = append(h.faults, fault{Kind: kind, Detail: fmt.Sprintf(format, args...), At: int64(time.Since(h.start))})
}

// faultCounts counts the faults by kind.
func (h *history) faultCounts() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := make(map[string]int)
	for _, f := range h.faults {
		m[f.Kind]++
	}
	return m
}

// write stores the whole history as JSON.
func (h *history) write(path string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, err := json.MarshalIndent(struct {
		Events   []event    `json:"events"`
		Sections []*section `json:"sections"`
		Faults   []fault    `json:"faults"`
		Samples  []sample   `json:"samples"`
	}{h.events, h.sections, h.faults, h.samples}, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
