package service_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/servertest"
)

// BenchmarkCycle compares one client's lock cycle (acquire, one 32 B
// append, release) on one real node: "logged" sends the append without a
// place, so it is its own Raft entry (the path before memory staging and
// the one older clients keep); "placed" stages it in the leader's memory
// and the release carries it; "inline" sends it inside the release (two
// calls, two Raft entries). Compare the ratios within one run.
func BenchmarkCycle(b *testing.B) {
	data := make([]byte, 32)
	for _, mode := range []string{"logged", "placed", "inline"} {
		b.Run(mode, func(b *testing.B) {
			srv := servertest.Start(b, nil)
			c := newClient(srv, nil)
			res, err := c.Init(context.Background(), connect.NewRequest(&dlmv1.InitRequest{Name: "bench"}))
			if err != nil {
				b.Fatal(err)
			}
			id, secret := res.Msg.GetClientId(), res.Msg.GetSecret()
			var seq uint64
			next := func() uint64 { seq++; return seq }
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				s := next()
				a, err := c.LockAcquire(ctx, connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: id, Secret: secret, Seq: s, AckedBelow: s}))
				if err != nil || !a.Msg.GetGranted() {
					b.Fatalf("acquire: %v", err)
				}
				token := a.Msg.GetToken()
				rel := &dlmv1.LockReleaseRequest{ClientId: id, Secret: secret, Token: token}
				switch mode {
				case "logged", "placed":
					var pos uint32
					if mode == "placed" {
						pos = 1
						n, size := uint32(1), uint64(len(data))
						rel.SectionAppends, rel.SectionBytes = &n, &size
					}
					s := next()
					if _, err := c.AppendFile(ctx, connect.NewRequest(&dlmv1.AppendFileRequest{
						ClientId: id, Secret: secret, Seq: s, AckedBelow: s, Token: token, File: "file_0", Data: data, Position: pos,
					})); err != nil {
						b.Fatalf("append: %v", err)
					}
				case "inline":
					rel.Appends = []*dlmv1.SectionAppend{{File: "file_0", Data: data}}
				}
				rel.Seq = next()
				rel.AckedBelow = rel.Seq
				if _, err := c.LockRelease(ctx, connect.NewRequest(rel)); err != nil {
					b.Fatalf("release: %v", err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
		})
	}
}
