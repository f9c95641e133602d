package auth_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
)

func TestParseTokens(t *testing.T) {
	good := "# ops\nadmin  admin-token-0123456789\n\nclient client-token-0123456789\nread read-token-0123456789 \n"
	creds, err := auth.ParseTokens(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(creds) != 3 || creds[0].Role != auth.Admin || creds[1].Role != auth.Client || creds[2].Role != auth.Read || creds[2].Token != "read-token-0123456789" {
		t.Fatalf("parsed %+v", creds)
	}
	for _, bad := range []struct{ text, want string }{
		{"root tok-0123456789abcdef", "line 1: unknown role"},
		{"read short", "line 1: the token is 5 characters"},
		{"read", "line 1: want \"ROLE TOKEN\""},
		{"read a b", "line 1: want \"ROLE TOKEN\""},
		{"read tok-0123456789abcdef\n#\nadmin tok-0123456789abcdef", "line 3: the same token as line 1"},
		{"read tok-0123456789\x7fabcdef", "line 1: the token has spaces or characters"},
	} {
		_, err := auth.ParseTokens(strings.NewReader(bad.text))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want %q", bad.text, err, bad.want)
		}
		if err != nil && strings.Contains(err.Error(), "0123456789") {
			t.Errorf("the error shows the token: %v", err)
		}
	}
}

func TestLoadTokensWarnsOnReadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("read tok-0123456789abcdef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	if _, warning, err := auth.LoadTokens(path); err != nil || !strings.Contains(warning, "chmod 600") {
		t.Fatalf("0644: warning %q, err %v", warning, err)
	}
	os.Chmod(path, 0o600)
	if _, warning, err := auth.LoadTokens(path); err != nil || warning != "" {
		t.Fatalf("0600: warning %q, err %v", warning, err)
	}
}

// The first start writes a random token, 0600; later starts read it; a
// given token replaces it; a joining node never makes one up.
func TestAdminTokenFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, _, err := auth.AdminToken(dir, "", false); err == nil {
		t.Fatal("a token was made up for a node that must share its cluster's")
	}
	tok, wrote, err := auth.AdminToken(dir, "", true)
	if err != nil || !wrote || len(tok) != 64 {
		t.Fatalf("first start: %q %v %v", tok, wrote, err)
	}
	fi, err := os.Stat(filepath.Join(dir, auth.AdminTokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin-token: %v %v, want mode 0600", fi.Mode(), err)
	}
	again, wrote, err := auth.AdminToken(dir, "", true)
	if err != nil || wrote || again != tok {
		t.Fatalf("second start: %q %v %v, want the stored token", again, wrote, err)
	}
	if _, _, err := auth.AdminToken(dir, "short", true); err == nil {
		t.Fatal("a short given token was accepted")
	}
	given := "given-token-0123456789abcdef"
	if got, wrote, err := auth.AdminToken(dir, given, false); err != nil || !wrote || got != given {
		t.Fatalf("given: %q %v %v", got, wrote, err)
	}
	if got, err := auth.ReadTokenFile(filepath.Join(dir, auth.AdminTokenFile)); err != nil || got != given {
		t.Fatalf("stored %q %v, want the given token", got, err)
	}
}

func TestGuardCheck(t *testing.T) {
	creds := []auth.Credential{{Role: auth.Read, Token: "read-token-0123456789"}, {Role: auth.Client, Token: "client-token-0123456789"}}
	header := func(v string) http.Header {
		h := http.Header{}
		if v != "" {
			h.Set("Authorization", v)
		}
		return h
	}
	for _, tc := range []struct {
		require   bool
		procedure string
		auth      string
		want      connect.Code // 0: allowed
	}{
		{false, dlmv1connect.LockServiceInitProcedure, "", 0},
		{false, dlmv1connect.LockServiceStatusProcedure, "Bearer nonsense", 0},
		{false, dlmv1connect.ClusterServiceAddMemberProcedure, "", connect.CodeUnauthenticated},
		{false, dlmv1connect.ClusterServiceAddMemberProcedure, "Basic YWRtaW4=", connect.CodeUnauthenticated},
		{false, dlmv1connect.ClusterServiceAddMemberProcedure, "Bearer admin-token-0123456789", 0},
		{false, dlmv1connect.ClusterServiceAddMemberProcedure, "bearer admin-token-0123456789", 0},
		{false, dlmv1connect.ClusterServiceRemoveMemberProcedure, "Bearer client-token-0123456789", connect.CodePermissionDenied},
		{false, "/dlm.v1.LockService/NotYetDecided", "", connect.CodeUnauthenticated},
		{true, dlmv1connect.LockServiceInitProcedure, "", connect.CodeUnauthenticated},
		{true, dlmv1connect.LockServiceInitProcedure, "Bearer read-token-0123456789", connect.CodePermissionDenied},
		{true, dlmv1connect.LockServiceInitProcedure, "Bearer client-token-0123456789", 0},
		{true, dlmv1connect.LockServiceReadFileProcedure, "Bearer read-token-0123456789", 0},
		{true, dlmv1connect.LockServiceCheckTokenProcedure, "Bearer read-token-0123456789", 0},
		{true, dlmv1connect.LockServiceCheckTokenProcedure, "", connect.CodeUnauthenticated},
		{true, dlmv1connect.LockServiceListLocksProcedure, "Bearer read-token-0123456789", 0},
		{true, dlmv1connect.LockServiceListLocksProcedure, "", connect.CodeUnauthenticated},
		{true, dlmv1connect.LockServiceLockHistoryProcedure, "Bearer read-token-0123456789", 0},
		{true, dlmv1connect.LockServiceLockHistoryProcedure, "Bearer nonsense", connect.CodeUnauthenticated},
		{false, dlmv1connect.LockServiceCheckTokenProcedure, "", 0},
		{true, dlmv1connect.ClusterServiceListMembersProcedure, "", connect.CodeUnauthenticated},
		{true, dlmv1connect.ClusterServiceSaveSnapshotProcedure, "Bearer read-token-0123456789", connect.CodePermissionDenied},
		{true, "/grpc.health.v1.Health/Check", "", 0},
		{true, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "", 0},
	} {
		err := auth.NewGuard("admin-token-0123456789", creds, tc.require).Check(tc.procedure, header(tc.auth))
		if (err == nil) != (tc.want == 0) || (err != nil && connect.CodeOf(err) != tc.want) {
			t.Errorf("require %v, %s, %q: %v, want %v", tc.require, tc.procedure, tc.auth, err, tc.want)
		}
	}
	// Without an admin token nobody is admin.
	if err := auth.NewGuard("", nil, false).Check(dlmv1connect.ClusterServiceAddMemberProcedure, header("Bearer ")); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("empty bearer with no admin token: %v", err)
	}
}
