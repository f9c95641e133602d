// Package e2e runs real `dlm serve` processes for end-to-end tests: it
// builds the binary once, starts a node or a fixed cluster on loopback,
// stops, kills (SIGKILL), pauses (SIGSTOP/SIGCONT) and restarts nodes on the
// same addresses and data, waits for a leader, and compares the replicas'
// Status and files byte for byte. Every wait is bounded; none sleeps in
// place of a condition.
//
// The tests of cmd/dlm and the robustness suite share it; its errors are
// plain errors so that both a test and a long-running soak can use it.
package e2e
