package node

import (
	"errors"
	"fmt"
	"sync"
	"time"

	wal "github.com/hashicorp/raft-wal"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// DefaultMaxFileBytes is the per-file size limit when none is set.
const DefaultMaxFileBytes = 1 << 30

// The free-space minimum must cover what one admitted critical section can
// still write after the check passed: its bytes go to disk twice (in the
// log, then in the files), and the log may need a new preallocated segment
// at any moment. With the defaults that is 2×64 MiB + 8 MiB = 136 MiB.

// DefaultMinFreeSpace is the free-space minimum for the given section limit
// and log segment size (0 for raft-wal's default).
func DefaultMinFreeSpace(maxSectionBytes, logSegmentBytes int) int64 {
	if logSegmentBytes <= 0 {
		logSegmentBytes = wal.DefaultSegmentSize
	}
	return max(64<<20, 2*int64(maxSectionBytes)+int64(logSegmentBytes))
}

// freeSpace caches the data volume's free space, so that admission costs a
// clock read per call rather than a system call.
type freeSpace struct {
	dir  string
	read func(dir string) (int64, error)

	mu    sync.Mutex
	at    time.Time
	bytes int64
	err   error
}

// freeSpaceTTL bounds how stale the cached figure may be: a burst of
// appends may overshoot the minimum by what it writes in this time.
const freeSpaceTTL = 200 * time.Millisecond

func newFreeSpace(dir string, read func(string) (int64, error)) *freeSpace {
	return &freeSpace{dir: dir, read: read}
}

// get returns the free bytes, or an error when they cannot be read.
func (f *freeSpace) get() (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); f.at.IsZero() || now.Sub(f.at) >= freeSpaceTTL {
		f.bytes, f.err = f.read(f.dir)
		f.at = now
	}
	return f.bytes, f.err
}

// admit refuses, before anything is proposed, a request that would make the
// state or the files grow while the data volume is below its free-space
// minimum. Releases, aborts, closes and keepalives never come here: they
// free state or cost nothing, so a holder can always finish or give up.
func (n *Node) admit() error {
	if n.cfg.MinFreeSpace < 0 {
		return nil
	}
	free, err := n.space.get()
	if err != nil {
		// Refusing every write because the figure is unknown would turn a
		// monitoring problem into an outage; the write itself still fails
		// safely if the disk is really full.
		return nil
	}
	if free >= n.cfg.MinFreeSpace {
		return nil
	}
	return fail(dlmv1.ErrorReason_ERROR_REASON_DISK_FULL,
		"the leader's data disk has %s free, below its minimum of %s (--min-free-space): nothing changed; free space and retry",
		formatBytes(free), formatBytes(n.cfg.MinFreeSpace))
}

// grows says whether a command can make the files or the state grow.
func grows(cmd *raftlogv1.Command) bool {
	switch cmd.GetOp().(type) {
	case *raftlogv1.Command_OpenSession, *raftlogv1.Command_Acquire, *raftlogv1.Command_Append:
		return true
	default:
		return false
	}
}

// freeBytes is the free space for status, or -1 when unknown.
func (n *Node) freeBytes() int64 {
	free, err := n.space.get()
	if err != nil {
		return -1
	}
	return free
}

// explainFileLimit adds this leader's limit to a FILE_TOO_LARGE refusal.
func (n *Node) explainFileLimit(err error) error {
	var ne *Error
	if errors.As(err, &ne) && ne.Reason == dlmv1.ErrorReason_ERROR_REASON_FILE_TOO_LARGE {
		ne.Msg += fmt.Sprintf(" (%s, --max-file-size): nothing changed", formatBytes(n.cfg.MaxFileBytes))
	}
	return err
}

func formatBytes(b int64) string {
	switch {
	case b >= 1<<40:
		return fmt.Sprintf("%.1f TiB", float64(b)/(1<<40))
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	default:
		return fmt.Sprintf("%d bytes", b)
	}
}
