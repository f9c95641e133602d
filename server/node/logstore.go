package node

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// logStore is Raft's log and stable store: raft-wal, opened again in place
// when it can no longer append.
//
// raft-wal v0.4.2 (upstream PR #32) rolls a segment back after a failed
// write or fsync, so the next append simply retries. A failed segment
// rotation is different: the full segment is sealed, creating its successor
// failed (on a full disk the new, preallocated segment is the first thing
// that does not fit), nothing retries the rotation, and every later append
// fails with "segment is sealed" for as long as the process lives. Opening
// the log again rebuilds the tail from disk, so the node serves again by
// itself once space returns. Nothing is lost: a sealed segment holds only
// appends that succeeded, and a failed append stored nothing.
type logStore struct {
	open func() (*wal.WAL, error)
	log  *slog.Logger

	// mu is held for reading across every call into w, so that a reopen
	// never closes the log under a reader: Raft panics when it cannot read
	// an entry it is applying.
	mu sync.RWMutex
	w  *wal.WAL

	faultMu sync.Mutex
	// fault is the last append's failure, nil once an append succeeds.
	fault error
}

// keptMeta is the WAL's metadata store, which the node opens once and
// closes itself: raft-wal's Close closes its meta store, and a log opened
// again in place must keep using the same one (bolt locks its file).
type keptMeta struct{ *metadb.BoltMetaDB }

func (keptMeta) Close() error { return nil }

// openLog opens the Raft log in dir with meta as its metadata store.
func (n *Node) openLog(dir string, hlog hclog.Logger, meta *metadb.BoltMetaDB) (*logStore, error) {
	var filer types.SegmentFiler // nil: raft-wal's own files
	if n.cfg.LogFS != nil {
		filer = segment.NewFiler(dir, n.cfg.LogFS)
	}
	s := &logStore{log: n.log, open: func() (*wal.WAL, error) {
		// A segment size of 0 is raft-wal's default.
		return wal.Open(dir, wal.WithLogger(hlog), wal.WithMetaStore(keptMeta{meta}),
			wal.WithSegmentSize(n.cfg.LogSegmentSize), wal.WithSegmentFiler(filer))
	}}
	w, err := s.open()
	if err != nil {
		return nil, err
	}
	s.w = w
	return s, nil
}

// StoreLogs appends, opening the log again once if it is stuck behind a
// failed rotation.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	s.mu.RLock()
	w := s.w
	err := w.StoreLogs(logs)
	s.mu.RUnlock()
	if errors.Is(err, wal.ErrSealed) {
		// Only a sealed tail is reopened: after any other failure the
		// segment rolled itself back, and a reopen could find a batch whose
		// fsync failed but whose bytes landed, which Raft does not know of.
		if rerr := s.reopen(w); rerr == nil {
			s.mu.RLock()
			err = s.w.StoreLogs(logs)
			s.mu.RUnlock()
		} else {
			err = fmt.Errorf("%w (opening the log again: %w)", err, rerr)
		}
	}
	s.faultMu.Lock()
	was := s.fault
	s.fault = err
	s.faultMu.Unlock()
	switch {
	case was == nil && err != nil:
		s.log.Error("raft log cannot be written: this node neither leads nor follows until it can", "err", err)
	case was != nil && err == nil:
		s.log.Warn("raft log can be written again", "was", was)
	}
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	return nil
}

// reopen replaces stuck, unless another caller did already.
func (s *logStore) reopen(stuck *wal.WAL) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w != stuck {
		return nil
	}
	w, err := s.open()
	if err != nil {
		return err
	}
	s.w = w
	return stuck.Close()
}

// Fault is the last append's failure, or nil.
func (s *logStore) Fault() error {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.fault
}

// read runs f on the current log, which no reopen closes meanwhile.
func read[T any](s *logStore, f func(*wal.WAL) (T, error)) (T, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return f(s.w)
}

func (s *logStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }
func (s *logStore) IsMonotonic() bool          { return true }

func (s *logStore) FirstIndex() (uint64, error) {
	return read(s, func(w *wal.WAL) (uint64, error) { return w.FirstIndex() })
}

func (s *logStore) LastIndex() (uint64, error) {
	return read(s, func(w *wal.WAL) (uint64, error) { return w.LastIndex() })
}

func (s *logStore) GetLog(i uint64, l *raft.Log) error {
	_, err := read(s, func(w *wal.WAL) (struct{}, error) { return struct{}{}, w.GetLog(i, l) })
	return err
}

func (s *logStore) DeleteRange(lo, hi uint64) error {
	_, err := read(s, func(w *wal.WAL) (struct{}, error) { return struct{}{}, w.DeleteRange(lo, hi) })
	return err
}

func (s *logStore) Set(k, v []byte) error {
	_, err := read(s, func(w *wal.WAL) (struct{}, error) { return struct{}{}, w.Set(k, v) })
	return err
}

func (s *logStore) Get(k []byte) ([]byte, error) {
	return read(s, func(w *wal.WAL) ([]byte, error) { return w.Get(k) })
}

func (s *logStore) SetUint64(k []byte, v uint64) error {
	_, err := read(s, func(w *wal.WAL) (struct{}, error) { return struct{}{}, w.SetUint64(k, v) })
	return err
}

func (s *logStore) GetUint64(k []byte) (uint64, error) {
	return read(s, func(w *wal.WAL) (uint64, error) { return w.GetUint64(k) })
}

func (s *logStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Close()
}

// logError is the error clients get while this node's Raft log cannot be
// written, or nil when it can. It is STORAGE_FAULT (Unavailable), not
// DISK_FULL, even when the disk is full: the condition passes by itself once
// space returns, and another node may lead meanwhile, so clients retry and
// try other nodes, as they do for Unavailable; the message names the cause.
func (n *Node) logError() error {
	if n.wal == nil {
		return nil
	}
	err := n.wal.Fault()
	if err == nil {
		return nil
	}
	what := "cannot be written"
	if errors.Is(err, syscall.ENOSPC) {
		what = "disk is full"
	}
	return fail(dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT, "this node's Raft log %s (%v): it serves again by itself once the log can be written", what, err)
}

// logUnavailable is the log's failure when no other node leads, so that a
// client learns the cause rather than "no leader known".
func (n *Node) logUnavailable() error {
	err := n.logError()
	if err == nil {
		return nil
	}
	if _, id := n.raft.LeaderWithID(); id != "" && id != raft.ServerID(n.cfg.ID) {
		return nil
	}
	return err
}

// logCause explains a lost leadership by the log's failure, if any.
func (n *Node) logCause() string {
	if err := n.logError(); err != nil {
		return "; " + err.(*Error).Msg
	}
	return ""
}

// logFaultText is the log's failure for status, or "".
func (n *Node) logFaultText() string {
	if err := n.logError(); err != nil {
		return err.(*Error).Msg
	}
	return ""
}
