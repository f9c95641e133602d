// Package fsm is dlm's Raft state machine: it decodes log entries, applies
// them to the pure lockstate machine, writes committed appends to the files,
// and snapshots and restores the state together with the files.
//
// # Crash argument
//
// The Raft log (fsynced by raft-wal before any change is acknowledged) and
// the snapshots (fsynced by the snapshot store) are the only durable record.
// The files are a view derived from them and are not fsynced on apply:
// paying a second fsync per release would double the cost of every critical
// section for no safety. On every start, Open truncates each file to zero,
// hashicorp/raft then restores the latest snapshot (which rewrites each file
// byte for byte from the snapshot's copy) and re-applies the log after it.
// So whatever a kill -9 left in the files (a torn write, a lost page, an
// append written twice), they end exactly as the committed log says: every
// acknowledged append once, nothing else.
package fsm
