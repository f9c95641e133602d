package service_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/servertest"
)

// TestSeqReusedForAnotherMethod reuses an acquire's seq for an append and a
// close: both must be refused with InvalidArgument, stage nothing and leave
// the session open, rather than get the acquire's answer as a success.
func TestSeqReusedForAnotherMethod(t *testing.T) {
	srv := servertest.Start(t, nil)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := newClient(srv, p.opts)
			s := open(t, c, 10000)
			tok := s.mustAcquire() // seq 1
			wantReused := func(what string, err error) {
				t.Helper()
				var ce *connect.Error
				if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || reasonOf(err) != dlmv1.ErrorReason_ERROR_REASON_SEQUENCE_REUSED || !strings.Contains(ce.Message(), "another method") {
					t.Fatalf("%s with the acquire's seq: %v, want invalid_argument SEQUENCE_REUSED", what, err)
				}
			}
			file := map[string]string{"connect": "file_3", "grpc": "file_4"}[p.name]
			_, err := s.c.AppendFile(context.Background(), connect.NewRequest(&dlmv1.AppendFileRequest{
				ClientId: s.id, Secret: s.secret, Seq: 1, Token: tok, File: file, Data: []byte("lost"),
			}))
			wantReused("AppendFile", err)
			_, err = s.c.Close(context.Background(), connect.NewRequest(&dlmv1.CloseRequest{ClientId: s.id, Secret: s.secret, Seq: 1}))
			wantReused("Close", err)
			open := false
			for _, ses := range status(t, c).GetSessions() {
				open = open || ses.GetClientId() == s.id
			}
			if !open {
				t.Fatal("a refused Close ended the session")
			}
			s.seq = 1
			if _, err := s.append(tok, file, "kept"); err != nil {
				t.Fatalf("append: %v", err)
			}
			if err := s.release(tok); err != nil {
				t.Fatalf("release: %v", err)
			}
			if got := read(t, c, file); got != "kept" {
				t.Fatalf("%s holds %q, want only the real append", file, got)
			}
		})
	}
}
