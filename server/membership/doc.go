// Package membership makes a node a member of its cluster from outside the
// node, over the cluster's own API, as hraftd does in its serve wiring: Join
// adds a new node through the leader (a nonvoter first, a voter once caught
// up), Announce records a fixed cluster member's client URL, VerifyURL is
// the check node.Config.VerifyURL injects into AddMember, and AtLeader is
// the one way of reaching the leader from a list of URLs (following
// NOT_LEADER hints), shared with the dlm CLI's members and snapshot
// commands.
//
// server/node stays a Raft host that makes no calls to other members: it
// only reports its standing (node.Self) and applies what the leader sends.
package membership
