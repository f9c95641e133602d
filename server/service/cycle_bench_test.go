package service_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/servertest"
)

// BenchmarkLockCycle runs one session's lock cycles (acquire, append 32
// bytes, release) against a real node over loopback HTTP/2, on both
// protocols. Allocations are the process's: client and server. The Go
// transport asks for gzip as the dlm client does, so answers would be
// compressed if the server compressed small messages.
func BenchmarkLockCycle(b *testing.B) {
	for _, p := range protocols {
		b.Run(p.name, func(b *testing.B) {
			srv := servertest.Start(b, nil)
			c := lockClient(srv, p.opts, "")
			ctx := context.Background()
			s, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{}))
			if err != nil {
				b.Fatal(err)
			}
			id, secret := s.Msg.GetClientId(), s.Msg.GetSecret()
			data := make([]byte, 32)
			seq := uint64(0)
			b.ReportAllocs()
			for b.Loop() {
				seq++
				g, err := c.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: id, Secret: secret, Seq: seq, AckedBelow: seq}))
				if err != nil || !g.Msg.GetGranted() {
					b.Fatalf("acquire: %v %v", g, err)
				}
				tok := g.Msg.GetToken()
				seq++
				if _, err := c.AppendFile(ctx, connect.NewRequest(&dlmv1.AppendFileRequest{ClientId: id, Secret: secret, Seq: seq, AckedBelow: seq, Token: tok, File: "file_1", Data: data})); err != nil {
					b.Fatal(err)
				}
				seq++
				if _, err := c.LockRelease(ctx, connect.NewRequest(&dlmv1.LockReleaseRequest{ClientId: id, Secret: secret, Seq: seq, AckedBelow: seq, Token: tok})); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
