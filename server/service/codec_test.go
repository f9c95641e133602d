package service_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/dlm/dlm/server/servertest"
)

// TestMalformedRequestsNameNoGoTypes sends malformed bodies in each encoding:
// the error says which message was malformed, by its protobuf name, and
// shows none of the server's Go types.
func TestMalformedRequestsNameNoGoTypes(t *testing.T) {
	srv := servertest.Start(t, nil)
	for _, tc := range []struct{ contentType, body string }{
		{"application/proto", "\xff\xff\xff"},
		{"application/json", "{not json"},
		{"application/json; charset=utf-8", `{"leaseMs": "many"}`},
	} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/dlm.v1.LockService/Init", bytes.NewReader([]byte(tc.body)))
		req.Header.Set("Content-Type", tc.contentType)
		res, err := servertest.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(res.Body)
		res.Body.Close()
		msg := string(out)
		if res.StatusCode != http.StatusBadRequest || strings.Contains(msg, "dlmv1") || strings.Contains(msg, "*") || !strings.Contains(msg, "malformed dlm.v1.InitRequest") {
			t.Errorf("%s body %q answered %d %s, want 400 naming dlm.v1.InitRequest and no Go type", tc.contentType, tc.body, res.StatusCode, msg)
		}
	}
}
