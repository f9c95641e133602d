// Package e2e runs real `dlm serve` processes for end-to-end tests: it
// builds the binary once, starts a node (NewSingle) or a cluster that grows
// by joining (NewCluster: every node listens and runs Raft on 127.0.0.1:0
// and the harness learns both ports from its serving line) or a fixed
// --peers cluster (NewPeersCluster, on reserved ports, for tests of
// --peers), optionally over TLS (Cluster.UseTLS); it stops, kills
// (SIGKILL), pauses (SIGSTOP/SIGCONT) and restarts nodes on the same
// addresses and data (a learned Raft port is passed back explicitly: the
// Raft configuration keeps it), waits for a leader, and compares the
// replicas' Status and files byte for byte. Every wait is bounded; none
// sleeps in place of a condition.
//
// The tests of cmd/dlm and the robustness suite share it, and
// cmd/e2e-cluster serves it to the TypeScript and browser tests; its
// errors are plain errors so that both a test and a long-running soak can
// use it.
package e2e
