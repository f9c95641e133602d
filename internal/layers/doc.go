// Package layers holds the test that keeps dlm's packages layered: each
// package may import only the layers below it (docs/DESIGN.md, "Package
// map"). From the bottom up:
//
//	gen                       generated protocol and Raft log types
//	server/lockstate          the pure lock state machine
//	server/fsm                Raft's FSM: lock state and files on disk
//	server/leadership         the leader's memory: terms, leases, waiters
//	server/node               the Raft host, a domain-typed API
//	server/membership         joining, announcing, reaching the leader
//	server/auth, server/service  the Connect API over node
//	cmd/dlm                   the binary, wiring it all
//
// client and gen stand apart: a program that imports the Go client gets
// nothing of the server.
package layers
