// Package staging is the leader's memory of the critical sections in
// progress: the appends a holder made since its grant, kept in memory until
// its release carries them into the log in one entry, so that an append
// costs no Raft write.
//
// It has no clock, no Raft and no I/O; server/node feeds it. The rules:
//   - Memory lives only within one stretch of leadership: Begin and End
//     forget every section, and a change made in an earlier stretch (an
//     older epoch) is refused. A new leader therefore holds fewer appends
//     than the client sent; the counts the release carries reveal it.
//   - An append names its 1-based place in the section: the next place is
//     staged, a place already staged is a repeat (answered with the counts,
//     staging nothing), a later place is a gap (the caller answers
//     SECTION_INCOMPLETE). Places count the appends Append log entries
//     staged first (the base), then those in memory.
//   - One section per held grant: staging under a token forgets every
//     other token's section (the lock has one holder), and the end of a
//     grant drops its section.
//   - A release seals the section it carries, so that no append joins it
//     unseen while the release is proposed; a release that did not commit
//     unseals it.
package staging
