package node_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

func reason(err error) dlmv1.ErrorReason {
	var ne *node.Error
	if errors.As(err, &ne) {
		return ne.Reason
	}
	return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// saveBytes saves a snapshot and returns its bytes.
func saveBytes(ctx context.Context, n *node.Node) (node.SnapshotInfo, []byte, error) {
	var (
		info node.SnapshotInfo
		buf  bytes.Buffer
	)
	err := n.SaveSnapshot(ctx, func(i node.SnapshotInfo, r io.Reader) error {
		info = i
		_, err := io.Copy(&buf, r)
		return err
	})
	return info, buf.Bytes(), err
}

// One snapshot at a time per node: a second request while one streams gets
// TOO_MANY_REQUESTS, and the next one after it succeeds.
func TestSaveSnapshotOneAtATime(t *testing.T) {
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Node.AwaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	entered, hold := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- srv.Node.SaveSnapshot(ctx, func(node.SnapshotInfo, io.Reader) error {
			close(entered)
			<-hold
			return nil
		})
	}()
	select {
	case <-entered:
	case err := <-first:
		t.Fatalf("first save ended early: %v", err)
	case <-ctx.Done():
		t.Fatal("first save never streamed")
	}
	if _, _, err := saveBytes(ctx, srv.Node); reason(err) != dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS {
		t.Fatalf("second save during the first: %v, want TOO_MANY_REQUESTS", err)
	}
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	info, b, err := saveBytes(ctx, srv.Node)
	if err != nil {
		t.Fatalf("save after the first ended: %v", err)
	}
	if int64(len(b)) != info.Size || info.Index == 0 || info.Term == 0 {
		t.Fatalf("snapshot of %d bytes with info %+v", len(b), info)
	}
}

// A caller that gives up does not leave the node refusing snapshots: the
// next request succeeds once Raft has finished the abandoned one.
func TestSaveSnapshotAbandoned(t *testing.T) {
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Node.AwaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	gone, stop := context.WithCancel(ctx)
	stop()
	if _, _, err := saveBytes(gone, srv.Node); err == nil {
		t.Fatal("a save with a cancelled context succeeded")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, err := saveBytes(ctx, srv.Node)
		if err == nil {
			return
		}
		if reason(err) != dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_REQUESTS || time.Now().After(deadline) {
			t.Fatalf("save after an abandoned one: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}

// Restore refuses a folder that holds anything and a configuration without
// this node, and leaves nothing behind when it refuses.
func TestRestoreRefusals(t *testing.T) {
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Node.AwaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	info, b, err := saveBytes(ctx, srv.Node)
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	dir := filepath.Join(parent, "data")
	_, err = node.Restore(node.RestoreConfig{DataDir: dir, ID: "n9", Peers: []node.Peer{{ID: "n1", RaftAddr: "127.0.0.1:1"}}, Index: info.Index}, bytes.NewReader(b))
	if err == nil {
		t.Fatal("restore for a node missing from --peers succeeded")
	}
	_, err = node.Restore(node.RestoreConfig{DataDir: dir, Index: info.Index}, bytes.NewReader(b[:len(b)/2]))
	if err == nil {
		t.Fatal("restore of half a snapshot succeeded")
	}
	if left, _ := filepath.Glob(filepath.Join(parent, "*")); len(left) > 0 {
		t.Fatalf("refused restores left %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(parent, ".*")); len(left) > 0 {
		t.Fatalf("refused restores left %v", left)
	}
	if _, err := node.Restore(node.RestoreConfig{DataDir: dir, Index: info.Index}, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Restore(node.RestoreConfig{DataDir: dir, Index: info.Index}, bytes.NewReader(b)); err == nil {
		t.Fatal("a second restore into the same folder succeeded")
	}
}

// A restore into an existing empty folder (a mount point, say) fills it, and
// a node started on it serves the saved files.
func TestRestoreIntoEmptyFolder(t *testing.T) {
	src := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := src.Node.AwaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	ses, err := src.Node.OpenSession(ctx, 0, "writer")
	if err != nil {
		t.Fatal(err)
	}
	caller := func(seq uint64) node.Caller {
		return node.Caller{ClientID: ses.ClientID, Secret: ses.Secret, Seq: seq}
	}
	g, err := src.Node.Acquire(ctx, caller(1), false, time.Second)
	if err != nil || !g.Granted {
		t.Fatalf("acquire: %+v %v", g, err)
	}
	if _, err := src.Node.Append(ctx, caller(2), g.Token, "file_7", []byte("restored bytes"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Node.Release(ctx, caller(3), g.Token, false, nil, nil); err != nil {
		t.Fatal(err)
	}
	info, b, err := saveBytes(ctx, src.Node)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	res, err := node.Restore(node.RestoreConfig{DataDir: dir, Index: info.Index}, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if res.EndedSessions != 1 {
		t.Fatalf("%d sessions ended, want 1", res.EndedSessions)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Fatalf("restored folder holds %v, want files, node-id and raft", entries)
	}
	dst := servertest.Start(t, &node.Config{DataDir: dir})
	if err := dst.Node.AwaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	data, _, _, err := dst.Node.ReadFile(ctx, "file_7", 0, 0)
	if err != nil || string(data) != "restored bytes" {
		t.Fatalf("file_7 = %q, %v", data, err)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, "files", "file_7"))
	if err != nil || string(onDisk) != "restored bytes" {
		t.Fatalf("file_7 on disk = %q, %v", onDisk, err)
	}
}
