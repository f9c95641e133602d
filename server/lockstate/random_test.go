package lockstate_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// randomLimits are small so that the random histories reach every bound.
var randomLimits = lockstate.Limits{Files: 10, MaxOutstanding: 8, MaxLocksPerSession: 3}

// randomLocks are the lock names the histories use: the default lock most,
// a few named ones, now and then a malformed one.
var randomLocks = []string{"", "", "", "a", "b", "c", "d"}

var badLocks = []string{strings.Repeat("x", lockstate.MaxLockName+1), "a\x00b", "\xff", "tab\there"}

// generator makes a random but plausible history: mostly the calls a client
// library would make, with repeats, stale tokens and junk mixed in. It peeks
// at a machine (as the leader does for epochs), but every command it makes
// is applied to all machines alike.
type generator struct {
	rng     *rand.Rand
	opened  uint64            // sessions opened so far: ids 1..opened
	nextSeq map[uint64]uint64 // the client's next sequence number
	ackMark map[uint64]uint64 // the client's acknowledgement mark
	tokens  map[uint64][]uint64
	past    []*raftlogv1.Command
}

func newGenerator(seed uint64) *generator {
	return &generator{
		rng:     rand.New(rand.NewPCG(seed, 0x646c6d)),
		nextSeq: make(map[uint64]uint64),
		ackMark: make(map[uint64]uint64),
		tokens:  make(map[uint64][]uint64),
	}
}

var badFiles = []string{"", "..", "../etc/passwd", "a/b", "file_10", "file_03", "foo", "file_1\n", "file_\x00"}

func (g *generator) next(m *lockstate.Machine) *raftlogv1.Command {
	open := m.Sessions()
	if len(open) == 0 || (len(open) < 7 && g.rng.IntN(100) < 5) {
		g.opened++
		cmd := openCmd(g.opened)
		// Sometimes at the leader's session cap, sometimes just under it.
		switch n := g.rng.IntN(10); {
		case n < 2 && len(open) > 0:
			cmd.GetOpenSession().MaxSessions = uint64(len(open))
		case n < 4:
			cmd.GetOpenSession().MaxSessions = uint64(len(open) + 1)
		}
		return cmd
	}
	if n := g.rng.IntN(100); n < 8 && len(g.past) > 0 {
		// A repeat: a retry, or a duplicate the network delivered late.
		return proto.Clone(g.past[g.rng.IntN(len(g.past))]).(*raftlogv1.Command)
	} else if n < 10 {
		return g.junk()
	}
	// Mostly open sessions, sometimes a closed one, an unknown one, or 0.
	id := open[g.rng.IntN(len(open))].ClientID
	switch n := g.rng.IntN(100); {
	case n < 4:
		id = 1 + g.rng.Uint64N(g.opened)
	case n < 6:
		id = g.opened + 1 + g.rng.Uint64N(3)
	case n < 7:
		id = 0
	}
	var cmd *raftlogv1.Command
	switch n := g.rng.IntN(100); {
	case n < 28:
		if g.rng.IntN(5) == 0 {
			cmd = tryCmd(g.caller(id))
		} else {
			cmd = acquireCmd(g.caller(id))
		}
		a := cmd.GetAcquire()
		a.Lock = g.lock()
		a.Mode = []uint32{0, 0, 1, 2, 2, 2}[g.rng.IntN(6)]
		switch n := g.rng.IntN(100); {
		case n < 2:
			a.Mode = 7
		case n < 4:
			a.LockDelayMs = lockstate.MaxLockDelayMs + 1
		case n < 30:
			a.LockDelayMs = 100
		}
		if g.rng.IntN(10) == 0 {
			a.MaxLocks = 2
		}
	case n < 62:
		data := make([]byte, g.rng.IntN(48)+1)
		for i := range data {
			data[i] = byte('a' + g.rng.IntN(26))
		}
		if g.rng.IntN(20) == 0 {
			data = nil
		}
		file := lockstate.FileName(g.rng.IntN(randomLimits.Files))
		if g.rng.IntN(10) == 0 {
			file = badFiles[g.rng.IntN(len(badFiles))]
		}
		maxSection := []uint64{1 << 20, 1 << 20, 1 << 20, 128, 40}[g.rng.IntN(5)]
		cmd = appendMax(g.caller(id), g.token(m, id), file, string(data), maxSection)
		cmd.GetAppend().MaxFileBytes = []uint64{0, 0, 1 << 20, 60}[g.rng.IntN(4)]
		if g.rng.IntN(4) == 0 {
			// A leader moving what it held in memory to the log, guarded by
			// the count it saw (sometimes stale).
			a := cmd.GetAppend()
			a.Writes, _, _ = g.writes()
			base := uint32(m.Lock().StagedAppends)
			if g.rng.IntN(3) == 0 {
				base = uint32(g.rng.IntN(3))
			}
			a.BaseAppends = &base
		}
	case n < 88:
		lock := g.lock()
		if g.rng.IntN(10) == 0 {
			cmd = abortCmd(g.caller(id), g.tokenOn(m, id, lock))
		} else {
			cmd = releaseCmd(g.caller(id), g.tokenOn(m, id, lock))
		}
		cmd.GetRelease().Lock = lock
		if g.rng.IntN(2) == 0 && (lock == "" || g.rng.IntN(8) == 0) {
			// The appends the leader staged in memory, carried by the release.
			r := cmd.GetRelease()
			r.Writes, r.MaxSectionBytes, r.MaxFileBytes = g.writes()
		}
	case n < 90:
		// The leader ending a delay: mostly one in force, now and then a
		// stale or made-up one.
		lock, token := g.lock(), m.Lock().LastToken
		if ds := m.Delays(); len(ds) > 0 && g.rng.IntN(5) > 0 {
			d := ds[g.rng.IntN(len(ds))]
			lock, token = d.Lock, d.Token
		}
		if g.rng.IntN(8) == 0 {
			token++
		}
		cmd = &raftlogv1.Command{Op: &raftlogv1.Command_EndLockDelay{EndLockDelay: &raftlogv1.EndLockDelay{Lock: lock, Token: token}}}
	case n < 93:
		cmd = closeCmd(g.caller(id))
		if g.rng.IntN(2) == 0 {
			o := cmd.GetCloseSession()
			o.Writes, o.MaxSectionBytes, o.MaxFileBytes = g.writes()
		}
	default:
		// The leader's expiry, with the epoch it saw: mostly the current
		// one, sometimes an outdated or a wrong one.
		s, _ := m.Session(id)
		epoch := s.Epoch
		if g.rng.IntN(2) == 0 {
			epoch = epoch - 1 + g.rng.Uint64N(3)
		}
		cmd = expireCmd(id, epoch)
	}
	g.past = append(g.past, cmd)
	return cmd
}

// writes are 0 to 3 appends a release or close carries, sometimes a bad one,
// with the limits the leader staged them under.
func (g *generator) writes() ([]*raftlogv1.Write, uint64, uint64) {
	var ws []*raftlogv1.Write
	for range g.rng.IntN(4) {
		data := make([]byte, g.rng.IntN(48)+1)
		for i := range data {
			data[i] = byte('a' + g.rng.IntN(26))
		}
		if g.rng.IntN(30) == 0 {
			data = nil
		}
		file := lockstate.FileName(g.rng.IntN(randomLimits.Files))
		if g.rng.IntN(30) == 0 {
			file = badFiles[g.rng.IntN(len(badFiles))]
		}
		ws = append(ws, &raftlogv1.Write{File: file, Data: data})
	}
	return ws, []uint64{1 << 20, 1 << 20, 128, 40}[g.rng.IntN(4)], []uint64{0, 0, 1 << 20, 60}[g.rng.IntN(4)]
}

// caller is the session's next request: usually well formed, sometimes with
// a wrong secret, no sequence or the previous request's sequence again (a
// client bug); the client acknowledges now and then.
func (g *generator) caller(id uint64) *raftlogv1.Caller {
	g.nextSeq[id]++
	seq := g.nextSeq[id]
	if g.rng.IntN(4) == 0 {
		g.ackMark[id] = seq - g.rng.Uint64N(min(seq, 4))
	}
	cl := cAck(id, seq, g.ackMark[id])
	switch g.rng.IntN(40) {
	case 0:
		cl.Seq = 0
	case 1:
		cl.Secret = "guess"
	case 2:
		cl.Seq = max(seq-1, 1)
	}
	return cl
}

// token is the session's current token, or a stale, absent or made-up one.
func (g *generator) token(m *lockstate.Machine, id uint64) uint64 {
	held := m.HeldToken(id)
	switch n := g.rng.IntN(100); {
	case n < 70 && held != 0:
		return held
	case n < 85 && len(g.tokens[id]) > 0:
		return g.tokens[id][g.rng.IntN(len(g.tokens[id]))]
	case n < 95:
		return 0
	default:
		return m.Lock().LastToken + g.rng.Uint64N(3)
	}
}

// lock is a lock name: mostly a good one, now and then a malformed one.
func (g *generator) lock() string {
	if g.rng.IntN(40) == 0 {
		return badLocks[g.rng.IntN(len(badLocks))]
	}
	return randomLocks[g.rng.IntN(len(randomLocks))]
}

// tokenOn is the session's current token on lock, or a stale, absent,
// another lock's or made-up one.
func (g *generator) tokenOn(m *lockstate.Machine, id uint64, lock string) uint64 {
	held := m.Held(id)
	switch n := g.rng.IntN(100); {
	case n < 70:
		for _, h := range held {
			if h.Lock == lock {
				return h.Token
			}
		}
		return g.token(m, id)
	case n < 80 && len(held) > 0:
		return held[g.rng.IntN(len(held))].Token
	default:
		return g.token(m, id)
	}
}

func (g *generator) junk() *raftlogv1.Command {
	return []*raftlogv1.Command{
		{},
		{Op: &raftlogv1.Command_Acquire{}},
		{Op: &raftlogv1.Command_Append{Append: &raftlogv1.Append{File: "file_1", Data: []byte("x")}}},
		{Op: &raftlogv1.Command_Release{Release: &raftlogv1.Release{Token: 1}}},
		{Op: &raftlogv1.Command_CloseSession{}},
		{Op: &raftlogv1.Command_ExpireSession{}},
		{Op: &raftlogv1.Command_EndLockDelay{}},
	}[g.rng.IntN(7)]
}

func (g *generator) learn(res lockstate.Result) {
	if res.Reason() == dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS {
		// A refused open takes no id.
		g.opened--
	}
	for _, gr := range res.Grants {
		g.tokens[gr.ClientID] = append(g.tokens[gr.ClientID], gr.Token)
	}
}

// tokenOf is the fencing token a command carries.
func tokenOf(cmd *raftlogv1.Command) uint64 {
	switch op := cmd.GetOp().(type) {
	case *raftlogv1.Command_Release:
		return op.Release.GetToken()
	case *raftlogv1.Command_Append:
		return op.Append.GetToken()
	}
	return 0
}

// queuesOf is every lock's queue of session ids, head first.
func queuesOf(st *raftlogv1.State) map[string][]uint64 {
	q := make(map[string][]uint64)
	for _, l := range st.GetLocks() {
		for _, w := range l.GetQueue() {
			q[l.GetName()] = append(q[l.GetName()], w.GetClientId())
		}
	}
	return q
}

// checkFIFO checks that the command granted each lock to the head of its
// queue as it was, in order, skipping only the command's own session
// (which may have left the queue); a grant past the old queue can only be
// the command's own acquire.
func checkFIFO(queues map[string][]uint64, cmd *raftlogv1.Command, res lockstate.Result) error {
	self := callerOf(cmd).GetClientId()
	if e := cmd.GetExpireSession(); e != nil {
		self = e.GetClientId()
	}
	next := make(map[string]int)
	for _, g := range res.Grants {
		q := queues[g.Lock]
		i := next[g.Lock]
		for i < len(q) && q[i] == self && q[i] != g.ClientID {
			i++
		}
		switch {
		case i < len(q) && q[i] == g.ClientID:
			next[g.Lock] = i + 1
		case i >= len(q) && g.ClientID == self && cmd.GetAcquire() != nil:
			next[g.Lock] = i + 1
		default:
			return fmt.Errorf("grant %+v out of order: queue was %v, next %d", g, q, i)
		}
	}
	return nil
}

// runRandom applies n generated commands to two machines built alike, and
// to machines restored from snapshots along the way, and checks that all
// agree and that the invariants hold after every step. It returns what
// happened, by kind, to show the history reached every path.
func runRandom(t testing.TB, seed uint64, n int) map[string]int {
	t.Helper()
	g := newGenerator(seed)
	a, b := lockstate.New(randomLimits), lockstate.New(randomLimits)
	var restored *lockstate.Machine
	var inv invariants
	seen := make(map[string]int)
	idx := uint64(0)
	for i := range n {
		// Raft's own entries leave gaps in the indexes now and then.
		idx += 1 + uint64(g.rng.IntN(8)/7)
		now := int64(1_700_000_000_000) + int64(idx)*37
		cmd := g.next(a)
		cmd.NowUnixMs = now

		before := a.State()
		queues := queuesOf(before)
		cl := callerOf(cmd)
		prior, priorReason := a.Admit(cmd)
		ra := a.Apply(idx, cmd)
		rb := b.Apply(idx, cmd)
		if d := diffResult(rb, ra); d != "" {
			t.Fatalf("seed %d step %d index %d (%s %v): machines disagree: %s", seed, i, idx, cmdName(cmd), cmd, d)
		}
		after := a.State()
		if !proto.Equal(after, b.State()) {
			t.Fatalf("seed %d step %d index %d: states differ", seed, i, idx)
		}
		if restored != nil {
			rr := restored.Apply(idx, cmd)
			if d := diffResult(rr, ra); d != "" {
				t.Fatalf("seed %d step %d index %d (%s): restored machine disagrees: %s", seed, i, idx, cmdName(cmd), d)
			}
			if !proto.Equal(after, restored.State()) {
				t.Fatalf("seed %d step %d index %d: restored state differs", seed, i, idx)
			}
		}
		inv.check(t, a, idx, ra)
		if err := checkFIFO(queues, cmd, ra); err != nil {
			t.Fatalf("seed %d step %d index %d (%s %v): %v", seed, i, idx, cmdName(cmd), cmd, err)
		}
		g.learn(ra)

		// At-most-once: a request that Check answers (a repeat, or one
		// refused before it runs) changes nothing and gets that answer.
		if cl != nil && (prior != nil || priorReason != rNone) {
			want := res(prior)
			if prior == nil {
				r := priorReason
				if r == rSessionExp && tokenOf(cmd) != 0 {
					r = rLockExpired
				}
				want = fails(r)
			}
			if d := diffResult(ra, want); d != "" {
				t.Fatalf("seed %d step %d index %d (%s): answered request: %s", seed, i, idx, cmdName(cmd), d)
			}
			before.AppliedIndex = idx
			// A refusal for room still moves the acknowledgement it carries.
			if priorReason != rTooMany && !proto.Equal(before, after) {
				t.Fatalf("seed %d step %d index %d (%s): answered request changed the state", seed, i, idx, cmdName(cmd))
			}
			seen["answered"]++
		}
		// A request Admit lets through runs and is recorded, unless it
		// ended its session.
		if cl != nil && prior == nil && priorReason == rNone && len(ra.Ended) == 0 {
			if o, r := a.Admit(cmd); r != rNone || !proto.Equal(o, ra.Outcome) {
				t.Fatalf("seed %d step %d index %d (%s): recorded %s (%s), returned %s", seed, i, idx, cmdName(cmd), fmtOutcome(o), r, fmtOutcome(ra.Outcome))
			}
		}
		for _, s := range after.GetSessions() {
			if len(s.GetOutcomes()) > randomLimits.MaxOutstanding {
				t.Fatalf("seed %d step %d: session %d keeps %d outcomes", seed, i, s.GetClientId(), len(s.GetOutcomes()))
			}
		}

		seen[ra.Reason().String()]++
		seen[cmdName(cmd)]++
		if len(ra.Grants) > 0 {
			seen["grant"]++
		}
		perLock := make(map[string]int)
		for _, gr := range ra.Grants {
			perLock[gr.Lock]++
			if gr.Lock != "" {
				seen["named grant"]++
			}
			if gr.Mode == shared {
				seen["shared grant"]++
			}
		}
		for _, n := range perLock {
			if n > 1 {
				seen["shared grants together"]++
			}
		}
		if len(ra.DelayStarted) > 0 {
			seen["delay started"]++
		}
		if cmd.GetEndLockDelay() != nil && len(ra.Grants) > 0 {
			seen["granted at the end of a delay"]++
		}
		if len(before.GetLocks()) > len(after.GetLocks()) {
			seen["named lock gone"]++
		}
		if len(ra.Writes) > 0 {
			seen["write"]++
		}
		if len(ra.Ended) > 0 {
			seen["ended by "+cmdName(cmd)]++
		}
		if len(before.GetLocks()[0].GetStaged()) > 0 && len(after.GetLocks()[0].GetStaged()) == 0 && len(ra.Writes) == 0 {
			seen["section dropped"]++
		}

		// Take a snapshot now and then and follow it from here on.
		if i%250 == 125 {
			wire, err := proto.Marshal(after)
			if err != nil {
				t.Fatal(err)
			}
			st := &raftlogv1.State{}
			if err := proto.Unmarshal(wire, st); err != nil {
				t.Fatal(err)
			}
			if restored, err = lockstate.Restore(randomLimits, st); err != nil {
				t.Fatalf("seed %d step %d: restore: %v", seed, i, err)
			}
		}
	}
	return seen
}

func TestRandomHistories(t *testing.T) {
	total := make(map[string]int)
	for seed := uint64(1); seed <= 5; seed++ {
		for k, v := range runRandom(t, seed, 2000) {
			total[k] += v
		}
	}
	// The histories must reach every outcome and path, or they prove little.
	want := []string{"grant", "write", "section dropped", "answered", "named grant", "shared grant",
		"shared grants together", "delay started", "granted at the end of a delay", "named lock gone", "end_lock_delay",
		"ended by close_session", "ended by expire_session",
		"open_session", "acquire", "append", "release", "close_session", "expire_session", "no op"}
	for r := range dlmv1.ErrorReason_name {
		switch reason := dlmv1.ErrorReason(r); reason {
		case dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE,
			dlmv1.ErrorReason_ERROR_REASON_DATA_TOO_LARGE, dlmv1.ErrorReason_ERROR_REASON_DISK_FULL,
			dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT, dlmv1.ErrorReason_ERROR_REASON_INIT_RATE_LIMITED,
			dlmv1.ErrorReason_ERROR_REASON_MEMBER_CONFLICT, dlmv1.ErrorReason_ERROR_REASON_MEMBER_UNKNOWN,
			dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE,
			// An unset name is the default lock, and only CheckToken asks
			// about a lock that is not live.
			dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_EMPTY, dlmv1.ErrorReason_ERROR_REASON_LOCK_UNKNOWN:
			// Decided by the leader, never by the state machine.
		default:
			want = append(want, reason.String())
		}
	}
	slices.Sort(want)
	for _, k := range want {
		if total[k] == 0 {
			t.Errorf("random histories never reached %s", k)
		}
	}
	t.Logf("reached: %v", total)
}

// FuzzRandomHistories runs random histories from fuzzed seeds; `go test`
// runs the seed corpus below.
func FuzzRandomHistories(f *testing.F) {
	f.Add(uint64(42), uint16(500))
	f.Add(uint64(7), uint16(3000))
	f.Fuzz(func(t *testing.T, seed uint64, n uint16) {
		runRandom(t, seed, int(n%4000))
	})
}
