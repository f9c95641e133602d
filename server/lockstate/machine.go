package lockstate

import (
	"container/heap"
	"crypto/subtle"
	"slices"
	"sort"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// DefaultLock is the name of the lock that guards all files. Named locks are
// keyed beside it.
const DefaultLock = ""

// Limits are the state machine's bounds. They must be equal on every replica;
// limits that may differ between servers travel inside the commands instead.
type Limits struct {
	// Files is the number of files, named file_0 … file_{Files-1}.
	Files int
	// MaxOutstanding bounds a session's table of unacknowledged outcomes, so
	// a client that never acknowledges cannot grow the state without bound.
	MaxOutstanding int
	// MaxEnded is how many closed or expired sessions keep their outcomes,
	// so that a request whose response was lost still gets its original
	// answer after the session ended (a release that committed just before
	// the lease ran out must not be reported as LOCK_EXPIRED).
	MaxEnded int
	// MaxLocksPerSession bounds the locks one session holds or waits for
	// (0: none), so that one client cannot make the state grow without
	// bound by asking for ever new names.
	MaxLocksPerSession int
}

// DefaultLimits are the limits dlm runs with. Every replica must apply the
// log with the same limits, so they are a value no package can change at run
// time (a variable could be reassigned by any importer, tests included).
func DefaultLimits() Limits {
	return Limits{Files: 100, MaxOutstanding: 1024, MaxEnded: 1024, MaxLocksPerSession: 256}
}

// Write is one committed append that the caller must apply to a file, in
// order.
type Write struct {
	File string
	Data []byte
}

// Grant reports that a session was granted a lock inside an Apply, so that a
// waiting call can be woken.
type Grant struct {
	ClientID uint64
	Seq      uint64
	Token    uint64
	Lock     string
	Mode     dlmv1.LockMode
}

// Result is what applying one command did.
type Result struct {
	// Outcome is the answer to the request, recorded for repeats.
	Outcome *raftlogv1.Outcome
	// ClientID is the new session's id after an OpenSession.
	ClientID uint64
	// LeaseMs is the new session's lease length after an OpenSession, so the
	// leader can time it from the moment it exists.
	LeaseMs uint32
	// Writes are the appends committed by this command, in order.
	Writes []Write
	// Grants are the lock grants made by this command.
	Grants []Grant
	// Ended lists sessions that this command closed or expired.
	Ended []uint64
	// EndedToken is the token of the grant this command ended (released,
	// aborted, closed or expired), or 0, so that the leader can drop what
	// it holds in memory for that grant. A close or expiry that ends
	// several names the default lock's, the only one with a section.
	EndedToken uint64
	// DelayStarted lists the lock-delays this command started (a holder's
	// lease ran out), so that the leader times each one.
	DelayStarted []Delay
}

// Reason returns the outcome's error reason, or unspecified on success.
func (r Result) Reason() dlmv1.ErrorReason {
	if r.Outcome == nil {
		return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	return dlmv1.ErrorReason(r.Outcome.ErrorReason)
}

type session struct {
	id         uint64
	secret     string
	leaseMs    uint32
	name       string
	epoch      uint64
	ackedBelow uint64
	outcomes   map[uint64]*raftlogv1.Outcome
	openedMs   int64
	lastToken  uint64
	// named is the set of named locks the session holds or waits for, so
	// that the per-session cap, Held and the end of a session cost a pass
	// over its own locks, not over every lock. It is derived from the locks
	// (not written to snapshots) and nil until the session asks for one.
	named map[string]struct{}
}

// holder is one grant of a lock.
type holder struct {
	clientID  uint64
	seq       uint64
	token     uint64
	mode      dlmv1.LockMode // exclusive or shared, never unspecified
	grantedMs int64
	delayMs   uint32
}

type waiter struct {
	clientID uint64
	seq      uint64
	// more are the session's later acquires of the lock while it waited.
	more    []uint64
	mode    dlmv1.LockMode // exclusive or shared, never unspecified
	delayMs uint32
}

type lock struct {
	// holders are the grants, oldest first: one exclusive, or any number of
	// shared ones. Tokens grow in grant order, so the last is the newest.
	holders []holder
	// The staged section belongs to the default lock's exclusive holder.
	staged      []Write
	stagedBytes uint64
	// stagedFile is the staged bytes per file, so that the per-file limit
	// costs one lookup per append rather than a scan of the section.
	stagedFile map[string]uint64
	queue      []waiter
	lastToken  uint64
	// A lock in its lock-delay grants nothing until EndLockDelay names
	// delayToken, the expired grant that started it.
	delayed    bool
	delayToken uint64
	delayMs    uint32
}

// Machine is the replicated state: sessions, the locks with their holders,
// FIFO queues and delays, the default lock's staged critical section, the
// grant history, per-session outcomes for at-most-once execution, and the
// committed length of each file. It is deterministic: the
// same commands at the same indexes give the same state and results. It is
// not safe for concurrent use.
type Machine struct {
	limits   Limits
	sessions map[uint64]*session
	locks    map[string]*lock
	files    map[string]int64
	applied  uint64
	nextID   uint64
	// ended holds recently ended sessions by id, endedOrder their ids
	// oldest first; only their outcomes are ever read.
	ended      map[uint64]*session
	endedOrder []uint64
	// lastToken is the highest token granted so far, on any lock.
	lastToken uint64
	// history is the ring of the last HistoryCapacity grants, in grant
	// (so token) order from histStart on.
	history   []Event
	histStart int
}

// New returns an empty machine: no sessions, a free lock, empty files.
func New(limits Limits) *Machine {
	m := &Machine{
		limits:   limits,
		sessions: make(map[uint64]*session),
		locks:    map[string]*lock{DefaultLock: {}},
		files:    make(map[string]int64, limits.Files),
		nextID:   1,
		ended:    make(map[uint64]*session),
	}
	for i := 0; i < limits.Files; i++ {
		m.files[FileName(i)] = 0
	}
	return m
}

// AppliedIndex is the index of the last applied command.
func (m *Machine) AppliedIndex() uint64 { return m.applied }

// Apply executes the command at log index index. Business failures come back
// as outcomes, never as panics.
//
// The Result is the caller's: later commands do not change it, and changing
// it does not change the machine. The machine keeps the command's append
// data, which the caller must not modify afterwards.
func (m *Machine) Apply(index uint64, cmd *raftlogv1.Command) Result {
	res := m.apply(index, cmd)
	// The recorded outcome changes later (a queued acquire becomes granted),
	// and the FSM hands the result to another goroutine: return a copy.
	res.Outcome = copyOutcome(res.Outcome)
	return res
}

func (m *Machine) apply(index uint64, cmd *raftlogv1.Command) Result {
	m.applied = index
	now := cmd.GetNowUnixMs()
	switch op := cmd.GetOp().(type) {
	case *raftlogv1.Command_OpenSession:
		return m.open(index, now, op.OpenSession)
	case *raftlogv1.Command_Acquire:
		return m.acquire(index, now, op.Acquire)
	case *raftlogv1.Command_Release:
		return m.release(index, now, op.Release)
	case *raftlogv1.Command_Append:
		return m.append(index, op.Append)
	case *raftlogv1.Command_CloseSession:
		return m.closeSession(index, now, op.CloseSession)
	case *raftlogv1.Command_ExpireSession:
		return m.expire(index, now, op.ExpireSession)
	case *raftlogv1.Command_EndLockDelay:
		return m.endLockDelay(index, now, op.EndLockDelay)
	default:
		return fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT)
	}
}

func fail(r dlmv1.ErrorReason) Result {
	return Result{Outcome: &raftlogv1.Outcome{ErrorReason: uint32(r)}}
}

func (m *Machine) open(index uint64, now int64, op *raftlogv1.OpenSession) Result {
	if r := m.openLimit(op); r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return fail(r)
	}
	id := m.nextID
	m.nextID++
	m.sessions[id] = &session{
		id:       id,
		secret:   op.GetSecret(),
		leaseMs:  op.GetLeaseMs(),
		name:     op.GetName(),
		epoch:    index,
		outcomes: make(map[uint64]*raftlogv1.Outcome),
		openedMs: now,
	}
	return Result{Outcome: &raftlogv1.Outcome{}, ClientID: id, LeaseMs: op.GetLeaseMs()}
}

// admit is the one rule set for whether a caller's request runs: Admit
// (the leader, before proposing) and Apply (every replica) both ask it, so
// the fast path cannot answer otherwise than the log would. It returns the
// session, a recorded outcome when the request is a repeat, and a reason
// when the request must fail without being recorded. It changes nothing.
func (m *Machine) admit(c *raftlogv1.Caller, method raftlogv1.Method) (*session, *raftlogv1.Outcome, dlmv1.ErrorReason) {
	if o := m.endedOutcome(c); o != nil {
		if r := sameMethod(o, method); r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			return nil, nil, r
		}
		return nil, o, dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	s, reason := m.lookup(c.GetClientId(), c.GetSecret())
	if reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return nil, nil, reason
	}
	seq := c.GetSeq()
	if seq == 0 {
		return nil, nil, dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_MISSING
	}
	if seq < s.ackedBelow {
		return nil, nil, dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_ACKNOWLEDGED
	}
	if o, ok := s.outcomes[seq]; ok {
		if r := sameMethod(o, method); r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			return nil, nil, r
		}
		return s, o, dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	// Counting what the request's acknowledgement leaves costs a pass over
	// the table, so only a session at its limit pays it.
	if len(s.outcomes) >= m.limits.MaxOutstanding && s.kept(ackOf(c)) >= m.limits.MaxOutstanding {
		return nil, nil, dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS
	}
	return s, nil, dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// ackOf is the acknowledgement a request carries: a client cannot
// acknowledge the request it is sending.
func ackOf(c *raftlogv1.Caller) uint64 { return min(c.GetAckedBelow(), c.GetSeq()) }

// kept is how many outcomes the session keeps once its acknowledgement
// moves to ack.
func (s *session) kept(ack uint64) int {
	if ack <= s.ackedBelow {
		return len(s.outcomes)
	}
	n := 0
	for q := range s.outcomes {
		if q >= ack {
			n++
		}
	}
	return n
}

// acknowledge forgets the outcomes the client no longer needs.
func (s *session) acknowledge(ack uint64) {
	if ack <= s.ackedBelow {
		return
	}
	for q := range s.outcomes {
		if q < ack {
			delete(s.outcomes, q)
		}
	}
	s.ackedBelow = ack
}

// authenticate is admit for Apply: a new request moves the session's
// acknowledgement forward.
func (m *Machine) authenticate(c *raftlogv1.Caller, method raftlogv1.Method) (*session, *raftlogv1.Outcome, dlmv1.ErrorReason) {
	s, prior, reason := m.admit(c, method)
	if mutDupApply && s != nil && prior != nil {
		// The mutation runs a repeat again instead of answering it.
		prior = nil
	}
	switch {
	case reason == dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS:
		// Logs written before admit existed moved the acknowledgement even
		// for a request refused for room; every replica must keep doing so
		// to apply them alike. The refusal stands either way: what is kept
		// is still at the limit.
		m.sessions[c.GetClientId()].acknowledge(ackOf(c))
	case reason == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED && prior == nil:
		s.acknowledge(ackOf(c))
	}
	return s, prior, reason
}

// endedOutcome is the recorded outcome of a request from a session that has
// ended, or nil.
func (m *Machine) endedOutcome(c *raftlogv1.Caller) *raftlogv1.Outcome {
	s, ok := m.ended[c.GetClientId()]
	if !ok || !sameSecret(s.secret, c.GetSecret()) || c.GetSeq() == 0 {
		return nil
	}
	return s.outcomes[c.GetSeq()]
}

// sameSecret compares in constant time, so the time an answer takes tells an
// attacker nothing about how much of a guessed secret was right.
func sameSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func (m *Machine) lookup(id uint64, secret string) (*session, dlmv1.ErrorReason) {
	s, ok := m.sessions[id]
	switch {
	case ok && sameSecret(s.secret, secret):
		return s, dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	case ok:
		return nil, dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET
	case id == 0 || id >= m.nextID:
		return nil, dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN
	default:
		return nil, dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED
	}
}

// sameMethod is the rule for a repeat: a seq names
// one request, so a repeat by another method is refused rather than answered
// with the first one's outcome. Outcomes recorded before methods were kept
// match any method.
func sameMethod(o *raftlogv1.Outcome, method raftlogv1.Method) dlmv1.ErrorReason {
	if o.GetMethod() == raftlogv1.Method_METHOD_UNSPECIFIED || o.GetMethod() == method {
		return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	return dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_REUSED
}

// MethodOf is the method a command's request records its outcome under.
func MethodOf(cmd *raftlogv1.Command) raftlogv1.Method {
	switch cmd.GetOp().(type) {
	case *raftlogv1.Command_Acquire:
		return raftlogv1.Method_METHOD_ACQUIRE
	case *raftlogv1.Command_Release:
		return raftlogv1.Method_METHOD_RELEASE
	case *raftlogv1.Command_Append:
		return raftlogv1.Method_METHOD_APPEND
	case *raftlogv1.Command_CloseSession:
		return raftlogv1.Method_METHOD_CLOSE
	}
	return raftlogv1.Method_METHOD_UNSPECIFIED
}

// record stores a new request's outcome, with its method, so that a repeat
// returns it, and marks the session active at index.
func (s *session) record(index, seq uint64, method raftlogv1.Method, o *raftlogv1.Outcome) Result {
	s.epoch = index
	o.Method = method
	s.outcomes[seq] = o
	return Result{Outcome: o}
}

func (l *lock) stage(w Write) {
	if l.stagedFile == nil {
		l.stagedFile = make(map[string]uint64)
	}
	l.staged = append(l.staged, w)
	l.stagedBytes += uint64(len(w.Data))
	l.stagedFile[w.File] += uint64(len(w.Data))
}

func (m *Machine) append(index uint64, op *raftlogv1.Append) Result {
	s, prior, reason := m.authenticate(op.GetCaller(), raftlogv1.Method_METHOD_APPEND)
	if reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return fail(Fenced(reason, op.GetToken()))
	}
	if prior != nil {
		return Result{Outcome: prior}
	}
	seq := op.GetCaller().GetSeq()
	l := m.locks[DefaultLock]
	r := m.checkSection(s, op.GetToken())
	if r == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED && op.BaseAppends != nil && op.GetBaseAppends() != uint32(len(l.staged)) {
		// The writes were staged already (the same entry proposed twice),
		// or the section is not the one the leader saw: stage nothing.
		return s.record(index, seq, raftlogv1.Method_METHOD_APPEND, &raftlogv1.Outcome{
			ErrorReason: uint32(dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE), Appends: uint32(len(l.staged)), Bytes: l.stagedBytes,
		})
	}
	if r == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		// The writes the leader held, then the append itself: all or none.
		all := append(slices.Clip(op.GetWrites()), &raftlogv1.Write{File: op.GetFile(), Data: op.GetData()})
		r = m.stageWrites(l, all, op.GetMaxSectionBytes(), op.GetMaxFileBytes())
	}
	if r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return s.record(index, seq, raftlogv1.Method_METHOD_APPEND, &raftlogv1.Outcome{ErrorReason: uint32(r)})
	}
	return s.record(index, seq, raftlogv1.Method_METHOD_APPEND, &raftlogv1.Outcome{Appends: uint32(len(l.staged)), Bytes: l.stagedBytes})
}

// CheckAppend says whether an append of size bytes to file may join a
// section that already holds sectionBytes, fileStaged of them for file, under
// the limits (maxFile 0: none). The leader asks it when it stages an append in
// memory, Apply when an entry carries appends, so both refuse alike.
func (m *Machine) CheckAppend(file string, size, sectionBytes, fileStaged, maxSection, maxFile uint64) dlmv1.ErrorReason {
	if r := m.CheckFile(file); r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return r
	}
	switch {
	case size == 0:
		return dlmv1.ErrorReason_ERROR_REASON_DATA_EMPTY
	case sectionBytes+size > maxSection:
		return dlmv1.ErrorReason_ERROR_REASON_SECTION_TOO_LARGE
	case maxFile > 0 && uint64(m.files[file])+fileStaged+size > maxFile:
		return dlmv1.ErrorReason_ERROR_REASON_FILE_TOO_LARGE
	}
	return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// stageWrites stages the appends a Release or CloseSession entry carries
// after those staged by Append entries, or, if any of them breaks a limit,
// stages none and says why: the entry then changes nothing but its recorded
// outcome. The leader checked the same limits before proposing, so a refusal
// here means replicas would otherwise disagree, never a client's mistake.
func (m *Machine) stageWrites(l *lock, writes []*raftlogv1.Write, maxSection, maxFile uint64) dlmv1.ErrorReason {
	if len(writes) == 0 {
		return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	section := l.stagedBytes
	var perFile map[string]uint64
	for _, w := range writes {
		size := uint64(len(w.GetData()))
		if r := m.CheckAppend(w.GetFile(), size, section, l.stagedFile[w.GetFile()]+perFile[w.GetFile()], maxSection, maxFile); r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			return r
		}
		if perFile == nil {
			perFile = make(map[string]uint64)
		}
		section += size
		perFile[w.GetFile()] += size
	}
	for _, w := range writes {
		l.stage(Write{File: w.GetFile(), Data: w.GetData()})
	}
	return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// keepEnded keeps an ended session's outcomes, forgetting the oldest ended
// session beyond the limit.
func (m *Machine) keepEnded(s *session) {
	if m.limits.MaxEnded <= 0 {
		return
	}
	m.ended[s.id] = s
	m.endedOrder = append(m.endedOrder, s.id)
	if len(m.endedOrder) > m.limits.MaxEnded {
		delete(m.ended, m.endedOrder[0])
		m.endedOrder = m.endedOrder[1:]
	}
}

// Admit answers, without changing anything, what applying cmd would find
// first: a refusal (bad session, bad seq, no room, too many sessions), or
// the recorded outcome of a repeat (nil when the request is new and runs).
// The leader asks it before proposing, so that a repeat costs no log entry
// and a refusal no round of consensus; Apply asks the same rules, so the
// two agree (TestAdmitAgreesWithApply).
func (m *Machine) Admit(cmd *raftlogv1.Command) (*raftlogv1.Outcome, dlmv1.ErrorReason) {
	var token uint64
	switch op := cmd.GetOp().(type) {
	case *raftlogv1.Command_OpenSession:
		return nil, m.openLimit(op.OpenSession)
	case *raftlogv1.Command_ExpireSession, *raftlogv1.Command_EndLockDelay:
		return nil, dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	case *raftlogv1.Command_Release:
		token = op.Release.GetToken()
	case *raftlogv1.Command_Append:
		token = op.Append.GetToken()
	case *raftlogv1.Command_Acquire, *raftlogv1.Command_CloseSession:
	default:
		return nil, dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT
	}
	_, o, reason := m.admit(callerOf(cmd), MethodOf(cmd))
	return copyOutcome(o), Fenced(reason, token)
}

// openLimit refuses a session past the cap the command carries.
func (m *Machine) openLimit(op *raftlogv1.OpenSession) dlmv1.ErrorReason {
	if max := op.GetMaxSessions(); max > 0 && uint64(len(m.sessions)) >= max {
		return dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS
	}
	return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// callerOf is the caller of a session's request.
func callerOf(cmd *raftlogv1.Command) *raftlogv1.Caller {
	switch op := cmd.GetOp().(type) {
	case *raftlogv1.Command_Acquire:
		return op.Acquire.GetCaller()
	case *raftlogv1.Command_Release:
		return op.Release.GetCaller()
	case *raftlogv1.Command_Append:
		return op.Append.GetCaller()
	case *raftlogv1.Command_CloseSession:
		return op.CloseSession.GetCaller()
	}
	return nil
}

// copyOutcome copies an outcome field by field: Apply copies one per
// command, and proto.Clone costs several times more. TestCopyOutcome fails
// when Outcome gains a field that this misses.
func copyOutcome(o *raftlogv1.Outcome) *raftlogv1.Outcome {
	if o == nil {
		return nil
	}
	return &raftlogv1.Outcome{
		ErrorReason: o.ErrorReason,
		Granted:     o.Granted,
		Token:       o.Token,
		Queued:      o.Queued,
		Appends:     o.Appends,
		Bytes:       o.Bytes,
		Method:      o.Method,
	}
}

// CheckGrant says whether the session holds the grant named by token, with
// the reason Apply gives an Append entry when it does not: the leader fences
// the appends it stages in memory by the same rule.
func (m *Machine) CheckGrant(id uint64, secret string, token uint64) dlmv1.ErrorReason {
	s, r := m.lookup(id, secret)
	if r != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return Fenced(r, token)
	}
	return m.checkSection(s, token)
}

// checkSection says whether token is the session's grant of the default
// lock, held exclusively: only such a grant has a critical section.
func (m *Machine) checkSection(s *session, token uint64) dlmv1.ErrorReason {
	l := m.locks[DefaultLock]
	i, r := m.checkToken(DefaultLock, l, s, token)
	if r == reasonNone && l.holders[i].mode != modeExclusive {
		return dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_EXCLUSIVE
	}
	return r
}

// Authenticate checks a session's id and secret.
func (m *Machine) Authenticate(id uint64, secret string) dlmv1.ErrorReason {
	_, r := m.lookup(id, secret)
	return r
}

// Saturated reports whether the session's table of unacknowledged outcomes
// is full, so that it can change nothing until a request acknowledges some
// of them. A client that keeps its acknowledgement moving is never here; one
// whose acknowledgement is stuck stays here for good, and the leader stops
// renewing its lease so that it cannot keep the lock forever.
func (m *Machine) Saturated(id uint64) bool {
	s, ok := m.sessions[id]
	return ok && len(s.outcomes) >= m.limits.MaxOutstanding
}

// HeldToken is the token of the session's grant of the default lock, in
// either mode, or 0.
func (m *Machine) HeldToken(id uint64) uint64 {
	l := m.locks[DefaultLock]
	if i := l.holderIndex(id); i >= 0 {
		return l.holders[i].token
	}
	return 0
}

// QueuePosition is the session's 1-based place in the default lock's queue,
// or 0.
func (m *Machine) QueuePosition(id uint64) int {
	return m.locks[DefaultLock].position(id)
}

// SessionInfo is what the leader needs to time a session's lease.
type SessionInfo struct {
	ClientID uint64
	Name     string
	LeaseMs  uint32
	Epoch    uint64
}

// Sessions lists the open sessions in the order they were opened.
func (m *Machine) Sessions() []SessionInfo {
	out := make([]SessionInfo, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, SessionInfo{ClientID: s.id, Name: s.name, LeaseMs: s.leaseMs, Epoch: s.epoch})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out
}

// SessionCount is the number of open sessions.
func (m *Machine) SessionCount() int { return len(m.sessions) }

// SessionsAfter lists at most limit open sessions with ids above after, in
// the order they were opened, and whether more follow. It costs one pass
// over the table and a sort of one page, not of the table.
func (m *Machine) SessionsAfter(after uint64, limit int) ([]SessionInfo, bool) {
	if limit <= 0 {
		return nil, len(m.sessions) > 0
	}
	// Keep the limit smallest ids above after in a max-heap of ids.
	h := make(idHeap, 0, min(limit, len(m.sessions)))
	more := false
	for id := range m.sessions {
		switch {
		case id <= after:
		case len(h) < limit:
			heap.Push(&h, id)
		case id < h[0]:
			h[0] = id
			heap.Fix(&h, 0)
			more = true
		default:
			more = true
		}
	}
	sort.Slice(h, func(i, j int) bool { return h[i] < h[j] })
	out := make([]SessionInfo, len(h))
	for i, id := range h {
		s := m.sessions[id]
		out[i] = SessionInfo{ClientID: s.id, Name: s.name, LeaseMs: s.leaseMs, Epoch: s.epoch}
	}
	return out, more
}

// idHeap is a max-heap of session ids.
type idHeap []uint64

func (h idHeap) Len() int           { return len(h) }
func (h idHeap) Less(i, j int) bool { return h[i] > h[j] }
func (h idHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *idHeap) Push(x any)        { *h = append(*h, x.(uint64)) }
func (h *idHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Session returns one open session.
func (m *Machine) Session(id uint64) (SessionInfo, bool) {
	s, ok := m.sessions[id]
	if !ok {
		return SessionInfo{}, false
	}
	return SessionInfo{ClientID: s.id, Name: s.name, LeaseMs: s.leaseMs, Epoch: s.epoch}, true
}

// StagedFileBytes is how many bytes Append entries staged for file in the
// current critical section.
func (m *Machine) StagedFileBytes(file string) uint64 {
	return m.locks[DefaultLock].stagedFile[file]
}

// FileSize is a file's committed length.
func (m *Machine) FileSize(name string) int64 { return m.files[name] }
