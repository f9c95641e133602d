package node_test

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// looseEntries lists what in dir others may read or enter.
func looseEntries(t *testing.T, dir string) []string {
	t.Helper()
	var loose []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o077 != 0 {
			loose = append(loose, path+" "+info.Mode().Perm().String())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return loose
}

func writeFile(t *testing.T, url, file, data string) {
	t.Helper()
	ctx := context.Background()
	c := dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), url)
	ini, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{Name: "perms"}))
	if err != nil {
		t.Fatal(err)
	}
	id, secret := ini.Msg.GetClientId(), ini.Msg.GetSecret()
	acq, err := c.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: id, Secret: secret, Seq: 1, WaitMs: 5000}))
	if err != nil || !acq.Msg.GetGranted() {
		t.Fatalf("acquire: %v %v", acq, err)
	}
	tok := acq.Msg.GetToken()
	if _, err := c.AppendFile(ctx, connect.NewRequest(&dlmv1.AppendFileRequest{ClientId: id, Secret: secret, Seq: 2, Token: tok, File: file, Data: []byte(data)})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Close(ctx, connect.NewRequest(&dlmv1.CloseRequest{ClientId: id, Secret: secret, Seq: 3})); err != nil {
		t.Fatal(err)
	}
}

// TestDataFolderIsPrivate checks that the data folder, which holds every
// session secret, is readable by its owner only whatever the umask, and that
// a start over a folder left readable by others warns and tightens it.
func TestDataFolderIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	logs := &syncBuffer{}
	srv := servertest.Start(t, &node.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	writeFile(t, srv.URL, "file_1", "secret data")
	if loose := looseEntries(t, dir); len(loose) > 0 {
		t.Fatalf("a fresh data folder has entries others can read:\n%s", strings.Join(loose, "\n"))
	}
	if strings.Contains(logs.String(), "readable by other users") {
		t.Fatalf("a fresh folder was reported loose:\n%s", logs)
	}
	srv.Close()
	for path, mode := range map[string]os.FileMode{dir: 0o755, filepath.Join(dir, "node-id"): 0o644, filepath.Join(dir, "files", "file_1"): 0o644, filepath.Join(dir, "raft"): 0o755} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	srv.Restart()
	if !strings.Contains(logs.String(), "readable by other users") || !strings.Contains(logs.String(), "node-id") {
		t.Fatalf("a start over a loose folder did not warn:\n%s", logs)
	}
	if loose := looseEntries(t, dir); len(loose) > 0 {
		t.Fatalf("after a start the data folder still has entries others can read:\n%s", strings.Join(loose, "\n"))
	}
}
