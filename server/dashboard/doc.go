// Package dashboard serves dlm's browser dashboard: a page that shows the
// cluster's nodes and their roles, the lock holder with its fencing token and
// lease, the queue and the tail of a file, updated live, with buttons to
// acquire the lock, append and release through the TypeScript client.
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
