package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/fsm"
)

// fillingDisk opens real files whose writes fail with ENOSPC, after writing
// part of the data, while failures remain.
type fillingDisk struct {
	mu       sync.Mutex
	failures int
}

func (d *fillingDisk) OpenFile(path string) (fsm.File, error) {
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &fillingDiskFile{File: fh, d: d}, nil
}

func (d *fillingDisk) set(n int) {
	d.mu.Lock()
	d.failures = n
	d.mu.Unlock()
}

type fillingDiskFile struct {
	*os.File
	d *fillingDisk
}

func (f *fillingDiskFile) Write(p []byte) (int, error) {
	f.d.mu.Lock()
	fail := f.d.failures > 0
	if fail {
		f.d.failures--
	}
	f.d.mu.Unlock()
	if fail {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

// A release whose file write fails with ENOSPC: the node does not crash; it
// reports a storage fault (in Status, the health check and to every call,
// the waiting release included) while the write is retried, then resumes by
// itself; the release retried with its seq gets its outcome, and the
// appends are in the file once.
func TestFailedWriteFaultsThenResumes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	disk := &fillingDisk{}
	n, err := Open(testConfig(Config{DataDir: dir, RaftLog: &bytes.Buffer{}, files: disk}))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if err := n.AwaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := n.OpenSession(ctx, 30*time.Second, "w")
	if err != nil {
		t.Fatal(err)
	}
	seq := uint64(0)
	caller := func() Caller {
		seq++
		return Caller{ClientID: s.ClientID, Secret: s.Secret, Seq: seq}
	}
	g, err := n.Acquire(ctx, caller(), true, 0)
	if err != nil || !g.Granted {
		t.Fatalf("acquire: %v %v", g, err)
	}
	for _, d := range []string{"one,", "two,"} {
		if _, err := n.Append(ctx, caller(), g.Token, "file_4", []byte(d), 0); err != nil {
			t.Fatal(err)
		}
	}
	disk.set(5) // retried after 100, 200, 400 and 800ms
	released := make(chan error, 1)
	rel := caller()
	go func() {
		_, err := n.Release(ctx, rel, g.Token, false, nil, nil)
		released <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for n.StorageFault() == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st, err := n.Status(ctx, StatusQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if f := st.Node.StorageFault; !strings.Contains(f, "no space left on device") || !strings.Contains(f, "file_4") {
		t.Fatalf("status storage_fault = %q", f)
	}
	_, _, _, err = n.ReadFile(ctx, "file_4", 0, 100)
	var ne *Error
	if !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT {
		t.Fatalf("read during the fault = %v, want STORAGE_FAULT", err)
	}
	// The release is answered at once: its outcome is unknown here until
	// the write succeeds, and the client retries it with the same seq.
	select {
	case err := <-released:
		if !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT || !strings.Contains(ne.Msg, "same seq") {
			t.Fatalf("release during the fault = %v, want STORAGE_FAULT", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the release waited through the fault")
	}
	deadline = time.Now().Add(20 * time.Second)
	for n.StorageFault() != "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if f := n.StorageFault(); f != "" {
		t.Fatalf("fault kept after the disk took the write: %q", f)
	}
	if _, err := n.Release(ctx, rel, g.Token, false, nil, nil); err != nil {
		t.Fatalf("the release retried after the fault: %v", err)
	}
	b, _, _, err := n.ReadFile(ctx, "file_4", 0, 100)
	if err != nil || string(b) != "one,two," {
		t.Fatalf("file_4 = %q, %v", b, err)
	}
	if disk, _ := os.ReadFile(filepath.Join(dir, "files", "file_4")); string(disk) != "one,two," {
		t.Fatalf("file_4 on disk = %q", disk)
	}
}

// A committed entry that fails its checksum: the node does not panic, leaves
// Raft, answers calls with STORAGE_FAULT naming the entry, still answers
// Status with the fault, and shuts down cleanly.
func TestCorruptEntryTakesTheNodeOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Open(testConfig(Config{DataDir: t.TempDir(), RaftLog: &bytes.Buffer{}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.AwaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	good, err := fsm.Encode(&raftlogv1.Command{Op: &raftlogv1.Command_OpenSession{OpenSession: &raftlogv1.OpenSession{Secret: "s", LeaseMs: 1000}}})
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 0x01
	fut := n.raft.Apply(bad, 5*time.Second)
	if err := fut.Error(); err != nil {
		t.Fatal(err)
	}
	if _, ok := fut.Response().(error); !ok {
		t.Fatalf("a corrupt entry applied: %v", fut.Response())
	}
	index := fut.Index()
	deadline := time.Now().Add(10 * time.Second)
	for n.raft.State() != raft.Shutdown && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st, err := n.Status(ctx, StatusQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Node.Role != "shutdown" || !strings.Contains(st.Node.StorageFault, fmt.Sprintf("log entry %d", index)) {
		t.Fatalf("node status = %v", st.Node)
	}
	_, err = n.OpenSession(ctx, 0, "x")
	var ne *Error
	if !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT || !strings.Contains(ne.Msg, "wipe") {
		t.Fatalf("open session on a faulty node = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Shutdown() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown of a faulty node hangs")
	}
}

// In a three-node cluster the leader's disk fails a write: it hands
// leadership over rather than holding the cluster up, the new leader answers
// the client's retry with the same seq, and once the disk takes the write
// the old leader catches up with byte-identical files.
func TestLeaderWithFailingDiskHandsOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var peers []Peer
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: ln.Addr().String()})
		ln.Close()
	}
	var (
		nodes []*Node
		disks []*fillingDisk
		dirs  []string
	)
	for _, p := range peers {
		disk, dir := &fillingDisk{}, t.TempDir()
		n, err := Open(testConfig(Config{ID: p.ID, RaftAddr: p.RaftAddr, Peers: peers, DataDir: dir, RaftLog: io.Discard, files: disk}))
		if err != nil {
			t.Fatal(err)
		}
		defer n.Shutdown()
		nodes, disks, dirs = append(nodes, n), append(disks, disk), append(dirs, dir)
	}
	leaderOf := func(except *Node) *Node {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			for _, n := range nodes {
				if n == except {
					continue
				}
				if _, err := n.leading(); err == nil {
					return n
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("no leader")
		return nil
	}
	old := leaderOf(nil)
	s, err := old.OpenSession(ctx, 30*time.Second, "w")
	if err != nil {
		t.Fatal(err)
	}
	seq := uint64(0)
	caller := func() Caller {
		seq++
		return Caller{ClientID: s.ClientID, Secret: s.Secret, Seq: seq}
	}
	g, err := old.Acquire(ctx, caller(), true, 0)
	if err != nil || !g.Granted {
		t.Fatalf("acquire: %v %v", g, err)
	}
	if _, err := old.Append(ctx, caller(), g.Token, "file_6", []byte("payload,"), 0); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		if n == old {
			disks[i].set(1 << 30)
			defer disks[i].set(0)
		}
	}
	rel := caller()
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = old.Release(rctx, rel, g.Token, false, &Section{Appends: 1, Bytes: 8}, nil)
	rcancel()
	if err == nil {
		t.Fatal("the release was answered by a leader that could not write it")
	}
	t.Logf("the old leader answered: %v", err)
	leader := leaderOf(old)
	counts := &Section{Appends: 1, Bytes: 8}
	o, err := leader.Release(ctx, rel, g.Token, false, counts, nil)
	var ne *Error
	if errors.As(err, &ne) && ne.Reason == dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE {
		// The release never committed, and the append lived in the old
		// leader's memory: the client re-sends it and releases again.
		if _, err := leader.Append(ctx, caller(), g.Token, "file_6", []byte("payload,"), ne.Staged.Appends+1); err != nil {
			t.Fatal(err)
		}
		o, err = leader.Release(ctx, rel, g.Token, false, counts, nil)
	}
	if err != nil || o.Appends != 1 {
		t.Fatalf("the retried release at the new leader = %v, %v", o, err)
	}
	if f := old.StorageFault(); !strings.Contains(f, "no space left on device") {
		t.Fatalf("the old leader's fault = %q", f)
	}
	for i, n := range nodes {
		if n == old {
			disks[i].set(0)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		same := true
		for _, dir := range dirs {
			b, _ := os.ReadFile(filepath.Join(dir, "files", "file_6"))
			same = same && string(b) == "payload,"
		}
		if same && old.StorageFault() == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas not identical or fault kept (%q) after the disk recovered", old.StorageFault())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
