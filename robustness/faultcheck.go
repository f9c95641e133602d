package robustness

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// addViolation records a broken promise seen while a fault was under way.
func (h *history) addViolation(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.violations = append(h.violations, fmt.Sprintf(format, args...))
}

// addFinding records a surprise that breaks no promise.
func (h *history) addFinding(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.findings = append(h.findings, fmt.Sprintf(format, args...))
}

func (h *history) faultViolations() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.violations...)
}

// othersApplied is the highest applied index the nodes other than skip
// report.
func (c *cluster) othersApplied(ctx context.Context, skip *node) uint64 {
	var most uint64
	for _, nd := range c.nodes {
		if nd == skip {
			continue
		}
		if st, err := nd.status(ctx); err == nil {
			most = max(most, st.GetNode().GetAppliedIndex())
		}
	}
	return most
}

// commitProbe opens a session through whichever node but skip leads, so
// that one entry commits if the cluster can commit at all. Followers refuse
// with NOT_LEADER; a failure is left to the caller's progress check.
func (c *cluster) commitProbe(ctx context.Context, skip *node) {
	for _, nd := range c.nodes {
		if nd == skip {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := nd.API().Init(actx, connect.NewRequest(&dlmv1.InitRequest{Name: "commit-probe"}))
		cancel()
		if err == nil {
			return
		}
	}
}

// awaitServing polls until nd reports no storage fault, knows a leader and
// has applied at least index, and says whether it did within limit.
func awaitServing(ctx context.Context, nd *node, index uint64, limit time.Duration) bool {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		st, err := nd.status(ctx)
		if err == nil && st.GetNode().GetStorageFault() == "" && st.GetNode().GetLeaderUrl() != "" &&
			st.GetNode().GetAppliedIndex() >= index {
			return true
		}
		if pollPause(ctx, 100*time.Millisecond) != nil {
			return false
		}
	}
	return false
}
