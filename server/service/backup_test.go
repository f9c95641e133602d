package service_test

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/servertest"
)

// SaveSnapshot streams chunks then a trailer whose size and SHA-256 match
// them, over Connect and gRPC; a request from a web page (with an Origin) is
// refused, since the snapshot holds every session's secret.
func TestSaveSnapshotStream(t *testing.T) {
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Node.AwaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := dlmv1connect.NewClusterServiceClient(servertest.HTTPClient(), srv.URL, append(p.opts, connect.WithInterceptors(auth.Bearer(servertest.AdminToken)))...)
			s, err := c.SaveSnapshot(ctx, connect.NewRequest(&dlmv1.SaveSnapshotRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			sum := sha256.New()
			var size uint64
			var trailer *dlmv1.SnapshotTrailer
			for s.Receive() {
				if trailer != nil {
					t.Fatal("a message after the trailer")
				}
				if trailer = s.Msg().GetTrailer(); trailer == nil {
					sum.Write(s.Msg().GetChunk())
					size += uint64(len(s.Msg().GetChunk()))
				}
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if trailer == nil || trailer.GetSize() != size || string(trailer.GetSha256()) != string(sum.Sum(nil)) || size == 0 || trailer.GetIndex() == 0 {
				t.Fatalf("trailer %v for %d bytes", trailer, size)
			}

			req := connect.NewRequest(&dlmv1.SaveSnapshotRequest{})
			req.Header().Set("Origin", "https://example.com")
			s2, err := c.SaveSnapshot(ctx, req)
			if err == nil {
				if s2.Receive() {
					t.Fatal("a snapshot was served to a web page")
				}
				err = s2.Err()
				s2.Close()
			}
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Fatalf("with an Origin: %v, want PermissionDenied", err)
			}
		})
	}
}
