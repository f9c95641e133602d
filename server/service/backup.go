package service

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
)

// snapshotChunk is the size of one streamed piece: small next to any message
// limit, large enough that framing costs nothing.
const snapshotChunk = 256 << 10

// SaveSnapshot streams a snapshot taken at the leader, then a trailer with
// its index, term, size and SHA-256.
func (c *Cluster) SaveSnapshot(ctx context.Context, req *connect.Request[dlmv1.SaveSnapshotRequest], stream *connect.ServerStream[dlmv1.SaveSnapshotResponse]) error {
	// The snapshot holds every session's secret. Only the server's own
	// pages reach the ClusterService, and none of them needs a snapshot, so
	// a call that comes from any page is refused; command-line tools send
	// no Origin.
	if req.Header().Get("Origin") != "" {
		return connect.NewError(connect.CodePermissionDenied, errors.New("snapshots are not served to web pages: use dlm snapshot save"))
	}
	err := c.m.SaveSnapshot(ctx, func(info node.SnapshotInfo, r io.Reader) error {
		h := sha256.New()
		buf := make([]byte, snapshotChunk)
		var sent int64
		for sent < info.Size {
			n, err := io.ReadFull(r, buf[:min(int64(len(buf)), info.Size-sent)])
			if err != nil {
				return connect.NewError(connect.CodeInternal, errors.New("read the snapshot: "+err.Error()))
			}
			h.Write(buf[:n])
			sent += int64(n)
			if err := stream.Send(&dlmv1.SaveSnapshotResponse{Part: &dlmv1.SaveSnapshotResponse_Chunk{Chunk: buf[:n]}}); err != nil {
				return err
			}
		}
		return stream.Send(&dlmv1.SaveSnapshotResponse{Part: &dlmv1.SaveSnapshotResponse_Trailer{Trailer: &dlmv1.SnapshotTrailer{
			Index: info.Index, Term: info.Term, Size: uint64(sent), Sha256: h.Sum(nil),
		}}})
	})
	var ce *connect.Error
	if err != nil && !errors.As(err, &ce) {
		return toConnect(err)
	}
	return err
}
