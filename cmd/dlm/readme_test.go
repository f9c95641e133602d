package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readmeBlock returns the lines of the fenced block that follows the
// README's comment "<!-- test: NAME -->".
func readmeBlock(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- test: "+name+" -->")
	if !ok {
		t.Fatalf("README.md has no block marked %q", name)
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatalf("README.md block %q is not a sh block", name)
	}
	body, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("README.md block %q is not closed", name)
	}
	return strings.Split(strings.TrimSpace(body), "\n")
}

// TestREADMESecureWalkthrough runs the README's TLS and token walk-through
// as written, line by line in one shell: certificates and tokens, a server
// over TLS that wants tokens, then the client commands, of which the ones
// the README marks "refused" must fail. Only the server's port differs:
// the test's server listens on a free one.
func TestREADMESecureWalkthrough(t *testing.T) {
	dir := t.TempDir()
	buf := bufBinary(t)
	// dlm and buf on the PATH, as a user who followed the README has them.
	bin := t.TempDir()
	for name, target := range map[string]string{"dlm": dlmBinary, "buf": buf} {
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	env := append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), tokenEnv+"=") // a new user has no token yet
	prelude := "set -e\n"

	serve := readmeBlock(t, "secure-serve")
	last := serve[len(serve)-1]
	if !strings.HasPrefix(last, "dlm serve ") {
		t.Fatalf("the serve block should end with dlm serve, not %q", last)
	}
	script := prelude + strings.Join(serve[:len(serve)-1], "\n") + "\nexec " + last + " --listen 127.0.0.1:0\n"
	srv := exec.Command("sh", "-c", script)
	srv.Dir = dir
	srv.Env = env
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
	})
	url := make(chan string, 1)
	go func() {
		defer close(url)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if _, rest, ok := strings.Cut(sc.Text(), "dlm serving on "); ok {
				u, _, _ := strings.Cut(rest, " ")
				url <- u
			}
		}
	}()
	var base string
	select {
	case base = <-url:
	case <-time.After(60 * time.Second):
	}
	if base == "" {
		t.Fatalf("the README's server did not start:\n%s", logs.String())
	}
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("the README's server serves %s, not https", base)
	}
	if fi, err := os.Stat(filepath.Join(dir, "secure-data", "admin-token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin-token: %v, %v", fi, err)
	}

	// Each client line runs in the same shell (exports carry over); a line
	// the README marks refused must fail, any other must succeed.
	var body strings.Builder
	refused := 0
	for _, line := range readmeBlock(t, "secure-client") {
		line = strings.ReplaceAll(line, "https://127.0.0.1:7070", base)
		cmd, comment, _ := strings.Cut(line, "  #")
		switch {
		case strings.TrimSpace(cmd) == "":
		case strings.Contains(comment, "refused"):
			refused++
			body.WriteString("if " + cmd + "; then echo 'README line succeeded but should be refused: " + strings.ReplaceAll(cmd, "'", "") + "' >&2; exit 1; fi\n")
		default:
			body.WriteString(cmd + "\n")
		}
	}
	if refused < 2 {
		t.Fatalf("the README's client block shows %d refused calls, want an anonymous one and a wrong role", refused)
	}
	client := exec.Command("sh", "-c", prelude+body.String())
	client.Dir = dir
	client.Env = env
	got, err := client.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's client commands failed: %v\n%s\nserver log:\n%s", err, got, logs.String())
	}
	for _, want := range []string{"token=", "hello", "unauthenticated", "permission_denied", "node1", `"role": "leader"`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("the walk-through's output lacks %q:\n%s", want, got)
		}
	}
}
