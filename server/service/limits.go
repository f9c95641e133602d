package service

import (
	"connectrpc.com/connect"

	"github.com/dlm/dlm/server/metrics"
)

// requestHeadroom is what an AppendFile request may carry besides its data:
// ids, the secret, seq, token, a file name of at most 64 bytes and the
// framing, with room to spare for fields a newer client might add.
const requestHeadroom = 64 << 10

// defaultMaxAppendBytes is the node's default, for a Backend that does not
// say its own.
const defaultMaxAppendBytes = 1 << 20

// ReadMaxBytes is the largest request message the handlers read: just above
// the largest legal append, the largest message the API takes. Connect
// checks it before buffering and again while decompressing, so an oversized
// body or a small compressed one that expands past it is refused with
// ResourceExhausted instead of being held in memory.
func ReadMaxBytes(b Backend) int {
	limit := defaultMaxAppendBytes
	if l, ok := b.(interface{ MaxAppendBytes() int }); ok && l.MaxAppendBytes() > 0 {
		limit = l.MaxAppendBytes()
	}
	return limit + requestHeadroom
}

// withReadMax puts the read limit and the codecs before the caller's
// options, so a caller may still choose others.
func withReadMax(svc *Service, m *metrics.Metrics, opts []connect.HandlerOption) []connect.HandlerOption {
	own := append([]connect.HandlerOption{connect.WithReadMaxBytes(ReadMaxBytes(svc.b))}, codecOptions(m)...)
	return append(own, opts...)
}
