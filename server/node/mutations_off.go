//go:build !dlm_mutations

package node

import raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"

// mutDupApply, with the dlm_mutations tag, makes the node propose a
// repeated request again instead of answering it from the recorded outcome
// (see mutations_on.go). Constant false here: the branch compiles away.
const mutDupApply = false

// mutLoggedAppends, with the dlm_mutations tag and the keep-expired
// mutation, stages every append in the log as before memory staging, so
// that the mutation (an expiry that commits the section) has a section in
// the log to commit and the robustness suite can catch it.
const mutLoggedAppends = false

// mutantGrant, with the dlm_mutations tag, lets a node that is not the
// leader grant the lock from its own state without a majority. Here it
// never does, and the call inlines to nothing.
func (n *Node) mutantGrant(*raftlogv1.Caller) (Grant, bool) { return Grant{}, false }
