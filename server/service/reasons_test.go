package service

import (
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
)

// TestEveryReasonHasASpec checks the proto, the one source of what a reason
// means: every ErrorReason but UNSPECIFIED says its code, its retry class,
// its message and its client error, and ErrorReason carries the clients'
// retry policy.
func TestEveryReasonHasASpec(t *testing.T) {
	vals := dlmv1.ErrorReason(0).Descriptor().Values()
	for i := range vals.Len() {
		v := vals.Get(i)
		spec, _ := proto.GetExtension(v.Options(), dlmv1.E_ReasonSpec).(*dlmv1.ReasonSpec)
		if v.Number() == 0 {
			if spec != nil {
				t.Errorf("%s has a reason_spec; UNSPECIFIED means no reason", v.Name())
			}
			continue
		}
		if spec.GetCode() == dlmv1.ConnectCode_CONNECT_CODE_UNSPECIFIED || spec.GetRetry() == dlmv1.RetryClass_RETRY_CLASS_UNSPECIFIED ||
			spec.GetMessage() == "" || spec.GetClientError() == "" {
			t.Errorf("%s: reason_spec %v lacks a field", v.Name(), spec)
		}
		// A reason the clients repeat must have the code that tells
		// proxies and other clients to repeat it, and only such a reason.
		repeat := spec.GetRetry() == dlmv1.RetryClass_RETRY_CLASS_FOLLOW_LEADER || spec.GetRetry() == dlmv1.RetryClass_RETRY_CLASS_RETRY_SAME_REQUEST
		if unavailable := spec.GetCode() == dlmv1.ConnectCode_CONNECT_CODE_UNAVAILABLE; repeat != unavailable {
			t.Errorf("%s: retry class %v with code %v: clients repeat exactly the Unavailable answers", v.Name(), spec.GetRetry(), spec.GetCode())
		}
	}
	pol, _ := proto.GetExtension(dlmv1.ErrorReason(0).Descriptor().Options(), dlmv1.E_RetryPolicy).(*dlmv1.RetryPolicy)
	if pol.GetBackoffBaseMs() == 0 || pol.GetBackoffMaxMs() < pol.GetBackoffBaseMs() || pol.GetRefusedForMs() == 0 || pol.GetMaxRedirects() == 0 {
		t.Errorf("ErrorReason's retry_policy %v is incomplete", pol)
	}
	// The Connect code numbers in reason.proto are connect's.
	for c := connect.CodeCanceled; c <= connect.CodeUnauthenticated; c++ {
		name := dlmv1.ConnectCode(c).String()
		if want := "CONNECT_CODE_" + strings.ToUpper(c.String()); name != want {
			t.Errorf("ConnectCode %d is %s, connect calls it %s", c, name, want)
		}
	}
}

// TestToConnectReadsTheSpec checks that a node error leaves the service with
// the proto's code and, lacking its own, the proto's message.
func TestToConnectReadsTheSpec(t *testing.T) {
	for _, tc := range []struct {
		reason dlmv1.ErrorReason
		code   connect.Code
		msg    string
	}{
		{dlmv1.ErrorReason_ERROR_REASON_LOCK_EXPIRED, connect.CodeAborted, "the fencing token is not the current grant: the lock was released, revoked or granted anew"},
		{dlmv1.ErrorReason_ERROR_REASON_TOO_MANY_SESSIONS, connect.CodeResourceExhausted, "the cluster has as many open sessions as its limit (--max-sessions): nothing changed"},
		{dlmv1.ErrorReason_ERROR_REASON_MEMBER_CONFLICT, connect.CodeAlreadyExists, "the member conflicts with the cluster's configuration: nothing changed"},
	} {
		var ce *connect.Error
		if !errors.As(toConnect(&node.Error{Reason: tc.reason}), &ce) || ce.Code() != tc.code || ce.Message() != tc.msg {
			t.Errorf("%v: got %v, want %v %q", tc.reason, ce, tc.code, tc.msg)
		}
	}
	var ce *connect.Error
	if errors.As(toConnect(&node.Error{Reason: dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, Msg: "no majority"}), &ce); ce.Message() != "no majority" {
		t.Errorf("a node's own message was replaced: %q", ce.Message())
	}
}
