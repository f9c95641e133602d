package main

import (
	"strings"
	"testing"

	"github.com/dlm/dlm/server/servertest"
)

func TestShellSession(t *testing.T) {
	srv := servertest.Start(t, nil)
	script := strings.Join([]string{
		"help",
		"append", // no lock yet
		"acquire",
		"acquire", // already held
		"append",  // asks for both
		"file_4",
		"hello",
		"append file_4  world", // inline, the text keeps its leading space
		"append file_100 x",
		"bogus",
		"",
		"cat file_4", // not committed yet
		"release",
		"release", // nothing held
		"cat file_4",
		"cat",
		"status",
		"quit",
	}, "\n") + "\n"
	out, errw, err := cliRun(t, script, "shell", "--server", srv.URL)
	if err != nil {
		t.Fatalf("shell: %v\n%s\n%s", err, out, errw)
	}
	for _, want := range []string{
		"connected as client",
		"acquire [WAIT]",
		"you hold the lock, token",
		"file name: text: staged 5 bytes for file_4",
		"staged 6 bytes for file_4",
		"(file_4 is empty)",
		"released token",
		"hello world\n",
		"holder    none",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	for _, want := range []string{
		"you do not hold the lock; type acquire first",
		"you already hold the lock",
		"file not found",
		`unknown command "bogus"`,
		"usage: cat FILE",
		"error: you do not hold the lock\n",
	} {
		if !strings.Contains(errw, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errw)
		}
	}
}

func TestShellEndOfInputAbortsTheHeldLock(t *testing.T) {
	srv := servertest.Start(t, nil)
	out := cliMust(t, "try\nappend file_6 x\n", "shell", "--server", srv.URL)
	if !strings.Contains(out, "aborting the critical section") {
		t.Errorf("shell did not say it aborts:\n%s", out)
	}
	if got := cliMust(t, "", "cat", "--server", srv.URL, "file_6"); got != "" {
		t.Errorf("file_6 = %q, want nothing: only release commits", got)
	}
}

func TestShellAbortAndBadWait(t *testing.T) {
	srv := servertest.Start(t, nil)
	out, errw, err := cliRun(t, "acquire soon\nacquire 5s\nappend file_7 gone\nabort\ncat file_7\n", "shell", "--server", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errw, `not "soon"`) {
		t.Errorf("stderr lacks the bad wait:\n%s", errw)
	}
	if !strings.Contains(out, "aborted token") || !strings.Contains(out, "(file_7 is empty)") {
		t.Errorf("stdout:\n%s", out)
	}
}
