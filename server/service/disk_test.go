package service_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

// stateOf is the part of a status that a refused call must not change.
func stateOf(st *dlmv1.StatusResponse) *dlmv1.StatusResponse {
	out := &dlmv1.StatusResponse{Lock: proto.Clone(st.GetLock()).(*dlmv1.LockStatus), Files: st.GetFiles()}
	out.Lock.LeaseLeftMs = 0
	for _, h := range out.Lock.GetHolders() {
		h.LeaseLeftMs = 0
	}
	for _, s := range st.GetSessions() {
		out.Sessions = append(out.Sessions, &dlmv1.SessionStatus{ClientId: s.GetClientId(), Name: s.GetName(), LeaseMs: s.GetLeaseMs()})
	}
	return out
}

// refused checks that call fails with code and reason and changes nothing,
// and returns its message.
func refused(t *testing.T, c dlmv1connect.LockServiceClient, code connect.Code, reason dlmv1.ErrorReason, call func() error) string {
	t.Helper()
	before := stateOf(status(t, c))
	err := call()
	if connect.CodeOf(err) != code || reasonOf(err) != reason {
		t.Fatalf("got %v (reason %v); want code %v reason %v", err, reasonOf(err), code, reason)
	}
	if after := stateOf(status(t, c)); !proto.Equal(before, after) {
		t.Fatalf("a refused call changed the state:\nbefore %v\nafter  %v", before, after)
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// awaitFree polls Status until the node reports free bytes: the node caches
// the figure briefly, and the test must not race the cache.
func awaitFree(t *testing.T, c dlmv1connect.LockServiceClient, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for status(t, c).GetNode().GetFreeBytes() != want {
		if time.Now().After(deadline) {
			t.Fatalf("status never reported %d free bytes", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDiskFullRefusesGrowthOnly(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			var free atomic.Int64
			free.Store(1 << 30)
			srv := servertest.Start(t, &node.Config{
				MinFreeSpace: 100 << 20,
				FreeSpace:    func(string) (int64, error) { return free.Load(), nil },
			})
			c := newClient(srv, p.opts)
			holder, waiter, idle := open(t, c, 0), open(t, c, 0), open(t, c, 0)
			token := holder.mustAcquire()
			if _, err := holder.append(token, "file_1", "kept"); err != nil {
				t.Fatalf("append: %v", err)
			}
			awaitFree(t, c, 1<<30)

			free.Store(1 << 20)
			awaitFree(t, c, 1<<20)
			exhausted, full := connect.CodeResourceExhausted, dlmv1.ErrorReason_ERROR_REASON_DISK_FULL
			msg := refused(t, c, exhausted, full, func() error {
				_, err := c.Init(context.Background(), connect.NewRequest(&dlmv1.InitRequest{Name: "new"}))
				return err
			})
			if !strings.Contains(msg, "--min-free-space") || !strings.Contains(msg, "1.0 MiB free") {
				t.Errorf("message %q does not say what is wrong", msg)
			}
			refused(t, c, exhausted, full, func() error { _, err := holder.append(token, "file_1", "more"); return err })
			refused(t, c, exhausted, full, func() error { _, err := waiter.acquire(false, 10); return err })
			refused(t, c, exhausted, full, func() error { _, err := waiter.acquire(true, 0); return err })

			// What frees state or costs nothing still works: a repeat gets
			// its recorded answer, keepalives renew, the holder commits, an
			// idle session closes.
			res, err := c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{
				ClientId: holder.id, Secret: holder.secret, Seq: holder.next(), Token: token, File: "file_1", Data: []byte("kept"), Position: 1,
			}))
			if err != nil || res.Msg.GetStagedBytes() != 4 {
				t.Fatalf("repeated append: %v %v", res, err)
			}
			if _, err := c.KeepAlive(context.Background(), connect.NewRequest(&dlmv1.KeepAliveRequest{ClientId: waiter.id, Secret: waiter.secret})); err != nil {
				t.Fatalf("keepalive: %v", err)
			}
			if err := holder.release(token); err != nil {
				t.Fatalf("release: %v", err)
			}
			if _, err := c.Close(context.Background(), connect.NewRequest(&dlmv1.CloseRequest{ClientId: idle.id, Secret: idle.secret, Seq: idle.next()})); err != nil {
				t.Fatalf("close: %v", err)
			}
			if got := read(t, c, "file_1"); got != "kept" {
				t.Fatalf("file_1 = %q, want kept", got)
			}

			// Space returns: the refused requests succeed, with no restart.
			free.Store(1 << 30)
			awaitFree(t, c, 1<<30)
			token = waiter.mustAcquire()
			if _, err := waiter.append(token, "file_1", "+more"); err != nil {
				t.Fatalf("append after space returned: %v", err)
			}
			if err := waiter.release(token); err != nil {
				t.Fatalf("release: %v", err)
			}
			if got := read(t, c, "file_1"); got != "kept+more" {
				t.Fatalf("file_1 = %q, want kept+more", got)
			}
		})
	}
}

func TestFileTooLarge(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			srv := servertest.Start(t, &node.Config{MaxFileBytes: 10})
			c := newClient(srv, p.opts)
			s := open(t, c, 0)
			token := s.mustAcquire()
			if _, err := s.append(token, "file_2", "123456"); err != nil {
				t.Fatalf("append: %v", err)
			}
			exhausted, tooLarge := connect.CodeResourceExhausted, dlmv1.ErrorReason_ERROR_REASON_FILE_TOO_LARGE
			// Staged bytes count toward the limit.
			msg := refused(t, c, exhausted, tooLarge, func() error { _, err := s.append(token, "file_2", "12345"); return err })
			if !strings.Contains(msg, "(10 bytes, --max-file-size)") {
				t.Errorf("message %q does not name the limit", msg)
			}
			if _, err := s.append(token, "file_2", "1234"); err != nil {
				t.Fatalf("append up to the limit: %v", err)
			}
			if err := s.release(token); err != nil {
				t.Fatalf("release: %v", err)
			}
			// Committed bytes count in later sections; other files have their
			// own room.
			token = s.mustAcquire()
			refused(t, c, exhausted, tooLarge, func() error { _, err := s.append(token, "file_2", "x"); return err })
			if _, err := s.append(token, "file_3", "0123456789"); err != nil {
				t.Fatalf("append to another file: %v", err)
			}
			if err := s.release(token); err != nil {
				t.Fatalf("release: %v", err)
			}
			if got := read(t, c, "file_2"); got != "1234561234" {
				t.Fatalf("file_2 = %q", got)
			}
			if got := read(t, c, "file_3"); got != "0123456789" {
				t.Fatalf("file_3 = %q", got)
			}
		})
	}
}

// A full Raft log disk is reported as what it is, over the API, and passes
// by itself once space returns.
func TestLogDiskFullIsReported(t *testing.T) {
	disk := servertest.NewFullDisk(false)
	srv := servertest.Start(t, &node.Config{LogFS: disk, LogSegmentSize: 64 << 10, MinFreeSpace: -1})
	c := newClient(srv, nil)
	s := open(t, c, 0)
	record := strings.Repeat("r", 1000)
	section := func() error {
		res, err := s.acquire(false, 1000)
		if err != nil {
			return err
		}
		if _, err := s.append(res.GetToken(), "file_4", record); err != nil {
			return err
		}
		return s.release(res.GetToken())
	}
	disk.Full.Store(true)
	var err error
	for i := 0; i < 500 && err == nil; i++ {
		err = section()
	}
	if err == nil {
		t.Fatal("500 sections on a full log disk all succeeded")
	}
	for range 10 {
		_, err := c.Init(context.Background(), connect.NewRequest(&dlmv1.InitRequest{Name: "refused"}))
		var ce *connect.Error
		if connect.CodeOf(err) != connect.CodeUnavailable || reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT ||
			!errors.As(err, &ce) || !strings.Contains(ce.Message(), "Raft log disk is full") {
			t.Fatalf("Init on a full log disk: %v (reason %v), want Unavailable, STORAGE_FAULT naming the log", err, reasonOf(err))
		}
		time.Sleep(25 * time.Millisecond)
	}
	st, err := c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{}))
	if err != nil || !strings.Contains(st.Msg.GetNode().GetStorageFault(), "disk is full") {
		t.Fatalf("status on a full log disk: %v, %v", st, err)
	}

	disk.Full.Store(false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Init(context.Background(), connect.NewRequest(&dlmv1.InitRequest{Name: "after"}))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery 30 s after space returned: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Whatever the failed section left is given up; the next one commits.
	if err := s.release(0); err != nil {
		t.Fatalf("give up: %v", err)
	}
	before := len(read(t, c, "file_4"))
	if err := section(); err != nil {
		t.Fatalf("section after recovery: %v", err)
	}
	if got := len(read(t, c, "file_4")); got != before+len(record) {
		t.Fatalf("file_4 grew from %d to %d bytes, want %d more", before, got, len(record))
	}
	if got := status(t, c).GetNode().GetStorageFault(); got != "" {
		t.Fatalf("storage fault after recovery: %q", got)
	}
}
