package node

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/dlm/dlm/server/lockstate"
)

// DefaultMaxLocks is the default cap on live named locks: far more than the
// resources one group of clients names at once, few enough that the state,
// its snapshots and a ListLocks walk stay small.
const DefaultMaxLocks = 10000

// DefaultConfig is the configuration dlm runs with, every field a node needs
// set except DataDir. Callers change what they need and Open validates the
// result, as hashicorp/raft does with raft.DefaultConfig: a zero field is an
// error, not a request for a default, so a forgotten field cannot silently
// turn a check off.
func DefaultConfig() Config {
	const (
		maxSection = 64 << 20
	)
	return Config{
		TrailingLogs:    10240,
		DefaultLease:    10 * time.Second,
		MinLease:        200 * time.Millisecond,
		MaxLease:        5 * time.Minute,
		MaxAppendBytes:  1 << 20,
		MaxSectionBytes: maxSection,
		DefaultPollWait: 5 * time.Second,
		MaxReadBytes:    4 << 20,

		SnapshotThreshold: 8192,
		SnapshotInterval:  2 * time.Minute, // Raft's own default
		SnapshotRetain:    2,
		// Shorter than Raft's defaults (1 s each): a single node elects
		// itself sooner after a restart, and a cluster fails over well
		// within the default lease.
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,

		LogSegmentSize: DefaultLogSegmentSize,
		MinFreeSpace:   DefaultMinFreeSpace(maxSection, DefaultLogSegmentSize),
		MaxFileBytes:   DefaultMaxFileBytes,
		MaxSessions:    DefaultMaxSessions,
		MaxLocks:       DefaultMaxLocks,
	}
}

// Bounds of LogSegmentSize: raft-wal needs room for its largest entry in a
// segment, and a segment is preallocated, so a huge one wastes the disk.
const (
	minLogSegmentSize = 64 << 10
	maxLogSegmentSize = 1 << 30
)

// ConfigError is a Config field that Validate refuses.
type ConfigError struct {
	// Field is the Config field's name.
	Field string
	// Problem says what is wrong; other fields are named in braces
	// ({MinLease}) so that a caller such as the CLI can name them its own
	// way (see Explain).
	Problem string
}

func (e *ConfigError) Error() string {
	return "node: config: " + e.Explain(func(f string) string { return f })
}

// Explain is the error with every field, its own first, named by name.
func (e *ConfigError) Explain(name func(field string) string) string {
	s := name(e.Field) + " " + e.Problem
	for {
		i := strings.IndexByte(s, '{')
		j := strings.IndexByte(s, '}')
		if i < 0 || j < i {
			return s
		}
		s = s[:i] + name(s[i+1:j]) + s[j+1:]
	}
}

// Validate says whether a node can run with c: the first field it refuses,
// as a *ConfigError, or nil. Logger, RaftLog and FreeSpace may be nil (the
// defaults are slog.Default(), standard error and statfs).
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	positive := func(field string, v int64) error {
		if v <= 0 {
			return bad(field, "is %d: it must be positive", v)
		}
		return nil
	}
	atLeast := func(field string, d, min time.Duration) error {
		if d < min {
			return bad(field, "is %v: it must be at least %v", d, min)
		}
		return nil
	}
	switch {
	case c.DataDir == "":
		return bad("DataDir", "is empty: a node needs a data folder")
	case (c.Join || len(c.Peers) > 0) && c.RaftAddr == "" && c.transport == nil:
		return bad("RaftAddr", "is empty: a cluster member ({Join}, {Peers}) needs a Raft address")
	case len(c.Peers) > 0 && strings.HasSuffix(c.RaftAddr, ":0"):
		return bad("RaftAddr", "has port 0: a fixed cluster ({Peers}) names every Raft address before it starts")
	}
	for _, err := range []error{
		atLeast("MinLease", c.MinLease, time.Millisecond),
		atLeast("DefaultPollWait", c.DefaultPollWait, time.Millisecond),
		positive("MaxAppendBytes", int64(c.MaxAppendBytes)),
		positive("MaxSectionBytes", int64(c.MaxSectionBytes)),
		positive("MaxReadBytes", c.MaxReadBytes),
		positive("MaxFileBytes", c.MaxFileBytes),
		positive("SnapshotRetain", int64(c.SnapshotRetain)),
		// hashicorp/raft's own minimums (raft.ValidateConfig).
		atLeast("SnapshotInterval", c.SnapshotInterval, 5*time.Millisecond),
		atLeast("HeartbeatTimeout", c.HeartbeatTimeout, 5*time.Millisecond),
		atLeast("ElectionTimeout", c.ElectionTimeout, 5*time.Millisecond),
		atLeast("LeaderLeaseTimeout", c.LeaderLeaseTimeout, 5*time.Millisecond),
		atLeast("CommitTimeout", c.CommitTimeout, time.Millisecond),
	} {
		if err != nil {
			return err
		}
	}
	switch {
	case c.SnapshotThreshold == 0:
		return bad("SnapshotThreshold", "is 0: it must be positive")
	case c.DefaultLease < c.MinLease:
		return bad("DefaultLease", "is %v: it must be at least {MinLease} (%v)", c.DefaultLease, c.MinLease)
	case c.MaxLease < c.DefaultLease:
		return bad("MaxLease", "is %v: it must be at least {DefaultLease} (%v)", c.MaxLease, c.DefaultLease)
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return bad("ElectionTimeout", "is %v: it must be at least {HeartbeatTimeout} (%v)", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return bad("LeaderLeaseTimeout", "is %v: it must be at most {HeartbeatTimeout} (%v)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.LogSegmentSize < minLogSegmentSize || c.LogSegmentSize > maxLogSegmentSize:
		return bad("LogSegmentSize", "is %d: it must be from %d (64 KiB) to %d (1 GiB)", c.LogSegmentSize, minLogSegmentSize, maxLogSegmentSize)
	case c.MinFreeSpace == 0:
		return bad("MinFreeSpace", "is 0: give a size, or a negative value to turn the check off")
	case c.MaxSessions == 0:
		return bad("MaxSessions", "is 0: give a limit, or a negative value for none")
	case c.MaxLocks == 0:
		return bad("MaxLocks", "is 0: give a limit, or a negative value for none")
	case c.LockDelay < 0 || c.LockDelay > lockstate.MaxLockDelayMs*time.Millisecond:
		return bad("LockDelay", "is %v: it must be from 0 to %v", c.LockDelay, lockstate.MaxLockDelayMs*time.Millisecond)
	case c.LockDelay%time.Millisecond != 0:
		return bad("LockDelay", "is %v: it must be a whole number of milliseconds", c.LockDelay)
	}
	// What Raft itself would refuse at start, checked now so that the
	// error names a field rather than failing deep in NewRaft.
	if err := raft.ValidateConfig(c.raftConfig()); err != nil {
		return bad("HeartbeatTimeout", "and the other Raft timings are refused by Raft: %v", err)
	}
	return nil
}

// raftConfig is the Raft configuration of c, without its logger.
func (c Config) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.ID)
	if rc.LocalID == "" {
		rc.LocalID = "node" // resolveID settles it; Validate only needs one
	}
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	// Raft already commits concurrent changes together: its leader loop
	// takes every proposal waiting on applyCh (up to MaxAppendEntries, 64)
	// into one log write, one fsync and one AppendEntries. BatchApplyCh,
	// which buffers applyCh, stays off: it bought nothing measurable
	// (docs/BENCHMARKS-calls.md), and in hashicorp/raft v1.7.3 a proposal
	// left in the buffer when Raft shuts down is never answered (a
	// logFuture has no shutdown channel), so its waiter would never end.
	return rc
}
