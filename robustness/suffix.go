package robustness

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/internal/e2e"
)

// clearedSuffixMark is what hashicorp/raft logs when a follower deletes
// entries of its log that the leader's log does not have.
const clearedSuffixMark = "clearing log suffix"

// clearedSuffix makes the leader write entries it cannot commit, lets the
// others elect a new leader and commit in its place, heals so that the old
// leader deletes its uncommitted suffix, then kills it with SIGKILL and
// restarts it: it must start again and rejoin. (raft-wal before v0.4.1 left
// a log that could not be opened after a tail truncation: the node panicked
// on every start.) It returns the fault's kind: whether the old leader was
// seen to clear its suffix before it was killed.
func (c *cluster) clearedSuffix(ctx context.Context, rng *rand.Rand, h *history) string {
	old := c.leader(ctx)
	if old == nil {
		return ""
	}
	st, err := old.status(ctx)
	if err != nil {
		return ""
	}
	term, commit := st.GetNode().GetTerm(), st.GetNode().GetCommitIndex()
	cleared := old.logCount(clearedSuffixMark)
	for _, o := range c.nodes {
		if o != old {
			c.raftLink(o.idx, old.idx).Set(e2e.LinkCut, 0)
		}
	}
	// Proposals the isolated leader still takes (it steps down only when
	// its leader lease runs out) and can never commit. The workload's
	// clients that talk to it add more.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			old.API().Init(pctx, connect.NewRequest(&dlmv1.InitRequest{LeaseMs: 1000, Name: "uncommitted"}))
		})
	}
	// The others elect a leader of a later term, which commits at least
	// its first entry where the old leader's suffix lies.
	elected := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil && !elected; {
		for _, o := range c.nodes {
			if o == old {
				continue
			}
			// (Its first entry, a no-op, lies beyond the old commit index.)
			if s, err := o.status(ctx); err == nil && s.GetNode().GetRole() == "leader" && s.GetNode().GetTerm() > term &&
				s.GetNode().GetCommitIndex() > commit {
				elected = true
			}
		}
		if !elected {
			pollPause(ctx, 20*time.Millisecond)
		}
	}
	// Heal soon after the election: a long partition lets the new leader
	// compact its log past the old leader's, which is then sent a snapshot
	// instead of a conflicting entry.
	c.heal()
	wg.Wait()
	seen := false
	for deadline := time.Now().Add(5 * time.Second); elected && time.Now().Before(deadline) && ctx.Err() == nil; {
		if old.logCount(clearedSuffixMark) > cleared {
			seen = true
			break
		}
		pollPause(ctx, 20*time.Millisecond)
	}
	kind := "restart-cleared-suffix"
	if !seen {
		kind = "restart-no-suffix-cleared"
	}
	old.Kill()
	h.addFault(kind, "%s (leader in term %d) isolated, new leader elected: %v, suffix cleared: %v", old.ID, term, elected, seen)
	// Fault schedule: the node stays down briefly.
	pollPause(ctx, time.Duration(100+rng.IntN(900))*time.Millisecond)
	c.restart(ctx, old)
	// The restarted node must come back, whatever the run's deadline.
	if err := c.awaitRejoin(context.WithoutCancel(ctx), old, 30*time.Second); err != nil {
		h.addViolation("%s did not rejoin after a restart following %s: %v", old.ID, kind, err)
	}
	return kind
}

// logCount counts the lines of the node's log (all its incarnations) that
// contain s.
func (nd *node) logCount(s string) int {
	b, err := os.ReadFile(nd.LogPath)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte(s))
}

// logTail returns the end of the node's log since its last start.
func (nd *node) logTail(max int) string {
	b, err := os.ReadFile(nd.LogPath)
	if err != nil {
		return err.Error()
	}
	if i := bytes.LastIndex(b, []byte("=== start ")); i >= 0 {
		b = b[i:]
	}
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// awaitRejoin waits until a restarted node runs, knows the leader and has
// applied everything the cluster had committed when it was restarted.
func (c *cluster) awaitRejoin(ctx context.Context, nd *node, limit time.Duration) error {
	var target uint64
	for _, o := range c.nodes {
		if o == nd {
			continue
		}
		if s, err := o.status(ctx); err == nil {
			target = max(target, s.GetNode().GetCommitIndex())
		}
	}
	var last string
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		if !nd.Running() {
			tail := nd.logTail(1500)
			if strings.Contains(tail, "address already in use") {
				// Not the node's fault: its port was taken meanwhile.
				c.restart(ctx, nd)
				continue
			}
			return fmt.Errorf("its process exited; log since its start:\n%s", tail)
		}
		s, err := nd.status(ctx)
		switch {
		case err != nil:
			last = err.Error()
		case s.GetNode().GetLeaderUrl() == "":
			last = "no leader known"
		case s.GetNode().GetAppliedIndex() < target:
			last = fmt.Sprintf("applied %d of %d", s.GetNode().GetAppliedIndex(), target)
		default:
			return nil
		}
		if err := pollPause(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("not caught up within %v (%s); log since its start:\n%s", limit, last, nd.logTail(1500))
}

// badLogMarks are lines no node may ever log: a crash, or a Raft log that
// cannot be read back (raft-wal before v0.4.1, after a tail truncation).
var badLogMarks = []string{"panic:", "fatal error:", "sealed segment has no index block"}

// checkLogs reports the first bad line of every node's log.
func (c *cluster) checkLogs() []string {
	var v []string
	for _, nd := range c.nodes {
		b, err := os.ReadFile(nd.LogPath)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if slices.ContainsFunc(badLogMarks, func(m string) bool { return strings.Contains(line, m) }) {
				v = append(v, fmt.Sprintf("%s logged: %s", nd.ID, line))
				break
			}
		}
	}
	return v
}
