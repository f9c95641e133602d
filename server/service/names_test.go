package service_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/servertest"
)

// TestSessionNamesArePrintable: a name is shown in operators' terminals, so
// one with control characters (an escape sequence, a bell, a forged line) or
// invalid UTF-8 is refused at Init and opens nothing.
func TestSessionNamesArePrintable(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newClient(srv, nil)
	for _, name := range []string{"\x1b]0;pwned\a", "evil\x1b[2J", "a\nholder  client 1 (forged)", "tab\there", "nul\x00", "del\x7f"} {
		_, err := c.Init(context.Background(), connect.NewRequest(&dlmv1.InitRequest{Name: name}))
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
			t.Errorf("Init with name %q: %v, want invalid_argument", name, err)
		}
	}
	// The Go client will not marshal invalid UTF-8: send it raw.
	body := protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "bad\xffutf8")
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/dlm.v1.LockService/Init", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/proto")
	res, err := servertest.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("Init with a name of invalid UTF-8 answered %d, want 400 (invalid_argument)", res.StatusCode)
	}
	if ss := status(t, c).GetSessions(); len(ss) != 0 {
		t.Fatalf("refused names opened sessions: %v", ss)
	}
	for _, name := range []string{"alice", "worker 7 (eu-west)", "Zoë – 東京"} {
		if _, err := c.Init(context.Background(), connect.NewRequest(&dlmv1.InitRequest{Name: name})); err != nil {
			t.Errorf("Init with name %q: %v", name, err)
		}
	}
}
