// Package dashboard serves dlm's browser dashboard: a page that shows the
// cluster's nodes and their roles, the lock holder with its fencing token and
// lease, the queue and the tail of a file, updated live, with buttons to
// acquire the lock, append and release through the TypeScript client. It
// also shows the locks over time: every live lock (ListLocks) with its
// holders, mode, tokens, queue and lock-delay; a chart of grants per second
// and of waiters and holders over the last minutes, sampled by the page once
// a second into a bounded ring; and a timeline of who held which lock when
// and how each grant ended, drawn from LockHistory (the ring of the last
// grants kept in the replicated state).
//
// The page is built from the TypeScript under web/ by web/build.mjs (esbuild)
// into dist/, which is committed and embedded in the binary with go:embed, so
// dlm serve needs no Node at run time. CI rebuilds dist/ and fails when it
// differs from the committed copy.
//
// The page polls Status (consistent, from the leader, or from any node when
// no leader can confirm it) and the file's tail every 300 ms, and each node
// for its own role every 500 ms, so a dead node shows as unreachable and a
// new leader as soon as it is elected.
//
// The page talks to the API with Connect over HTTP/1.1. By default it uses
// the server that served it; ?server=URL[,URL...] points it at others (the
// API allows any origin through CORS), ?lease=MS sets its session's lease
// and ?name=LABEL its label.
package dashboard
