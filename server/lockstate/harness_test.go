package lockstate_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// The tests drive the machine with scripts: every step names its log index
// and the leader's time explicitly, as Raft and the leader would.

const (
	rNone          = dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	rLockExpired   = dlmv1.ErrorReason_ERROR_REASON_LOCK_EXPIRED
	rIncomplete    = dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE
	rNotHolder     = dlmv1.ErrorReason_ERROR_REASON_NOT_HOLDER
	rFileNotFound  = dlmv1.ErrorReason_ERROR_REASON_FILE_NOT_FOUND
	rInvalidFile   = dlmv1.ErrorReason_ERROR_REASON_INVALID_FILE_NAME
	rSessionExp    = dlmv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED
	rSessionUnk    = dlmv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN
	rBadSecret     = dlmv1.ErrorReason_ERROR_REASON_BAD_SECRET
	rSeqMissing    = dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_MISSING
	rSeqAcked      = dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_ACKNOWLEDGED
	rDataEmpty     = dlmv1.ErrorReason_ERROR_REASON_DATA_EMPTY
	rSectionLarge  = dlmv1.ErrorReason_ERROR_REASON_SECTION_TOO_LARGE
	rTooMany       = dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS
	rInvalidArg    = dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT
	defaultMaxSect = 1 << 20

	exclusive = dlmv1.LockMode_LOCK_MODE_EXCLUSIVE
	shared    = dlmv1.LockMode_LOCK_MODE_SHARED
)

// --- commands ---------------------------------------------------------------

// sec is the secret the tests give session id.
func sec(id uint64) string { return "secret-" + strconv.FormatUint(id, 10) }

// c is the caller (id, seq) with the right secret and nothing acknowledged.
func c(id, seq uint64) *raftlogv1.Caller {
	return &raftlogv1.Caller{ClientId: id, Secret: sec(id), Seq: seq}
}

// cAck is c acknowledging every sequence below ack.
func cAck(id, seq, ack uint64) *raftlogv1.Caller {
	cl := c(id, seq)
	cl.AckedBelow = ack
	return cl
}

// cSecret is c with another secret.
func cSecret(id, seq uint64, secret string) *raftlogv1.Caller {
	cl := c(id, seq)
	cl.Secret = secret
	return cl
}

// openCmd opens the session that will get id (ids are handed out 1, 2, 3…).
func openCmd(id uint64) *raftlogv1.Command {
	return &raftlogv1.Command{Op: &raftlogv1.Command_OpenSession{OpenSession: &raftlogv1.OpenSession{
		Secret: sec(id), LeaseMs: 10_000, Name: "client-" + strconv.FormatUint(id, 10),
	}}}
}

func acquireCmd(cl *raftlogv1.Caller) *raftlogv1.Command {
	return &raftlogv1.Command{Op: &raftlogv1.Command_Acquire{Acquire: &raftlogv1.Acquire{Caller: cl}}}
}

func tryCmd(cl *raftlogv1.Caller) *raftlogv1.Command {
	return &raftlogv1.Command{Op: &raftlogv1.Command_Acquire{Acquire: &raftlogv1.Acquire{Caller: cl, Try: true}}}
}

func releaseCmd(cl *raftlogv1.Caller, token uint64) *raftlogv1.Command {
	return &raftlogv1.Command{Op: &raftlogv1.Command_Release{Release: &raftlogv1.Release{Caller: cl, Token: token}}}
}

func abortCmd(cl *raftlogv1.Caller, token uint64) *raftlogv1.Command {
	return &raftlogv1.Command{Op: &raftlogv1.Command_Release{Release: &raftlogv1.Release{Caller: cl, Token: token, Abort: true}}}
}

func appendCmd(cl *raftlogv1.Caller, token uint64, file, data string) *raftlogv1.Command {
	return appendMax(cl, token, file, data, defaultMaxSect)
}

func appendMax(cl *raftlogv1.Caller, token uint64, file, data string, maxSection uint64) *raftlogv1.Command {
	return &raftlogv1.Command{Op: &raftlogv1.Command_Append{Append: &raftlogv1.Append{
		Caller: cl, Token: token, File: file, Data: []byte(data), MaxSectionBytes: maxSection,
	}}}
}

func closeCmd(cl *raftlogv1.Caller) *raftlogv1.Command {
	return &raftlogv1.Command{Op: &raftlogv1.Command_CloseSession{CloseSession: &raftlogv1.CloseSession{Caller: cl}}}
}

func expireCmd(id, epoch uint64) *raftlogv1.Command {
	return &raftlogv1.Command{Op: &raftlogv1.Command_ExpireSession{ExpireSession: &raftlogv1.ExpireSession{ClientId: id, Epoch: epoch}}}
}

// callerOf is the command's caller, or nil.
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

// check is Admit for a request of method by cl, with no token.
func check(m *lockstate.Machine, cl *raftlogv1.Caller, method raftlogv1.Method) (*raftlogv1.Outcome, dlmv1.ErrorReason) {
	var cmd *raftlogv1.Command
	switch method {
	case raftlogv1.Method_METHOD_ACQUIRE:
		cmd = acquireCmd(cl)
	case raftlogv1.Method_METHOD_RELEASE:
		cmd = releaseCmd(cl, 0)
	case raftlogv1.Method_METHOD_APPEND:
		cmd = appendCmd(cl, 0, "file_0", "x")
	case raftlogv1.Method_METHOD_CLOSE:
		cmd = closeCmd(cl)
	default:
		panic("check: no command for " + method.String())
	}
	return m.Admit(cmd)
}

// --- expected results ---------------------------------------------------------

type mod func(*lockstate.Result)

func with(r lockstate.Result, mods ...mod) lockstate.Result {
	for _, m := range mods {
		m(&r)
	}
	return r
}

// grant expects the command to grant the default lock exclusively to
// (id, seq) with token.
func grant(id, seq, token uint64) mod {
	return grantOn("", exclusive, id, seq, token)
}

// grantOn expects the command to grant lock in mode to (id, seq) with token.
func grantOn(lock string, mode dlmv1.LockMode, id, seq, token uint64) mod {
	return func(r *lockstate.Result) {
		r.Grants = append(r.Grants, lockstate.Grant{ClientID: id, Seq: seq, Token: token, Lock: lock, Mode: mode})
	}
}

// writes expects the command to commit these appends, in order.
func writes(ws ...lockstate.Write) mod {
	return func(r *lockstate.Result) { r.Writes = append(r.Writes, ws...) }
}

// ended expects the command to end these sessions.
func ended(ids ...uint64) mod {
	return func(r *lockstate.Result) { r.Ended = append(r.Ended, ids...) }
}

func w(file, data string) lockstate.Write { return lockstate.Write{File: file, Data: []byte(data)} }

func res(o *raftlogv1.Outcome) lockstate.Result { return lockstate.Result{Outcome: o} }

// ok is a plain success (a release with nothing staged, an abort, a try
// that found the lock held, an ignored expiry, a close without the lock).
func ok() lockstate.Result { return res(&raftlogv1.Outcome{}) }

func fails(r dlmv1.ErrorReason) lockstate.Result {
	return res(&raftlogv1.Outcome{ErrorReason: uint32(r)})
}

// opened is the result of openCmd(id).
func opened(id uint64) lockstate.Result {
	return lockstate.Result{Outcome: &raftlogv1.Outcome{}, ClientID: id, LeaseMs: 10_000}
}

// granted is the outcome of an acquire that holds the lock with token.
func granted(token uint64) lockstate.Result {
	return res(&raftlogv1.Outcome{Granted: true, Token: token})
}

// grantedNow is an acquire granted by the command itself.
func grantedNow(id, seq, token uint64) lockstate.Result {
	return with(granted(token), grant(id, seq, token))
}

func queued() lockstate.Result { return res(&raftlogv1.Outcome{Queued: true}) }

// staged is an append's outcome: appends and bytes staged so far.
func staged(n uint32, b uint64) lockstate.Result {
	return res(&raftlogv1.Outcome{Appends: n, Bytes: b})
}

// committed is a release's outcome: appends and bytes committed.
func committed(n uint32, b uint64, ws ...lockstate.Write) lockstate.Result {
	return with(res(&raftlogv1.Outcome{Appends: n, Bytes: b}), writes(ws...))
}

func fmtOutcome(o *raftlogv1.Outcome) string {
	if o == nil {
		return "<nil>"
	}
	s := prototext.MarshalOptions{}.Format(o)
	if s == "" {
		return "{}"
	}
	return "{" + s + "}"
}

func withoutMethod(o *raftlogv1.Outcome) *raftlogv1.Outcome {
	if o == nil {
		return nil
	}
	o = proto.Clone(o).(*raftlogv1.Outcome)
	o.Method = raftlogv1.Method_METHOD_UNSPECIFIED
	return o
}

// diffResult describes how got differs from want; "" when equal. Nil and
// empty lists are equal.
func diffResult(got, want lockstate.Result) string {
	var d []string
	// The method an outcome records is checked by TestSeqReusedByAnotherMethod.
	if !proto.Equal(withoutMethod(got.Outcome), withoutMethod(want.Outcome)) {
		d = append(d, fmt.Sprintf("outcome %s, want %s", fmtOutcome(got.Outcome), fmtOutcome(want.Outcome)))
	}
	if got.ClientID != want.ClientID {
		d = append(d, fmt.Sprintf("client id %d, want %d", got.ClientID, want.ClientID))
	}
	if !slices.EqualFunc(got.Writes, want.Writes, func(a, b lockstate.Write) bool {
		return a.File == b.File && bytes.Equal(a.Data, b.Data)
	}) {
		d = append(d, fmt.Sprintf("writes %q, want %q", got.Writes, want.Writes))
	}
	if !slices.Equal(got.Grants, want.Grants) {
		d = append(d, fmt.Sprintf("grants %+v, want %+v", got.Grants, want.Grants))
	}
	if !slices.Equal(got.Ended, want.Ended) {
		d = append(d, fmt.Sprintf("ended %v, want %v", got.Ended, want.Ended))
	}
	if got.LeaseMs != want.LeaseMs {
		d = append(d, fmt.Sprintf("lease %d ms, want %d", got.LeaseMs, want.LeaseMs))
	}
	// Whatever Result gains later is compared too.
	if len(d) == 0 && !reflect.DeepEqual(normalize(got), normalize(want)) {
		d = append(d, fmt.Sprintf("%+v, want %+v", got, want))
	}
	return strings.Join(d, "; ")
}

// normalize clears what diffResult compares by meaning rather than by form.
func normalize(r lockstate.Result) lockstate.Result {
	r.Outcome = nil
	// Which grant ended is checked by TestEndedToken.
	r.EndedToken = 0
	if len(r.Writes) == 0 {
		r.Writes = nil
	}
	if len(r.Grants) == 0 {
		r.Grants = nil
	}
	if len(r.Ended) == 0 {
		r.Ended = nil
	}
	return r
}

// --- scripts -----------------------------------------------------------------

// effect says what a step may change besides the applied index.
type effect int

const (
	// anyEffect: the step may change the state.
	anyEffect effect = iota
	// noEffect: nothing but the applied index changes (a repeat, a request
	// refused before it is recorded, an ignored expiry).
	noEffect
	// recordOnly: a refused request whose outcome is recorded for repeats;
	// only the caller's outcome table and epoch change besides the index.
	recordOnly
)

type step struct {
	idx    uint64
	now    int64
	cmd    *raftlogv1.Command
	want   lockstate.Result
	effect effect
	// check, when set, looks at the machine after the step.
	check func(t *testing.T, m *lockstate.Machine)
}

type script struct {
	name   string
	limits lockstate.Limits // zero: DefaultLimits
	steps  []step
	check  func(t *testing.T, m *lockstate.Machine)
}

// opens are the steps that open sessions 1..n at indexes 1..n, at times
// 1000, 2000, … ms.
func opens(n int) []step {
	var s []step
	for i := uint64(1); i <= uint64(n); i++ {
		s = append(s, step{idx: i, now: int64(i) * 1000, cmd: openCmd(i), want: opened(i)})
	}
	return s
}

func then(a []step, b ...step) []step { return append(slices.Clip(a), b...) }

func runScripts(t *testing.T, scripts []script) {
	t.Helper()
	for _, sc := range scripts {
		t.Run(sc.name, func(t *testing.T) {
			m := runScript(t, sc)
			if sc.check != nil && !t.Failed() {
				sc.check(t, m)
			}
		})
	}
}

func runScript(t *testing.T, sc script) *lockstate.Machine {
	t.Helper()
	limits := sc.limits
	if limits == (lockstate.Limits{}) {
		limits = lockstate.DefaultLimits()
	}
	m := lockstate.New(limits)
	var inv invariants
	for i, st := range sc.steps {
		st.cmd.NowUnixMs = st.now
		before := m.State()
		got := m.Apply(st.idx, st.cmd)
		if d := diffResult(got, st.want); d != "" {
			t.Fatalf("step %d (index %d, %s): %s", i, st.idx, cmdName(st.cmd), d)
		}
		if m.AppliedIndex() != st.idx {
			t.Fatalf("step %d: applied index %d, want %d", i, m.AppliedIndex(), st.idx)
		}
		after := m.State()
		if st.effect != anyEffect {
			want := allowedChange(before, st, got)
			if !proto.Equal(want, after) {
				t.Fatalf("step %d (index %d, %s) changed the state:\nwant %v\ngot  %v", i, st.idx, cmdName(st.cmd), want, after)
			}
		}
		inv.check(t, m, st.idx, got)
		if st.check != nil {
			st.check(t, m)
			if t.Failed() {
				t.FailNow()
			}
		}
	}
	return m
}

// allowedChange is the state before a step with only the changes its effect
// allows applied.
func allowedChange(before *raftlogv1.State, st step, got lockstate.Result) *raftlogv1.State {
	want := proto.Clone(before).(*raftlogv1.State)
	want.AppliedIndex = st.idx
	if st.effect != recordOnly {
		return want
	}
	cl := callerOf(st.cmd)
	for _, s := range want.GetSessions() {
		if s.GetClientId() == cl.GetClientId() {
			s.Epoch = st.idx
			if s.Outcomes == nil {
				s.Outcomes = make(map[uint64]*raftlogv1.Outcome)
			}
			s.Outcomes[cl.GetSeq()] = got.Outcome
		}
	}
	return want
}

func cmdName(cmd *raftlogv1.Command) string {
	if cmd.GetOp() == nil {
		return "no op"
	}
	return string(cmd.ProtoReflect().WhichOneof(cmd.ProtoReflect().Descriptor().Oneofs().ByName("op")).Name())
}

// --- invariants ----------------------------------------------------------------

// invariants checks, after every applied command, what must always hold, and
// what may only grow.
type invariants struct {
	index     uint64
	lastToken uint64
	sizes     map[string]int64
}

func (v *invariants) check(t testing.TB, m *lockstate.Machine, index uint64, res lockstate.Result) {
	t.Helper()
	st, err := checkState(m)
	if err != nil {
		t.Fatalf("index %d: %v", index, err)
	}
	if index <= v.index {
		t.Fatalf("test bug: index %d after %d", index, v.index)
	}
	v.index = index
	// The first grant's token is the index of the granting entry (unless
	// shared grants of an earlier entry used it); the others follow.
	kinds := make(map[string]dlmv1.LockMode)
	for k, g := range res.Grants {
		want := max(index, v.lastToken+1)
		if k > 0 {
			want = v.lastToken + 1
		}
		if g.Token != want || g.Token <= v.lastToken {
			t.Fatalf("index %d: grant %+v after token %d, want token %d", index, g, v.lastToken, want)
		}
		v.lastToken = g.Token
		if g.Mode != exclusive && g.Mode != shared {
			t.Fatalf("index %d: grant %+v in mode %s", index, g, g.Mode)
		}
		// One entry grants a lock to one exclusive holder or to shared ones.
		if prev, ok := kinds[g.Lock]; ok && (prev == exclusive || g.Mode == exclusive) {
			t.Fatalf("index %d: grants %+v give lock %q twice, one of them exclusively", index, res.Grants, g.Lock)
		}
		kinds[g.Lock] = g.Mode
	}
	if st.GetLastToken() != v.lastToken {
		t.Fatalf("index %d: last token %d, latest grant %d", index, st.GetLastToken(), v.lastToken)
	}
	// Files grow by exactly the committed writes.
	if v.sizes == nil {
		v.sizes = make(map[string]int64)
	}
	grew := make(map[string]int64)
	for _, wr := range res.Writes {
		grew[wr.File] += int64(len(wr.Data))
	}
	for _, name := range m.FileNames() {
		if got, want := m.FileSize(name), v.sizes[name]+grew[name]; got != want {
			t.Fatalf("index %d: %s is %d bytes, want %d", index, name, got, want)
		}
		v.sizes[name] = m.FileSize(name)
	}
}

// checkState checks the invariants that hold in every state.
func checkState(m *lockstate.Machine) (*raftlogv1.State, error) {
	st := m.State()
	return st, checkStateOf(m, st)
}

func checkStateOf(m *lockstate.Machine, st *raftlogv1.State) error {
	open := make(map[uint64]*raftlogv1.Session)
	for _, s := range st.GetSessions() {
		if s.GetClientId() == 0 || s.GetClientId() >= st.GetNextClientId() {
			return fmt.Errorf("session %d, next id %d", s.GetClientId(), st.GetNextClientId())
		}
		for q := range s.GetOutcomes() {
			if q == 0 || q < s.GetAckedBelow() {
				return fmt.Errorf("session %d keeps outcome %d below its mark %d", s.GetClientId(), q, s.GetAckedBelow())
			}
		}
		open[s.GetClientId()] = s
	}
	if len(st.GetLocks()) == 0 || st.GetLocks()[0].GetName() != lockstate.DefaultLock {
		return fmt.Errorf("locks %v, want the default lock first", st.GetLocks())
	}
	if len(st.GetLocks()) != m.LockCount() {
		return fmt.Errorf("%d locks in the state, LockCount %d", len(st.GetLocks()), m.LockCount())
	}
	for _, l := range st.GetLocks() {
		if err := checkLock(st, open, l); err != nil {
			return fmt.Errorf("lock %q: %w", l.GetName(), err)
		}
	}
	var prev uint64
	for _, e := range st.GetHistory() {
		if e.GetToken() <= prev || e.GetToken() > st.GetLastToken() {
			return fmt.Errorf("history token %d after %d (last %d)", e.GetToken(), prev, st.GetLastToken())
		}
		prev = e.GetToken()
	}
	if len(st.GetHistory()) > lockstate.HistoryCapacity {
		return fmt.Errorf("history of %d grants", len(st.GetHistory()))
	}
	l := st.GetLocks()[0]
	var stagedBytes uint64
	for _, a := range l.GetStaged() {
		if m.CheckFile(a.GetFile()) != rNone || len(a.GetData()) == 0 {
			return fmt.Errorf("staged append %q of %d bytes", a.GetFile(), len(a.GetData()))
		}
		stagedBytes += uint64(len(a.GetData()))
	}
	lv := m.Lock()
	if lv.StagedBytes != stagedBytes || lv.StagedAppends != len(l.GetStaged()) {
		return fmt.Errorf("lock view stages %d appends, %d bytes; state %d, %d", lv.StagedAppends, lv.StagedBytes, len(l.GetStaged()), stagedBytes)
	}
	return nil
}

// checkLock checks one lock: one exclusive holder or shared ones, tokens in
// grant order, no waiter that could be granted (FIFO across both modes), a
// section only under the default lock's exclusive holder, nothing left of a
// named lock that is neither held, waited for nor delayed.
func checkLock(st *raftlogv1.State, open map[uint64]*raftlogv1.Session, l *raftlogv1.Lock) error {
	if l.GetHolder() != 0 || l.GetToken() != 0 {
		return fmt.Errorf("old-style holder %d token %d", l.GetHolder(), l.GetToken())
	}
	hs := l.GetHolders()
	seen := make(map[uint64]bool)
	var prev uint64
	for _, h := range hs {
		s, ok := open[h.GetClientId()]
		if !ok || seen[h.GetClientId()] {
			return fmt.Errorf("holder %d has no session or holds twice", h.GetClientId())
		}
		seen[h.GetClientId()] = true
		if h.GetToken() <= prev || h.GetToken() > l.GetLastToken() || h.GetToken() > s.GetLastToken() || l.GetLastToken() > st.GetLastToken() {
			return fmt.Errorf("holder %d token %d after %d; lock's last %d, session's last %d, state's last %d",
				h.GetClientId(), h.GetToken(), prev, l.GetLastToken(), s.GetLastToken(), st.GetLastToken())
		}
		prev = h.GetToken()
		if m := dlmv1.LockMode(h.GetMode()); m != shared && (m != exclusive || len(hs) > 1) {
			return fmt.Errorf("%d holders, one in mode %s", len(hs), m)
		}
	}
	for _, wt := range l.GetQueue() {
		if seen[wt.GetClientId()] {
			return fmt.Errorf("session %d twice in holders+queue %v/%v", wt.GetClientId(), hs, l.GetQueue())
		}
		seen[wt.GetClientId()] = true
		if _, ok := open[wt.GetClientId()]; !ok {
			return fmt.Errorf("waiter %d has no session", wt.GetClientId())
		}
	}
	if q := l.GetQueue(); len(q) > 0 && !l.GetDelayed() {
		if len(hs) == 0 {
			return fmt.Errorf("free and not delayed, with queue %v", q)
		}
		if dlmv1.LockMode(q[0].GetMode()) == shared && dlmv1.LockMode(hs[0].GetMode()) == shared {
			return fmt.Errorf("shared waiter %d at the head behind shared holders", q[0].GetClientId())
		}
	}
	if len(l.GetStaged()) > 0 && (l.GetName() != lockstate.DefaultLock || len(hs) != 1 || dlmv1.LockMode(hs[0].GetMode()) != exclusive) {
		return fmt.Errorf("%d staged under holders %v", len(l.GetStaged()), hs)
	}
	if l.GetName() != lockstate.DefaultLock && len(hs) == 0 && len(l.GetQueue()) == 0 && !l.GetDelayed() {
		return errors.New("left behind")
	}
	if !l.GetDelayed() && (l.GetDelayToken() != 0 || l.GetDelayMs() != 0) {
		return fmt.Errorf("delay token %d, %d ms, not delayed", l.GetDelayToken(), l.GetDelayMs())
	}
	return nil
}
