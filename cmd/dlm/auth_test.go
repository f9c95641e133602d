package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/server/auth"
)

// The first start writes a random admin token, 0600, and says where (never
// what) it is; dlm members and dlm snapshot save in the folder that holds
// dlm-data need no flag, and from elsewhere they are refused with a message
// that says where the token is.
func TestFirstStartWritesAdminToken(t *testing.T) {
	t.Setenv(tokenEnv, "")
	root := t.TempDir()
	data := filepath.Join(root, "dlm-data")
	srv := startServer(t, "127.0.0.1:0", data)
	path := filepath.Join(data, auth.AdminTokenFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin-token: %v %v, want mode 0600", fi, err)
	}
	tok, err := auth.ReadTokenFile(path)
	if err != nil || len(tok) != 64 {
		t.Fatalf("admin-token holds %d characters (%v), want 64 hex", len(tok), err)
	}
	logs := srv.Log()
	if !strings.Contains(string(logs), "admin token in "+path) || strings.Contains(string(logs), tok) {
		t.Fatalf("serve's output should name the token's file, never the token:\n%s", logs)
	}

	t.Chdir(t.TempDir())
	_, _, err = cliRun(t, "", "members", "add", "--server", srv.URL(), "--id", "evil", "--raft", "192.0.2.1:17000")
	if msg := errLine(withTokenHint(err)); err == nil || !strings.Contains(msg, "unauthenticated") || !strings.Contains(msg, tokenEnv) || !strings.Contains(msg, "admin-token") {
		t.Fatalf("members add without a token: %q, want unauthenticated and where the token is", msg)
	}

	t.Chdir(root)
	cliMust(t, "", "members", "add", "--server", srv.URL(), "--id", "n2", "--raft", "192.0.2.1:17000", "--voter=false")
	if out := cliMust(t, "", "members", "list", "--server", srv.URL()); !strings.Contains(out, "192.0.2.1:17000") {
		t.Fatalf("members list after add:\n%s", out)
	}
	if _, _, err := cliRun(t, "", "members", "remove", "--server", srv.URL(), "--id", "ghost"); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("members remove ghost: %v, want not_found", err)
	}
	cliMust(t, "", "members", "remove", "--server", srv.URL(), "--id", "n2")
	cliMust(t, "", "snapshot", "save", filepath.Join(root, "backup.snap"), "--server", srv.URL())
}

// A node that joins a cluster needs the cluster's admin token: without one
// it refuses to start and says how to give it; with a wrong one the leader
// refuses it (Unauthenticated) and it stays out; with the right one (here
// in DLM_TOKEN) it joins as a voter.
func TestJoinNeedsTheClusterToken(t *testing.T) {
	t.Setenv(tokenEnv, "")
	leader := startServer(t, "127.0.0.1:0", t.TempDir(), "--raft", "127.0.0.1:0")
	tok, err := auth.ReadTokenFile(filepath.Join(leader.Data, auth.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}

	joinArgs := func(data string) []string {
		return []string{"serve", "--id", "n2", "--listen", "127.0.0.1:0", "--raft", "127.0.0.1:0", "--join", leader.URL(), "--data", data}
	}
	_, _, err = cliRun(t, "", joinArgs(t.TempDir())...)
	if err == nil || !strings.Contains(err.Error(), tokenEnv) || !strings.Contains(err.Error(), "--token-file") {
		t.Fatalf("joining without a token: %v, want a refusal naming %s and --token-file", err, tokenEnv)
	}

	logPath := filepath.Join(t.TempDir(), "wrong.log")
	logs, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	wrong := exec.Command(dlmBinary, joinArgs(t.TempDir())...)
	wrong.Env = append(os.Environ(), tokenEnv+"=wrong-token-0123456789abcdef")
	wrong.Stdout, wrong.Stderr = logs, logs
	if err := wrong.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wrong.Process.Kill(); wrong.Wait() })
	pollUntil(t, 30*time.Second, "the wrong token refused", func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "unauthenticated"), string(b)
	})
	if out := cliMust(t, "", "members", "list", "--server", leader.URL()); strings.Contains(out, "n2") {
		t.Fatalf("a node with a wrong token joined:\n%s", out)
	}
	wrong.Process.Kill()

	t.Setenv(tokenEnv, tok)
	second := startServer(t, "127.0.0.1:0", t.TempDir(), "--id", "n2", "--raft", "127.0.0.1:0", "--join", leader.URL())
	pollUntil(t, 30*time.Second, "n2 a voter with its URL", func() (bool, string) {
		out, _, err := cliRun(t, "", "members", "list", "--server", leader.URL())
		if err != nil {
			return false, err.Error()
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "n2 ") && strings.Contains(line, "voter") && strings.Contains(line, second.URL()) {
				return true, out
			}
		}
		return false, out
	})
}

// dev-cluster gives its nodes one admin token, kept in each data folder:
// the nodes announce their URLs with it, and dlm members reads it from
// there.
func TestDevClusterSharesOneAdminToken(t *testing.T) {
	t.Setenv(tokenEnv, "")
	data := t.TempDir()
	dc := startDevCluster(t, "--data", data, "--nodes", "3")
	// Each node writes it as it starts.
	pollUntil(t, 30*time.Second, "one admin token in every data folder", func() (bool, string) {
		var toks []string
		for _, n := range []string{"n1", "n2", "n3"} {
			tok, err := auth.ReadTokenFile(filepath.Join(data, n, auth.AdminTokenFile))
			if err != nil {
				return false, err.Error()
			}
			toks = append(toks, tok)
		}
		return toks[0] == toks[1] && toks[1] == toks[2], "the tokens differ"
	})
	servers := strings.Join(dc.urls, ",")
	pollUntil(t, 30*time.Second, "every member's URL announced", func() (bool, string) {
		out, _, err := cliRun(t, "", "members", "list", "--server", servers)
		if err != nil {
			return false, err.Error()
		}
		for _, u := range dc.urls {
			if !strings.Contains(out, u) {
				return false, out
			}
		}
		return true, out
	})
	if _, _, err := cliRun(t, "", "members", "remove", "--id", "ghost", "--server", servers, "--data", filepath.Join(data, "n2")); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("members remove ghost with n2's token: %v, want not_found (the token accepted)", err)
	}
}

// With --auth-tokens, the lock API needs a client token and reads a read
// token, through every command; anonymous calls are Unauthenticated and a
// read token's append PermissionDenied, each with where the token comes
// from.
func TestAuthTokensFile(t *testing.T) {
	t.Setenv(tokenEnv, "")
	t.Chdir(t.TempDir()) // no ./dlm-data here
	const (
		readTok   = "read-token-0123456789abcdef"
		clientTok = "client-token-0123456789abcdef"
	)
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("# roles\nread "+readTok+"\nclient "+clientTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The server's admin token, with which the harness waits for Status.
	t.Setenv(tokenEnv, "admin-token-0123456789abcdef")
	srv := startServer(t, "127.0.0.1:0", t.TempDir(), "--auth-tokens", file)
	t.Setenv(tokenEnv, "")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"append", "--file", "file_1", "x"}, "unauthenticated"},
		{[]string{"append", "--grpc", "--file", "file_1", "x"}, "unauthenticated"},
		{[]string{"append", "--token", readTok, "--file", "file_1", "x"}, "permission_denied"},
		{[]string{"status"}, "unauthenticated"},
		{[]string{"cat", "file_1"}, "unauthenticated"},
	} {
		args := append([]string{tc.args[0], "--server", srv.URL(), "--retry", "2s"}, tc.args[1:]...)
		_, _, err := cliRun(t, "", args...)
		if msg := errLine(withTokenHint(err)); err == nil || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "--token") {
			t.Errorf("dlm %s: %q, want %s and where the token comes from", strings.Join(tc.args, " "), msg, tc.want)
		}
	}
	cliMust(t, "", "append", "--server", srv.URL(), "--token", clientTok, "--file", "file_1", "ok")
	t.Setenv(tokenEnv, clientTok)
	cliMust(t, "", "append", "--server", srv.URL(), "--grpc", "--file", "file_1", "!")
	t.Setenv(tokenEnv, readTok)
	if got := cliMust(t, "", "cat", "--server", srv.URL(), "file_1"); got != "ok!" {
		t.Fatalf("cat file_1 = %q", got)
	}
	cliMust(t, "", "status", "--server", srv.URL())
}
