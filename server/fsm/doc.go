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
// section for no safety. On every start, hashicorp/raft restores the latest
// snapshot (which rewrites each file byte for byte from the snapshot's copy)
// and re-applies the log after it; the first apply with no snapshot before
// it empties every file first. So whatever a kill -9 left in the files (a
// torn write, a lost page, an append written twice), they end exactly as the
// committed log says: every acknowledged append once, nothing else. Open
// itself changes no file, so a start that fails before Raft runs leaves the
// folder as it found it.
//
// # Storage faults
//
// Log entries carry a CRC-32C of their command (integrity.go) and snapshots
// carry one of each file's content, kept as the files are written. An entry
// that fails its checksum or does not decode, or a file whose bytes no
// longer match what was written, is a fatal fault: nothing more is applied
// and the node leaves the cluster (server/node). A write that fails (a full
// disk, an I/O error) is not: it is undone, retried with growing waits, and
// the fault clears once it succeeds (writes.go). Either way nothing panics,
// and while there is a fault the node serves nothing but its status.
package fsm
