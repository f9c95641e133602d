// Package node runs one dlm server: hashicorp/raft with a raft-wal log and a
// file snapshot store around the fsm package. What the leader keeps only in
// memory (its term, the lease deadlines, the waiting acquires) lives in
// server/leadership; node begins and ends its terms as Raft elects and
// deposes this node, hands it every applied result, and proposes the
// expiries it asks for. Its API takes and returns domain types (Caller,
// Grant, Section, Status); server/service adapts them to the protocol. It
// makes no calls to other members: server/membership joins and announces
// it from the serve wiring, and AddMember's check of a new client URL is
// injected (Config.VerifyURL).
//
// Only the leader changes state, and only after its first barrier has
// applied every earlier entry. Keepalives renew leases in the leader's
// memory; they are never logged. So a new leader (or a restarted single
// node) cannot know when each session was last seen, and gives every session
// a full fresh lease before it can expire any.
package node
