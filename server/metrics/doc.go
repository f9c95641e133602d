// Package metrics holds a node's Prometheus metrics, named dlm_*: lock
// events, sessions and waiters, per-stage latencies and Raft's state. The
// hot path only adds to counters and histograms (atomic operations);
// everything that needs a lock is read at scrape time.
package metrics
