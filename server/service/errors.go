package service

import (
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
)

// reasons holds what each reason means, read once from the reason_spec
// options on the proto's ErrorReason values (proto/dlm/v1/reason.proto), the
// one place both clients read too. Aborted is what connect's docs give for a
// failed sequencer (fencing) check; Unavailable means "back off and retry",
// which clients do only for that code.
var reasons = readReasons()

// reasonMeaning is the part of a reason's spec the server uses.
type reasonMeaning struct {
	code    connect.Code
	message string
}

func readReasons() map[dlmv1.ErrorReason]reasonMeaning {
	vals := dlmv1.ErrorReason(0).Descriptor().Values()
	m := make(map[dlmv1.ErrorReason]reasonMeaning, vals.Len())
	for i := range vals.Len() {
		v := vals.Get(i)
		spec, _ := proto.GetExtension(v.Options(), dlmv1.E_ReasonSpec).(*dlmv1.ReasonSpec)
		if spec.GetCode() == dlmv1.ConnectCode_CONNECT_CODE_UNSPECIFIED {
			continue
		}
		m[dlmv1.ErrorReason(v.Number())] = reasonMeaning{code: connect.Code(spec.GetCode()), message: spec.GetMessage()}
	}
	return m
}

// toConnect is the one place where domain errors become Connect errors.
func toConnect(err error) error {
	var ne *node.Error
	if !errors.As(err, &ne) {
		return connect.NewError(connect.CodeInternal, err)
	}
	meaning, ok := reasons[ne.Reason]
	if !ok {
		meaning = reasonMeaning{code: connect.CodeInternal, message: ne.Reason.String()}
	}
	msg := ne.Msg
	if msg == "" {
		msg = meaning.message
	}
	cerr := connect.NewError(meaning.code, errors.New(msg))
	if d, derr := connect.NewErrorDetail(&dlmv1.ErrorDetail{
		Reason: ne.Reason, LeaderUrl: ne.LeaderURL,
		StagedAppends: ne.Staged.Appends, StagedBytes: ne.Staged.Bytes,
	}); derr == nil {
		cerr.AddDetail(d)
	}
	return cerr
}
