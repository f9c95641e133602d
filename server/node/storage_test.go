package node

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// openWAL opens the log as the node does, owning its meta store.
func openWAL(t *testing.T, dir string) (*wal.WAL, func()) {
	t.Helper()
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(dir, wal.WithMetaStore(meta), wal.WithSegmentSize(1<<20))
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	return w, func() {
		w.Close()
		meta.Close()
	}
}

// Raft clears a log suffix (DeleteRange of the tail) when a leader's
// uncommitted entries are overwritten by a newer leader's. raft-wal v0.4.0
// then wrote a log it could not read back after a restart ("sealed segment
// has no index block", upstream raft-wal #31): the node never started again.
func TestLogReopensAfterClearedSuffix(t *testing.T) {
	dir := t.TempDir()
	w, closeLog := openWAL(t, dir)
	entry := func(i uint64, term uint64) *raft.Log {
		return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "entry %d term %d", i, term)}
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		logs = append(logs, entry(i, 1))
	}
	if err := w.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteRange(10, 10); err != nil {
		t.Fatal(err)
	}
	if err := w.StoreLog(entry(10, 2)); err != nil {
		t.Fatal(err)
	}
	closeLog()

	w, closeLog = openWAL(t, dir)
	defer closeLog()
	for i := uint64(1); i <= 10; i++ {
		var l raft.Log
		if err := w.GetLog(i, &l); err != nil {
			t.Fatalf("after reopening, GetLog(%d): %v", i, err)
		}
		want := uint64(1)
		if i == 10 {
			want = 2
		}
		if !bytes.Equal(l.Data, entry(i, want).Data) {
			t.Fatalf("entry %d = %q", i, l.Data)
		}
	}
	if last, err := w.LastIndex(); err != nil || last != 10 {
		t.Fatalf("last index %d, %v", last, err)
	}
}

// A start that fails (here: the Raft port is taken) leaves the files as it
// found them: they are emptied to be rebuilt only once Raft runs.
func TestFailedStartLeavesFilesAlone(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := ln.Addr().String()
	ln.Close()
	n, err := Open(testConfig(Config{DataDir: dir, RaftAddr: raftAddr, RaftLog: &bytes.Buffer{}}))
	if err != nil {
		t.Fatal(err)
	}
	n.Shutdown()
	files := filepath.Join(dir, "files")
	want := map[string]string{"file_0": "committed bytes", "file_7": "more bytes"}
	for name, content := range want {
		if err := os.WriteFile(filepath.Join(files, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	taken, err := net.Listen("tcp", raftAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if _, err := Open(testConfig(Config{DataDir: dir, RaftAddr: raftAddr, RaftLog: &bytes.Buffer{}})); err == nil {
		t.Fatal("a node started on a Raft port in use")
	}
	for name, content := range want {
		if b, err := os.ReadFile(filepath.Join(files, name)); err != nil || string(b) != content {
			t.Fatalf("after a failed start %s = %q, %v; want %q", name, b, err, content)
		}
	}
}

// A log that cannot be opened for lack of space says where and how much.
func TestOpenLogErrorNamesFolderAndSpace(t *testing.T) {
	err := openLogError("/data/raft/wal", 8<<20, &os.PathError{Op: "fallocate", Path: "/data/raft/wal/00001.wal", Err: syscall.ENOSPC})
	for _, want := range []string{"/data/raft/wal", "8388608 bytes", "--log-segment-size"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("%q does not say %q", err, want)
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatal("the cause is lost")
	}
}
