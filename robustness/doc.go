// Package robustness runs a three-node dlm cluster of real processes under
// a seeded storm of faults while clients hammer it, records every operation,
// and checks the history: linearizability of the lock and the files with
// porcupine, fencing tokens, what each server says about the holder, every
// critical section exactly once (or, if aborted, not at all) in the files,
// and byte-identical replicas at the end.
//
// Every Raft link and every client-to-node link runs through a TCP proxy of
// the harness that can cut, delay or black-hole it; clients also drop,
// duplicate and delay RPCs with client/faultinject. Nodes are killed with
// SIGKILL (sometimes in the middle of writing a snapshot, or just after
// deleting an uncommitted log suffix) and restarted, stopped with SIGSTOP,
// partitioned; a holder stalls past its lease. An abandoning client gives up
// appends mid-retry and carries on in the same session, which must never
// wedge. A node's disk fills (a build-tagged hook, dlm_faults) and empties
// again; a byte flips in a stopped follower's log, which must refuse to
// serve until it is wiped and rejoins.
//
// go test ./robustness/ runs the quick mode: a few seeds, a short run of the
// storage faults, and one run per mutation (a binary built with -tags
// dlm_mutations and DLM_MUTATION set) that must be reported. TestSoak with -duration and -seed runs longer:
//
//	go test ./robustness/ -run TestSoak -duration 30m -seed 42 -v
//
// A failing run writes its history, the porcupine visualization and the
// nodes' logs under robustness/results/.
package robustness
