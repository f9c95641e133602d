//go:build dlm_mutations

package node

import (
	"os"

	"github.com/hashicorp/raft"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// Deliberately broken behaviour for the robustness suite's mutation tests,
// chosen at start by DLM_MUTATION. Never built without the dlm_mutations tag.
var (
	mutDupApply     = os.Getenv("DLM_MUTATION") == "dup-apply"
	mutDeposedGrant = os.Getenv("DLM_MUTATION") == "deposed-grant"
	// With keep-expired an expiry commits the section lockstate holds;
	// appends staged in the leader's memory never reach it, so they go to
	// the log instead, where the mutation can act.
	mutLoggedAppends = os.Getenv("DLM_MUTATION") == "keep-expired"
)

// mutantGrant acts out a deposed leader that still believes it leads: a
// node that is not the leader grants the lock from its own applied state,
// with the next token it would have used, and no majority behind it.
func (n *Node) mutantGrant(c *raftlogv1.Caller) (Grant, bool) {
	if !mutDeposedGrant || n.raft.State() == raft.Leader {
		return Grant{}, false
	}
	var g Grant
	ok := false
	n.fsm.View(func(m *lockstate.Machine) {
		if m.Authenticate(c.GetClientId(), c.GetSecret()) == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			g, ok = Grant{Granted: true, Token: m.Lock().LastToken + 1}, true
		}
	})
	return g, ok
}
