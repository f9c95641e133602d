package lockstate_test

import (
	"fmt"
	"testing"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// benchClient holds one session's commands, built once and renumbered for
// each use: Apply keeps none of them except append data, which never
// changes. So the figures are the machine's own allocations.
type benchClient struct {
	caller            *raftlogv1.Caller
	acquire, app, rel *raftlogv1.Command
	releaseOp         *raftlogv1.Release
	appendMsg         *raftlogv1.Append
}

func newBenchClient(id uint64, data []byte) *benchClient {
	bc := &benchClient{caller: c(id, 0)}
	bc.acquire = acquireCmd(bc.caller)
	bc.appendMsg = &raftlogv1.Append{Caller: bc.caller, File: "file_7", Data: data, MaxSectionBytes: defaultMaxSect}
	bc.app = &raftlogv1.Command{Op: &raftlogv1.Command_Append{Append: bc.appendMsg}}
	bc.releaseOp = &raftlogv1.Release{Caller: bc.caller}
	bc.rel = &raftlogv1.Command{Op: &raftlogv1.Command_Release{Release: bc.releaseOp}}
	return bc
}

// next numbers the client's next request, acknowledging all before it, as
// the client library does.
func (bc *benchClient) next() {
	bc.caller.Seq++
	bc.caller.AckedBelow = bc.caller.Seq
}

type benchLog struct {
	m   *lockstate.Machine
	idx uint64
}

func (l *benchLog) apply(b *testing.B, cmd *raftlogv1.Command) lockstate.Result {
	l.idx++
	cmd.NowUnixMs = int64(l.idx)
	r := l.m.Apply(l.idx, cmd)
	if r.Reason() != rNone {
		b.Fatalf("index %d (%s): %s", l.idx, cmdName(cmd), r.Reason())
	}
	return r
}

func (l *benchLog) open(b *testing.B, n int, data []byte) []*benchClient {
	clients := make([]*benchClient, n)
	for i := range clients {
		r := l.apply(b, openCmd(uint64(i+1)))
		clients[i] = newBenchClient(r.ClientID, data)
	}
	return clients
}

// BenchmarkCycle is one uncontended critical section: acquire, append 32
// bytes, release (three log entries), by sessions taking turns.
func BenchmarkCycle(b *testing.B) {
	l := &benchLog{m: lockstate.New(lockstate.DefaultLimits())}
	data := make([]byte, 32)
	clients := l.open(b, 8, data)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		bc := clients[i%len(clients)]
		i++
		bc.next()
		token := l.apply(b, bc.acquire).Outcome.GetToken()
		bc.next()
		bc.appendMsg.Token = token
		l.apply(b, bc.app)
		bc.next()
		bc.releaseOp.Token = token
		if r := l.apply(b, bc.rel); len(r.Writes) != 1 {
			b.Fatalf("release wrote %d appends", len(r.Writes))
		}
	}
	b.SetBytes(int64(len(data)))
}

// BenchmarkContendedHandoff is a release that hands the lock to the next of
// N waiters inside its own Apply, plus the releaser queueing again (two log
// entries), so the queue stays N long.
func BenchmarkContendedHandoff(b *testing.B) {
	for _, waiters := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("waiters=%d", waiters), func(b *testing.B) {
			l := &benchLog{m: lockstate.New(lockstate.DefaultLimits())}
			clients := l.open(b, waiters+1, []byte("x"))
			tokens := make([]uint64, len(clients))
			for i, bc := range clients {
				bc.next()
				tokens[i] = l.apply(b, bc.acquire).Outcome.GetToken()
			}
			b.ReportAllocs()
			holder := 0
			for b.Loop() {
				bc := clients[holder]
				bc.next()
				bc.releaseOp.Token = tokens[holder]
				r := l.apply(b, bc.rel)
				if len(r.Grants) != 1 {
					b.Fatalf("release granted %d", len(r.Grants))
				}
				next := (holder + 1) % len(clients)
				tokens[next] = r.Grants[0].Token
				bc.next()
				if !l.apply(b, bc.acquire).Outcome.GetQueued() {
					b.Fatal("releaser not queued again")
				}
				holder = next
			}
		})
	}
}
