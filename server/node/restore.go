package node

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/fsm"
	"github.com/dlm/dlm/server/lockstate"
)

// RestoreConfig says how to lay a saved snapshot into a new data folder.
type RestoreConfig struct {
	// DataDir is the new node's data folder: absent or empty.
	DataDir string
	// ID is the new node's id ("node1" when empty).
	ID string
	// RaftAddr is the new node's Raft address; empty for a single node that
	// runs without a Raft port.
	RaftAddr string
	// Peers is the whole new cluster, this node among them; empty means this
	// node alone.
	Peers []Peer
	// Index is where the snapshot is laid: the index of the last entry it
	// includes, or more, to keep new fencing tokens past any the old cluster
	// issued after the save.
	Index uint64
	// RaftLog receives hashicorp/raft's warnings; nil means standard error.
	RaftLog io.Writer
}

// Restored describes a data folder laid by Restore.
type Restored struct {
	// Index is where the new cluster's log starts after.
	Index uint64
	// EndedSessions counts the saved sessions that the restore ended.
	EndedSessions int
	// Members is the new cluster's configuration.
	Members []Peer
}

// Restore lays a snapshot, as SaveSnapshot hands it out, into a new data
// folder from which `dlm serve` boots a new cluster. The caller checks the
// snapshot's integrity first; Restore decodes it in full (the state and every
// file) before anything appears at cfg.DataDir, which is filled by renaming a
// finished folder (or its entries) into place.
//
// A restore rewinds the service to the moment of the save, so every session
// of the saved state is ended, as on lease expiry (held locks are revoked,
// staged appends discarded): a client that carried on with the old cluster
// after the save must not continue its session on state that forgot part of
// it, committing half a critical section or replaying answers.
//
// The snapshot is laid with Raft's own FileSnapshotStore, at cfg.Index (so
// fencing tokens keep growing past every token in the saved state) and at
// term 1: the new cluster starts its terms afresh, as etcd's restore does, so
// no node's current term is ever below the term of its last entry.
func Restore(cfg RestoreConfig, snapshot io.Reader) (Restored, error) {
	var out Restored
	if err := emptyOrAbsent(cfg.DataDir); err != nil {
		return out, err
	}
	// The folder is built beside its place, or inside it when it exists (it
	// may be a mount point: another file system, which cannot be renamed
	// over), then moved into place.
	_, statErr := os.Stat(cfg.DataDir)
	exists := statErr == nil
	base := filepath.Dir(filepath.Clean(cfg.DataDir))
	if exists {
		base = cfg.DataDir
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return out, fmt.Errorf("node: restore: %w", err)
	}
	tmp, err := os.MkdirTemp(base, "."+filepath.Base(cfg.DataDir)+".restoring-")
	if err != nil {
		return out, fmt.Errorf("node: restore: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	id, err := resolveID(tmp, cfg.ID)
	if err != nil {
		return out, err
	}
	conf, err := restoredConfiguration(id, cfg.RaftAddr, cfg.Peers)
	if err != nil {
		return out, err
	}
	for _, s := range conf.Servers {
		out.Members = append(out.Members, Peer{ID: string(s.ID), RaftAddr: string(s.Address)})
	}

	f, err := fsm.Open(filepath.Join(tmp, "files"), lockstate.DefaultLimits())
	if err != nil {
		return out, err
	}
	defer f.Close()
	if err := f.Restore(io.NopCloser(snapshot)); err != nil {
		return out, fmt.Errorf("node: restore: the snapshot does not decode: %w", err)
	}
	index := cfg.Index
	ended, err := endSessions(f, &index)
	if err != nil {
		return out, err
	}
	out.Index, out.EndedSessions = index, ended

	hlog := raftLogger(cfg.RaftLog)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(tmp, "raft"), 2, hlog)
	if err != nil {
		return out, fmt.Errorf("node: restore: %w", err)
	}
	_, trans := raft.NewInmemTransport("")
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, 1, conf, index, trans)
	if err != nil {
		return out, fmt.Errorf("node: restore: %w", err)
	}
	st, err := f.Snapshot()
	if err != nil {
		sink.Cancel()
		return out, fmt.Errorf("node: restore: %w", err)
	}
	// Persist closes (or cancels) the sink.
	if err := st.Persist(sink); err != nil {
		return out, fmt.Errorf("node: restore: write the snapshot: %w", err)
	}
	st.Release()
	if err := f.Close(); err != nil {
		return out, fmt.Errorf("node: restore: %w", err)
	}
	if err := syncTree(tmp); err != nil {
		return out, fmt.Errorf("node: restore: %w", err)
	}
	if err := putInPlace(tmp, cfg.DataDir, exists); err != nil {
		return out, fmt.Errorf("node: restore: put the data folder in place: %w", err)
	}
	done = true
	return out, nil
}

// putInPlace moves the finished folder tmp to dir: one rename when dir did
// not exist; else tmp is inside dir, and its entries move up one by one,
// raft/ last, so that a folder without raft/ (no Raft state) is never taken
// for a restored one. A failure takes back what moved.
func putInPlace(tmp, dir string, exists bool) error {
	if !exists {
		return os.Rename(tmp, dir)
	}
	var moved []string
	for _, name := range []string{"files", "node-id", "raft"} {
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name)); err != nil {
			for _, m := range moved {
				os.RemoveAll(m)
			}
			return err
		}
		moved = append(moved, filepath.Join(dir, name))
	}
	if err := os.Remove(tmp); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// endSessions expires every session through the state machine, each expiry
// an entry after *index, and returns how many it ended. Expiring a holder
// grants the lock to the next waiter, whose session is ended in turn.
func endSessions(f *fsm.FSM, index *uint64) (int, error) {
	ended := 0
	now := time.Now().UnixMilli()
	for round := 0; ; round++ {
		var sessions []lockstate.SessionInfo
		f.View(func(m *lockstate.Machine) { sessions = m.Sessions() })
		if len(sessions) == 0 {
			return ended, nil
		}
		if round == 3 {
			return ended, fmt.Errorf("node: restore: %d sessions would not end", len(sessions))
		}
		for _, s := range sessions {
			*index++
			data, err := fsm.Encode(&raftlogv1.Command{NowUnixMs: now, Op: &raftlogv1.Command_ExpireSession{
				ExpireSession: &raftlogv1.ExpireSession{ClientId: s.ClientID, Epoch: s.Epoch},
			}})
			if err != nil {
				return ended, err
			}
			if res, ok := f.Apply(&raft.Log{Index: *index, Term: 1, Type: raft.LogCommand, Data: data}).(lockstate.Result); ok {
				ended += len(res.Ended)
			}
		}
	}
}

func restoredConfiguration(id, raftAddr string, peers []Peer) (raft.Configuration, error) {
	var conf raft.Configuration
	if len(peers) == 0 {
		addr := raftAddr
		if addr == "" {
			// What a single node without a Raft port calls itself (startRaft).
			addr = id
		}
		conf.Servers = []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)}}
		return conf, nil
	}
	found := false
	seen := make(map[string]bool)
	for _, p := range peers {
		if seen[p.ID] {
			return conf, fmt.Errorf("node: restore: peer %s is listed twice", p.ID)
		}
		seen[p.ID] = true
		if p.ID == id {
			found = true
			if raftAddr != "" && raftAddr != p.RaftAddr {
				return conf, fmt.Errorf("node: restore: --raft %s differs from %s's address %s in the peers", raftAddr, id, p.RaftAddr)
			}
		}
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	if !found {
		return conf, fmt.Errorf("node: restore: node %s is not among the peers", id)
	}
	return conf, nil
}

// emptyOrAbsent refuses a data folder that holds anything: a restore never
// overwrites a node's data.
func emptyOrAbsent(dir string) error {
	if dir == "" {
		return errors.New("node: restore: no data folder given")
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("node: restore: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("node: restore: %s is not empty: a restore lays a new data folder and never overwrites one", dir)
	}
	return nil
}

// syncTree flushes every file and folder under dir, so the folder renamed
// into place is whole after a power loss.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fh, err := os.Open(path)
		if err != nil {
			return err
		}
		defer fh.Close()
		return fh.Sync()
	})
}

func raftLogger(out io.Writer) hclog.Logger {
	if out == nil {
		out = os.Stderr
	}
	return hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: out})
}
