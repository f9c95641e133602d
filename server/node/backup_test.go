package node_test

import (
	"bytes"
	"context"
	"errors"
	"io"
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
