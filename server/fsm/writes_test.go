package fsm_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/fsm"
	"github.com/dlm/dlm/server/lockstate"
)

// fullDisk opens real files whose writes fail with ENOSPC while failures
// remain, after writing part of the data, as a disk filling up does.
type fullDisk struct {
	mu       sync.Mutex
	failures int
	failed   int
}

func (d *fullDisk) OpenFile(path string) (fsm.File, error) {
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &fillingFile{File: fh, disk: d}, nil
}

func (d *fullDisk) take() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failures == 0 {
		return false
	}
	d.failures--
	d.failed++
	return true
}

type fillingFile struct {
	*os.File
	disk *fullDisk
}

func (f *fillingFile) Write(p []byte) (int, error) {
	if f.disk.take() {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

// A write that fails (ENOSPC, part of it written) does not panic: the
// entry's apply waits, reporting a storage fault and refusing reads, and
// retries until the disk takes the write; then the fault clears and every
// append is in its file exactly once.
func TestFailedWriteIsRetriedUntilItSucceeds(t *testing.T) {
	dir := t.TempDir()
	disk := &fullDisk{}
	f, err := fsm.Open(dir, lockstate.DefaultLimits(), fsm.WithFS(disk), fsm.WithRetry(time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		mu      sync.Mutex
		reports []string
	)
	f.SetFaultHandler(func(msg string, fatal bool) {
		mu.Lock()
		defer mu.Unlock()
		if fatal {
			reports = append(reports, "FATAL "+msg)
		} else {
			reports = append(reports, msg)
		}
	})
	e := &encoded{t: t, f: f}
	e.apply(openSession())
	seq := e.section(1, "file_1", "one,", "two,")

	disk.mu.Lock()
	disk.failures = 5
	disk.mu.Unlock()
	faults := make(chan string, 1)
	go func() {
		// Watch for the fault while the apply waits.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if msg := f.Fault(); msg != "" {
				_, _, _, rerr := f.ReadFile("file_1", 0, 100)
				faults <- fmt.Sprintf("%s|read error: %v", msg, rerr)
				return
			}
			time.Sleep(time.Millisecond)
		}
		faults <- ""
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		seq = e.section(seq, "file_1", "three,", "four,")
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the apply did not resume after the disk took the write")
	}
	seen := <-faults
	if !strings.Contains(seen, "no space left on device") || !strings.Contains(seen, "file_1") || !strings.Contains(seen, "read error: fsm: storage fault") {
		t.Fatalf("while failing, fault and read = %q", seen)
	}
	if f.Fault() != "" || f.Broken() {
		t.Fatalf("fault %q (broken %v) after the write succeeded", f.Fault(), f.Broken())
	}
	if disk.failed != 5 {
		t.Fatalf("%d writes failed, want 5", disk.failed)
	}
	e.section(seq, "file_1", "five,")
	if b, _ := os.ReadFile(filepath.Join(dir, "file_1")); string(b) != "one,two,three,four,five," {
		t.Fatalf("file_1 = %q", b)
	}
	if b, _, _, err := f.ReadFile("file_1", 0, 100); err != nil || string(b) != "one,two,three,four,five," {
		t.Fatalf("read file_1 = %q, %v", b, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 6 || reports[5] != "" || strings.HasPrefix(reports[0], "FATAL") {
		t.Fatalf("reports = %q, want 5 faults then a clear", reports)
	}
}

// Interrupt ends a write that keeps failing, so that Raft can shut down;
// nothing more is applied.
func TestInterruptEndsARetriedWrite(t *testing.T) {
	dir := t.TempDir()
	disk := &fullDisk{}
	f, err := fsm.Open(dir, lockstate.DefaultLimits(), fsm.WithFS(disk), fsm.WithRetry(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e := &encoded{t: t, f: f}
	e.apply(openSession())
	res := e.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Acquire{Acquire: &raftlogv1.Acquire{Caller: caller(1, 1)}}}).(lockstate.Result)
	e.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Append{Append: &raftlogv1.Append{
		Caller: caller(1, 2), Token: res.Outcome.GetToken(), File: "file_2", Data: []byte("x"), MaxSectionBytes: 1 << 20,
	}}})
	disk.mu.Lock()
	disk.failures = 1 << 30
	disk.mu.Unlock()
	got := make(chan any, 1)
	go func() {
		got <- e.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Release{Release: &raftlogv1.Release{Caller: caller(1, 3), Token: res.Outcome.GetToken()}}})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for f.Fault() == "" && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	f.Interrupt()
	select {
	case r := <-got:
		if err, ok := r.(error); !ok || !errors.Is(err, fsm.ErrStorageFault) {
			t.Fatalf("interrupted apply returned %v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Interrupt did not end the retried write")
	}
	if !f.Broken() {
		t.Fatal("an interrupted FSM still applies")
	}
}
