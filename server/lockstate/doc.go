// Package lockstate is dlm's replicated state machine: sessions; the default
// lock, which guards the files and stages their critical sections, and named
// locks beside it, each with exclusive or shared holders, a FIFO queue across
// both modes, fencing tokens and a lock-delay after a holder's lease ran out;
// a ring of the last grants; and the per-session table of outcomes that
// makes every request execute at most once.
//
// It is pure and deterministic: no clocks, no I/O, no goroutines. Time enters
// only as the leader's stamp inside a command, and lease expiry arrives as a
// command decided by the leader. The Raft FSM wraps it, writes the committed
// appends it returns to the files, and snapshots it.
package lockstate
