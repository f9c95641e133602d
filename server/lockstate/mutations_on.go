//go:build dlm_mutations

package lockstate

import "os"

// Deliberately broken behaviour for the robustness suite's mutation tests,
// chosen at start by DLM_MUTATION. Never built without the dlm_mutations tag.
var (
	mutSkipFencing = os.Getenv("DLM_MUTATION") == "skip-fencing"
	mutDupApply    = os.Getenv("DLM_MUTATION") == "dup-apply"
	mutKeepExpired = os.Getenv("DLM_MUTATION") == "keep-expired"
)
