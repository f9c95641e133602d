package node

import (
	"github.com/hashicorp/raft"

	"github.com/dlm/dlm/server/fsm"
	"github.com/dlm/dlm/server/lockstate"
	"github.com/dlm/dlm/server/metrics"
)

// Metrics are the node's Prometheus metrics (see server/metrics).
func (n *Node) Metrics() *metrics.Metrics { return n.metrics }

// newMetrics registers the gauges read at scrape time: they take the
// FSM's read lock or ask Raft, so they cost nothing between scrapes.
func (n *Node) newMetrics() *metrics.Metrics {
	m := metrics.New()
	view := func(read func(m *lockstate.Machine) int) func() float64 {
		return func() float64 {
			var v int
			n.fsm.View(func(m *lockstate.Machine) { v = read(m) })
			return float64(v)
		}
	}
	m.Gauge("dlm_sessions", "Open sessions in the applied state.", view((*lockstate.Machine).SessionCount))
	m.Gauge("dlm_waiters", "Sessions queued for the default lock in the applied state.", view((*lockstate.Machine).QueueLength))
	m.Gauge("dlm_locks", "Live locks (held, waited for or in their lock-delay) in the applied state, the default lock included.", view((*lockstate.Machine).LockCount))
	m.Gauge("dlm_lock_delays_timed", "Lock-delays this leader is timing (0 on a follower).", func() float64 { return float64(n.lead.Delays()) })
	raftIndex := func(read func() uint64) func() float64 {
		return func() float64 {
			if n.raft == nil {
				return 0
			}
			return float64(read())
		}
	}
	m.Gauge("dlm_raft_commit_index", "Raft's commit index on this member.", raftIndex(func() uint64 { return n.raft.CommitIndex() }))
	m.Gauge("dlm_raft_applied_index", "Raft's last applied index on this member.", raftIndex(func() uint64 { return n.raft.AppliedIndex() }))
	m.Gauge("dlm_raft_term", "Raft's current term on this member.", raftIndex(func() uint64 { return n.raft.CurrentTerm() }))
	m.StateGauge("dlm_raft_state", "This member's Raft state: 1 for the current one.",
		[]string{"leader", "candidate", "follower", "shutdown"}, func() string {
			if n.raft == nil {
				return "shutdown"
			}
			switch n.raft.State() {
			case raft.Leader:
				return "leader"
			case raft.Candidate:
				return "candidate"
			case raft.Follower:
				return "follower"
			default:
				return "shutdown"
			}
		})
	return m
}

// count counts an applied entry's lock events. It runs on every member, so
// the counters are the cluster's, as this member applied them.
func (n *Node) count(a fsm.Applied) {
	m := n.metrics
	m.Observe(metrics.FSMApply, a.Took)
	m.Grants(len(a.Result.Grants))
	m.LockDelays(len(a.Result.DelayStarted))
	switch {
	case a.Cmd.GetRelease() != nil && a.SectionEnded:
		// A release of token 0 gives up a grant the client never
		// learned of: nothing it staged is kept.
		if r := a.Cmd.GetRelease(); r.GetAbort() || r.GetToken() == 0 {
			m.Aborted()
		} else {
			m.Released()
		}
	case a.Cmd.GetCloseSession() != nil && a.SectionEnded:
		m.Released()
	case a.Cmd.GetExpireSession() != nil && len(a.Result.Ended) > 0:
		m.Expired(a.SectionEnded)
	}
}
