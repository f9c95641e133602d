//go:build !dlm_faults

package node

// injectDiskFault, with the dlm_faults tag, lets a control file named by
// DLM_FAULT_DISK fill the node's disk (see diskfault_on.go). Here it does
// nothing, and the call inlines away.
func injectDiskFault(*Config) {}
