package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

// writer runs critical sections of one session, each appending one record,
// and remembers which committed for sure.
type writer struct {
	n      *node.Node
	id     uint64
	secret string
	seq    uint64
	// acked records committed; tried ones may have.
	acked, tried []string
}

func (w *writer) caller() node.Caller {
	w.seq++
	return node.Caller{ClientID: w.id, Secret: w.secret, Seq: w.seq, AckedBelow: w.seq}
}

// section acquires, appends rec and releases, and returns the first error.
func (w *writer) section(rec string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	w.tried = append(w.tried, rec)
	g, err := w.n.Acquire(ctx, w.caller(), false, time.Second)
	if err != nil {
		return err
	}
	if !g.Granted {
		return fmt.Errorf("not granted: %+v", g)
	}
	if _, err := w.n.Append(ctx, w.caller(), g.Token, "file_0", []byte(rec), 0); err != nil {
		return err
	}
	if _, err := w.n.Release(ctx, w.caller(), g.Token, false, nil, nil); err != nil {
		return err
	}
	w.acked = append(w.acked, rec)
	return nil
}

// check reads file_0 and checks that every acknowledged record is there
// once, and nothing but records that were tried.
func (w *writer) check(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.n.AwaitLeader(ctx); err != nil {
		t.Fatalf("no leader: %v", err)
	}
	data, _, _, err := w.n.ReadFile(ctx, "file_0", 0, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	seen := map[string]int{}
	for _, rec := range strings.SplitAfter(string(data), "\n") {
		if rec != "" {
			seen[rec]++
		}
	}
	tried := map[string]bool{}
	for _, rec := range w.tried {
		tried[rec] = true
	}
	for rec, k := range seen {
		if k != 1 || !tried[rec] {
			t.Fatalf("record %q found %d times (tried: %v)", rec, k, tried[rec])
		}
	}
	for _, rec := range w.acked {
		if seen[rec] != 1 {
			t.Fatalf("acknowledged record %q lost", rec)
		}
	}
}

func record(i int) string {
	return fmt.Sprintf("%05d %s\n", i, strings.Repeat("x", 1000))
}

func openNode(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.Open(cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.AwaitLeader(ctx); err != nil {
		n.Shutdown()
		t.Fatalf("no leader: %v", err)
	}
	return n
}

// TestLogDiskFullRecovers fills the Raft log's disk under a single node,
// then frees it: while full, calls fail with STORAGE_FAULT and a message naming
// the log; once freed the node serves again without a restart, and every
// acknowledged section is in the file once.
func TestLogDiskFullRecovers(t *testing.T) {
	for _, writes := range []bool{false, true} {
		name := map[bool]string{false: "segment creation fails", true: "every write fails"}[writes]
		t.Run(name, func(t *testing.T) {
			disk := servertest.NewFullDisk(writes)
			cfg := servertest.Config(node.Config{
				DataDir: t.TempDir(), LogFS: disk, LogSegmentSize: 64 << 10,
				DefaultLease: time.Minute, MinFreeSpace: -1,
				Logger: slog.New(slog.DiscardHandler), RaftLog: io.Discard,
			})
			n := openNode(t, cfg)
			defer func() { n.Shutdown() }()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := n.OpenSession(ctx, 0, "writer")
			if err != nil {
				t.Fatalf("open session: %v", err)
			}
			w := &writer{n: n, id: s.ClientID, secret: s.Secret}
			i := 0
			for ; i < 5; i++ {
				if err := w.section(record(i)); err != nil {
					t.Fatalf("section %d: %v", i, err)
				}
			}

			// Fill the disk. Without failing writes, sections still commit
			// until the segment is full; 64 KiB is a few dozen sections.
			disk.Full.Store(true)
			var first error
			for limit := i + 500; i < limit && first == nil; i++ {
				first = w.section(record(i))
			}
			if first == nil {
				ents, _ := os.ReadDir(cfg.DataDir + "/raft/wal")
				for _, e := range ents {
					fi, _ := e.Info()
					t.Logf("%s %d", e.Name(), fi.Size())
				}
				t.Fatalf("500 sections on a full disk all succeeded (%d refused)", disk.Refused.Load())
			}
			wantFull := func(err error) {
				t.Helper()
				var ne *node.Error
				if !errors.As(err, &ne) || ne.Reason != dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT || !strings.Contains(ne.Msg, "Raft log disk is full") {
					t.Fatalf("on a full log disk got %v, want STORAGE_FAULT naming the log", err)
				}
			}
			// A call in flight when leadership was lost may have committed,
			// so it may be told so, but it must also be told why.
			var ne *node.Error
			if errors.As(first, &ne) && ne.Reason == dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER {
				if !strings.Contains(ne.Msg, "Raft log disk is full") {
					t.Fatalf("on a full log disk got %v, want the log named", first)
				}
			} else {
				wantFull(first)
			}
			// The node keeps saying so, however often it is asked.
			for k := 0; k < 20; k++ {
				_, err := n.OpenSession(ctx, 0, "refused")
				wantFull(err)
				time.Sleep(25 * time.Millisecond)
			}
			st, err := n.Status(ctx, node.StatusQuery{})
			if err != nil || !strings.Contains(st.Node.StorageFault, "disk is full") {
				t.Fatalf("status while full: storage_fault %q, %v", st.Node.StorageFault, err)
			}

			// Free it: the node serves again by itself.
			disk.Full.Store(false)
			deadline := time.Now().Add(30 * time.Second)
			for err := w.section(record(i)); err != nil; err = w.section(record(i)) {
				i++
				if time.Now().After(deadline) {
					t.Fatalf("no recovery 30 s after space returned: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			i++
			for limit := i + 50; i < limit; i++ {
				if err := w.section(record(i)); err != nil {
					t.Fatalf("section %d after recovery: %v", i, err)
				}
			}
			if st, err := n.Status(ctx, node.StatusQuery{}); err != nil || st.Node.StorageFault != "" {
				t.Fatalf("status after recovery: storage_fault %q, %v", st.Node.StorageFault, err)
			}
			w.check(t)
			t.Logf("%d sections acknowledged of %d tried; %d failures injected", len(w.acked), len(w.tried), disk.Refused.Load())

			// What is on disk is whole: a restart finds the same.
			n.Shutdown()
			n = openNode(t, cfg)
			w.n = n
			w.check(t)
		})
	}
}
