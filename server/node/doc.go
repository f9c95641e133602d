// Package node runs one dlm server: hashicorp/raft with a raft-wal log and a
// file snapshot store around the fsm package, the leader's in-memory lease
// timers, and the registry of acquire calls waiting for their grant.
//
// Only the leader changes state, and only after its first barrier has
// applied every earlier entry. Keepalives renew leases in the leader's
// memory; they are never logged. So a new leader (or a restarted single
// node) cannot know when each session was last seen, and gives every session
// a full fresh lease before it can expire any.
package node
