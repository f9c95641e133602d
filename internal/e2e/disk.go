package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SnapshotIndex is the index of the node's latest Raft snapshot on disk, 0
// for none.
func (n *Node) SnapshotIndex() uint64 {
	metas, _ := filepath.Glob(filepath.Join(n.Data, "raft", "snapshots", "*", "meta.json"))
	var latest uint64
	for _, m := range metas {
		b, err := os.ReadFile(m)
		if err != nil {
			continue // a snapshot being written or pruned
		}
		var meta struct{ Index uint64 }
		if json.Unmarshal(b, &meta) == nil {
			latest = max(latest, meta.Index)
		}
	}
	return latest
}

// LogSegments lists the node's Raft log segment files.
func (n *Node) LogSegments() []string {
	segs, _ := filepath.Glob(filepath.Join(n.Data, "raft", "wal", "*.wal"))
	return segs
}

// OldestLogIndex is the first index of the node's oldest log segment on
// disk (raft-wal names segment files BASEINDEX-ID.wal); 0 for none.
func (n *Node) OldestLogIndex() uint64 {
	var oldest uint64
	for _, s := range n.LogSegments() {
		var base, id uint64
		if _, err := fmt.Sscanf(filepath.Base(s), "%d-%x.wal", &base, &id); err == nil && (oldest == 0 || base < oldest) {
			oldest = base
		}
	}
	return oldest
}

// SnapshotsInProgress lists the snapshot folders being written
// (hashicorp/raft writes a snapshot into a ".tmp" folder and renames it
// when done; a kill leaves its ".tmp" behind for good).
func (n *Node) SnapshotsInProgress() map[string]bool {
	entries, err := os.ReadDir(filepath.Join(n.Data, "raft", "snapshots"))
	if err != nil {
		return nil
	}
	tmp := make(map[string]bool)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			tmp[e.Name()] = true
		}
	}
	return tmp
}
