package service_test

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/servertest"
)

// acquireLock asks for a lock by name (nil: the default lock) in mode.
func (s *session) acquireLock(lock *string, mode dlmv1.LockMode, try bool, waitMs uint32) (*dlmv1.LockAcquireResponse, error) {
	res, err := s.c.LockAcquire(context.Background(), connect.NewRequest(&dlmv1.LockAcquireRequest{
		ClientId: s.id, Secret: s.secret, Seq: s.next(), Try: try, WaitMs: waitMs, Lock: lock, Mode: mode,
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (s *session) releaseLock(lock *string, token uint64) error {
	_, err := s.c.LockRelease(context.Background(), connect.NewRequest(&dlmv1.LockReleaseRequest{
		ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token, Lock: lock,
	}))
	return err
}

// wantRefused checks an error's Connect code and reason.
func wantRefused(t *testing.T, what string, err error, code connect.Code, reason dlmv1.ErrorReason) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted; want %v / %v", what, code, reason)
	}
	if connect.CodeOf(err) != code || reasonOf(err) != reason {
		t.Fatalf("%s: %v (code %v, reason %v); want %v / %v", what, err, connect.CodeOf(err), reasonOf(err), code, reason)
	}
}

// unchanged fails when the lock state moved past before: a refused request
// must not have reached the log.
func unchanged(t *testing.T, c dlmv1connect.LockServiceClient, what string, before *dlmv1.StatusResponse) {
	t.Helper()
	after := status(t, c)
	// The lease left moves with the clock, not with the state.
	a, b := proto.CloneOf(after.GetLock()), proto.CloneOf(before.GetLock())
	a.LeaseLeftMs, b.LeaseLeftMs = 0, 0
	for _, h := range append(a.GetHolders(), b.GetHolders()...) {
		h.LeaseLeftMs = 0
	}
	if after.GetStateIndex() != before.GetStateIndex() || !proto.Equal(a, b) || after.GetLockCount() != before.GetLockCount() {
		t.Fatalf("%s changed the state: index %d → %d, lock %v → %v", what, before.GetStateIndex(), after.GetStateIndex(), before.GetLock(), after.GetLock())
	}
}

// Every malformed lock request is refused with its own reason and code
// before it reaches the log, over Connect and gRPC.
func TestBadLockRequestsChangeNothing(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			srv := servertest.Start(t, nil)
			c := newClient(srv, p.opts)
			s := open(t, c, 0)
			token := s.mustAcquire()
			// A leased holder that is not the caller: its lease is left
			// alone by everything below.
			before := status(t, c)
			long := strings.Repeat("x", 257)
			for _, tc := range []struct {
				name   string
				call   func() error
				code   connect.Code
				reason dlmv1.ErrorReason
			}{
				{"acquire: empty name", func() error { _, err := s.acquireLock(proto.String(""), 0, true, 0); return err },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_EMPTY},
				{"acquire: 257-byte name", func() error { _, err := s.acquireLock(&long, 0, true, 0); return err },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_TOO_LONG},
				{"acquire: line break", func() error { _, err := s.acquireLock(proto.String("a\nb"), 0, true, 0); return err },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_INVALID},
				{"acquire: control character", func() error { _, err := s.acquireLock(proto.String("a\x00"), 0, true, 0); return err },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_INVALID},
				{"acquire: unknown mode", func() error { _, err := s.acquireLock(proto.String("jobs"), 7, true, 0); return err },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_MODE_UNKNOWN},
				{"acquire: unknown mode, no_wait", func() error {
					_, err := c.LockAcquire(context.Background(), connect.NewRequest(&dlmv1.LockAcquireRequest{
						ClientId: s.id, Secret: s.secret, Seq: s.next(), NoWait: true, Mode: -1,
					}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_MODE_UNKNOWN},
				{"acquire: delay too long", func() error {
					_, err := c.LockAcquire(context.Background(), connect.NewRequest(&dlmv1.LockAcquireRequest{
						ClientId: s.id, Secret: s.secret, Seq: s.next(), Try: true, Lock: proto.String("jobs"), LockDelayMs: proto.Uint32(60001),
					}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_DELAY_INVALID},
				{"append naming a lock", func() error {
					_, err := c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{
						ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token, File: "file_0", Data: []byte("x"), Position: 1, Lock: proto.String("jobs"),
					}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_DEFAULT_LOCK},
				{"append naming the empty lock", func() error {
					_, err := c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{
						ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token, File: "file_0", Data: []byte("x"), Position: 1, Lock: proto.String(""),
					}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_DEFAULT_LOCK},
				{"release: empty name", func() error { return s.releaseLock(proto.String(""), token) },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_EMPTY},
				{"release: invalid name", func() error { return s.releaseLock(proto.String("\x7f"), token) },
					connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_INVALID},
				{"release of a named lock carrying appends", func() error {
					_, err := c.LockRelease(context.Background(), connect.NewRequest(&dlmv1.LockReleaseRequest{
						ClientId: s.id, Secret: s.secret, Seq: s.next(), Token: token, Lock: proto.String("jobs"),
						Appends: []*dlmv1.SectionAppend{{File: "file_0", Data: []byte("x")}},
					}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_DEFAULT_LOCK},
				{"check: token 0", func() error {
					_, err := c.CheckToken(context.Background(), connect.NewRequest(&dlmv1.CheckTokenRequest{}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT},
				{"check: empty name", func() error {
					_, err := c.CheckToken(context.Background(), connect.NewRequest(&dlmv1.CheckTokenRequest{Lock: proto.String(""), Token: token}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_EMPTY},
				{"check: unknown lock", func() error {
					_, err := c.CheckToken(context.Background(), connect.NewRequest(&dlmv1.CheckTokenRequest{Lock: proto.String("nobody-holds-this"), Token: token}))
					return err
				}, connect.CodeNotFound, dlmv1.ErrorReason_ERROR_REASON_LOCK_UNKNOWN},
				{"history: long name", func() error {
					_, err := c.LockHistory(context.Background(), connect.NewRequest(&dlmv1.LockHistoryRequest{Lock: &long}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_TOO_LONG},
				{"status: empty name", func() error {
					_, err := c.Status(context.Background(), connect.NewRequest(&dlmv1.StatusRequest{Lock: proto.String("")}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_LOCK_NAME_EMPTY},
				{"list: bad page token", func() error {
					_, err := c.ListLocks(context.Background(), connect.NewRequest(&dlmv1.ListLocksRequest{PageToken: "not one of ours"}))
					return err
				}, connect.CodeInvalidArgument, dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT},
			} {
				wantRefused(t, tc.name, tc.call(), tc.code, tc.reason)
				unchanged(t, c, tc.name, before)
			}
			// The holder still holds, and commits, its section.
			if _, err := s.append(token, "file_0", "ok"); err != nil {
				t.Fatalf("append after the refusals: %v", err)
			}
			if err := s.release(token); err != nil {
				t.Fatalf("release after the refusals: %v", err)
			}
			if got := read(t, c, "file_0"); got != "ok" {
				t.Fatalf("file_0 = %q; want only the holder's append", got)
			}
		})
	}
}

// The default lock's acquire answers its lock and mode, and KeepAlive and
// Pulse list the grant in held beside the default lock's token.
func TestDefaultLockAnswersLockModeAndHeld(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	s := open(t, c, 0)
	res, err := s.acquireLock(nil, dlmv1.LockMode_LOCK_MODE_UNSPECIFIED, false, 5000)
	if err != nil || !res.GetGranted() || res.GetLock() != "" || res.GetMode() != dlmv1.LockMode_LOCK_MODE_EXCLUSIVE {
		t.Fatalf("acquire = %v, %v; want granted, lock \"\", EXCLUSIVE", res, err)
	}
	token := res.GetToken()
	want := []*dlmv1.HeldLock{{Lock: "", Token: token, Mode: dlmv1.LockMode_LOCK_MODE_EXCLUSIVE}}
	ka, err := c.KeepAlive(context.Background(), connect.NewRequest(&dlmv1.KeepAliveRequest{ClientId: s.id, Secret: s.secret}))
	if err != nil || ka.Msg.GetToken() != token || !heldEqual(ka.Msg.GetHeld(), want) {
		t.Fatalf("KeepAlive = %v, %v; want token %d and held %v", ka, err, token, want)
	}
	p := openPulse(t, c)
	p.send(creds(s))
	if r := p.answer(nil); len(r) != 1 || r[0].GetToken() != token || !heldEqual(r[0].GetHeld(), want) {
		t.Fatalf("Pulse = %v; want token %d and held %v", r, token, want)
	}
	if err := s.releaseLock(nil, token); err != nil {
		t.Fatalf("release: %v", err)
	}
	ka, err = c.KeepAlive(context.Background(), connect.NewRequest(&dlmv1.KeepAliveRequest{ClientId: s.id, Secret: s.secret}))
	if err != nil || ka.Msg.GetToken() != 0 || len(ka.Msg.GetHeld()) != 0 {
		t.Fatalf("KeepAlive after the release = %v, %v; want nothing held", ka, err)
	}
}

func heldEqual(a, b []*dlmv1.HeldLock) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
