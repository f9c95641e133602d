package node

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/dlm/dlm/server/fsm"
	"github.com/dlm/dlm/server/lockstate"
)

// RecoverConfig says which stopped node to make the sole member of its
// cluster.
type RecoverConfig struct {
	// DataDir is the surviving node's data folder.
	DataDir string
	// ID, when set, must be the id stored in the folder (a guard against
	// recovering the wrong folder).
	ID string
	// RaftAddr is the node's Raft address in the new configuration; empty
	// keeps the address the node had in its latest configuration.
	RaftAddr string
	// RaftLog receives hashicorp/raft's warnings; nil means standard error.
	RaftLog io.Writer
}

// Recovered describes a recovery.
type Recovered struct {
	ID, RaftAddr string
	// Index and Term are those of the node's last log entry, now the state's.
	Index, Term uint64
	// Dropped lists the members of the old configuration left out.
	Dropped []string
}

// Recover rewrites a stopped node's Raft configuration so that it is the
// only voter, with hashicorp/raft's RecoverCluster: the way back when a
// cluster lost its majority for good. Every entry in the node's log is kept
// and becomes committed, including any the old cluster had not committed;
// entries the old cluster committed but this node never received are lost,
// so recover the member with the highest last index. The other members must
// never run again with their old data: wipe them and let them join anew.
func Recover(cfg RecoverConfig) (Recovered, error) {
	var out Recovered
	stored, err := os.ReadFile(filepath.Join(cfg.DataDir, "node-id"))
	if err != nil {
		return out, fmt.Errorf("node: recover: %s is not a node's data folder: %w", cfg.DataDir, err)
	}
	id := strings.TrimSpace(string(stored))
	if cfg.ID != "" && cfg.ID != id {
		return out, fmt.Errorf("node: recover: %s belongs to node %q, not %q", cfg.DataDir, id, cfg.ID)
	}
	out.ID = id
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := notRunning(filepath.Join(raftDir, "wal", metadb.FileName)); err != nil {
		return out, err
	}
	hlog := raftLogger(cfg.RaftLog)
	meta := &metadb.BoltMetaDB{}
	defer meta.Close()
	w, err := wal.Open(filepath.Join(raftDir, "wal"), wal.WithLogger(hlog), wal.WithMetaStore(meta), wal.WithSegmentSize(DefaultLogSegmentSize))
	if err != nil {
		return out, fmt.Errorf("node: recover: open log: %w", err)
	}
	defer w.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, hlog)
	if err != nil {
		return out, fmt.Errorf("node: recover: open snapshots: %w", err)
	}
	exists, err := raft.HasExistingState(w, w, snaps)
	if err != nil {
		return out, fmt.Errorf("node: recover: %w", err)
	}
	if !exists {
		return out, fmt.Errorf("node: recover: %s holds no Raft state to recover", cfg.DataDir)
	}
	// The files are a view the state machine rebuilds on every start; the
	// recovery rebuilds them the same way.
	f, err := fsm.Open(filepath.Join(cfg.DataDir, "files"), lockstate.DefaultLimits())
	if err != nil {
		return out, err
	}
	defer f.Close()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.Logger = hlog
	_, trans := raft.NewInmemTransport(raft.ServerAddress(id))

	addr := cfg.RaftAddr
	old, err := raft.GetConfiguration(rc, f, w, w, snaps, trans)
	if err != nil {
		return out, fmt.Errorf("node: recover: read the configuration: %w", err)
	}
	for _, s := range old.Servers {
		switch {
		case s.ID != rc.LocalID:
			out.Dropped = append(out.Dropped, string(s.ID))
		case addr == "":
			addr = string(s.Address)
		}
	}
	if addr == "" {
		return out, fmt.Errorf("node: recover: %s is not in its own configuration: give its Raft address (--raft)", id)
	}
	out.RaftAddr = addr
	rc = raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.Logger = hlog
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(addr)}}}
	if err := raft.RecoverCluster(rc, f, w, w, snaps, trans, conf); err != nil {
		return out, fmt.Errorf("node: recover: %w", err)
	}
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return out, fmt.Errorf("node: recover: no snapshot after the recovery: %v", err)
	}
	out.Index, out.Term = list[0].Index, list[0].Term
	return out, nil
}

// notRunning fails if a process holds the node's log open: bbolt would wait
// for its lock forever rather than say so.
func notRunning(metaPath string) error {
	fh, err := os.OpenFile(metaPath, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("node: recover: no Raft log at %s", filepath.Dir(metaPath))
		}
		return fmt.Errorf("node: recover: %w", err)
	}
	defer fh.Close()
	if err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return errors.New("node: recover: the node is running (its log is locked): stop it first")
		}
		return fmt.Errorf("node: recover: %w", err)
	}
	return syscall.Flock(int(fh.Fd()), syscall.LOCK_UN)
}
