package node

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// SnapshotInfo describes a snapshot handed out by SaveSnapshot.
type SnapshotInfo struct {
	// Index and Term are those of the last entry the snapshot includes.
	Index, Term uint64
	// Size is the number of bytes the reader yields.
	Size int64
}

// SaveSnapshot takes a snapshot of the whole state at the leader and hands
// its bytes to send. A barrier first applies every entry committed before the
// call, so the snapshot holds every change acknowledged to a client by then.
// One snapshot at a time per node: each copies every file, so concurrent
// ones would only multiply the disk traffic.
func (n *Node) SaveSnapshot(ctx context.Context, send func(SnapshotInfo, io.Reader) error) error {
	if _, err := n.leading(); err != nil {
		return err
	}
	if !n.saving.CompareAndSwap(false, true) {
		return fail(dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS, "a snapshot is being saved on this node already: retry when it is done")
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	taken := make(chan takenSnapshot, 1)
	go func() { taken <- n.takeSnapshot(time.Now().Add(timeout)) }()
	var t takenSnapshot
	select {
	case t = <-taken:
		defer n.saving.Store(false)
	case <-ctx.Done():
		// Raft cannot be told to stop; the next save may start only once
		// this one is done, so abandoned calls cannot pile up.
		go func() {
			<-taken
			n.saving.Store(false)
		}()
		return fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "no snapshot in time: %v", ctx.Err())
	}
	if t.err != nil {
		return n.snapshotError(t.err)
	}
	meta, rc, err := t.fut.Open()
	if err != nil {
		return fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "open the snapshot: %v", err)
	}
	defer rc.Close()
	n.log.Info("snapshot taken for a client", "index", meta.Index, "term", meta.Term, "bytes", meta.Size)
	return send(SnapshotInfo{Index: meta.Index, Term: meta.Term, Size: meta.Size}, rc)
}

type takenSnapshot struct {
	fut raft.SnapshotFuture
	err error
}

// takeSnapshot applies everything committed so far (a barrier), then has Raft
// persist a snapshot of the state machine.
func (n *Node) takeSnapshot(deadline time.Time) takenSnapshot {
	if err := n.raft.Barrier(time.Until(deadline)).Error(); err != nil {
		return takenSnapshot{err: err}
	}
	for {
		fut := n.raft.Snapshot()
		err := fut.Error()
		// Raft refuses while a membership change is committed but not yet
		// applied; that passes within a heartbeat or two.
		if err == nil || !strings.Contains(err.Error(), "wait until the configuration entry") || time.Now().After(deadline) {
			return takenSnapshot{fut: fut, err: err}
		}
		select {
		case <-n.stop:
			return takenSnapshot{err: raft.ErrRaftShutdown}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *Node) snapshotError(err error) error {
	var ne *Error
	switch {
	case errors.As(err, &ne):
		return ne
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return &Error{Reason: dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER, LeaderURL: n.leaderURL(), Msg: "leadership lost while taking the snapshot: retry at the leader"}
	case errors.Is(err, raft.ErrRaftShutdown):
		return fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "the node is shutting down")
	default:
		return fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "snapshot failed: %v", err)
	}
}
