//go:build !dlm_mutations

package lockstate

// The mutations break one safety mechanism each, to prove that the
// robustness suite notices. They exist only in binaries built with the
// dlm_mutations tag (see mutations_on.go); here they are constant false, so
// the compiler drops every guarded branch and the default build pays nothing.
const (
	// mutSkipFencing accepts any token as the current grant's.
	mutSkipFencing = false
	// mutDupApply executes a repeated request again instead of returning
	// its recorded outcome.
	mutDupApply = false
	// mutKeepExpired commits, instead of rolling back, the critical section
	// of a session whose lease ran out.
	mutKeepExpired = false
)
