package node

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hashicorp/raft"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// onFault runs on the FSM's goroutine when it finds a storage fault or one
// clears. A fatal one (corruption) takes the node out of the cluster:
// leaving Raft must wait for the FSM goroutine, so another goroutine does it.
func (n *Node) onFault(msg string, fatal bool) {
	if msg != "" {
		n.faultMu.Lock()
		close(n.faultSeen)
		n.faultSeen = make(chan struct{})
		n.faultMu.Unlock()
	}
	switch {
	case msg == "":
		n.log.Warn("storage fault cleared: serving again")
	case fatal:
		n.log.Error(msg)
		n.brokenOnce.Do(func() { close(n.broken) })
	default:
		n.log.Error(msg)
		select {
		case n.writeFault <- struct{}{}:
		default:
		}
	}
}

// leaveOnFault shuts Raft down once a fatal storage fault is found: a node
// whose state no longer follows its log must neither lead nor vote. The
// others carry on without it; the API keeps answering Status (with the
// fault) and refuses everything else. While a write fails, a leader hands
// leadership over: it cannot answer anyone until the write succeeds, and
// another node may well have space.
func (n *Node) leaveOnFault() {
	defer n.done.Done()
	for done := false; !done; {
		select {
		case <-n.stop:
			return
		case <-n.writeFault:
			if n.raft.State() == raft.Leader && n.hasPeers() {
				if err := n.raft.LeadershipTransfer().Error(); err != nil {
					n.log.Info("handing leadership over during a storage fault", "err", err)
				}
			}
		case <-n.broken:
			done = true
		}
	}
	if err := n.raft.Shutdown().Error(); err != nil {
		n.log.Error("leaving the cluster after a storage fault", "err", err)
	}
	n.endTerm()
}

// StorageFault describes the node's storage fault (its state machine's, or
// else its Raft log's), or is "" when there is none; the health check
// reports NOT_SERVING while there is one.
func (n *Node) StorageFault() string {
	if f := n.fsm.Fault(); f != "" {
		return f
	}
	return n.logFaultText()
}

// storageFault is the error every call but Status gets while the node has a
// storage fault.
func (n *Node) storageFault() error {
	if n.fsm.Fault() == "" {
		return nil
	}
	return n.faultError()
}

func (n *Node) faultError() error {
	msg := n.fsm.Fault()
	if msg == "" {
		msg = "the entry could not be applied on this node"
	}
	return &Error{Reason: dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT, Msg: fmt.Sprintf("node %s: %s", n.cfg.ID, msg)}
}

// openLogError explains a log that does not open; raft-wal preallocates a
// whole segment, so a full disk needs naming the space it wants.
func openLogError(dir string, segment int, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("node: open log in %s: no space left on device: the log needs %d bytes free for a segment file "+
			"(free space there, or start with a smaller --log-segment-size): %w", dir, segment, err)
	}
	return fmt.Errorf("node: open log in %s: %w", dir, err)
}

// startError explains a Raft that does not start: which snapshot failed to
// open (hashicorp/raft only says none could be loaded) or to restore, and
// how to fix it.
func startError(err error, fault string, snaps *raft.FileSnapshotStore, raftDir string) error {
	var details []string
	if metas, lerr := snaps.List(); lerr == nil && len(metas) > 0 && strings.Contains(err.Error(), "snapshot") {
		for _, m := range metas {
			_, rc, oerr := snaps.Open(m.ID)
			if oerr != nil {
				details = append(details, fmt.Sprintf("snapshot %s is corrupt (%s: %v)", m.ID, filepath.Join(raftDir, "snapshots", m.ID, "state.bin"), oerr))
				continue
			}
			rc.Close()
		}
	}
	if fault != "" {
		details = append(details, fault)
	}
	if len(details) == 0 {
		return fmt.Errorf("node: start raft: %w", err)
	}
	return fmt.Errorf("node: start raft: %w: %s. Fix: wipe this node's data folder and let it rejoin the cluster, "+
		"or restore it from a backup", err, strings.Join(details, "; "))
}

// hasPeers reports whether another server is in the configuration.
func (n *Node) hasPeers() bool {
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 1
}

// faultWatch returns a channel closed at the next storage fault report.
func (n *Node) faultWatch() <-chan struct{} {
	n.faultMu.Lock()
	defer n.faultMu.Unlock()
	return n.faultSeen
}
