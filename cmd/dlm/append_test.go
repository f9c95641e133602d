package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/server/servertest"
)

// cliRun runs one dlm command in-process, as main would, with stdin as its
// input, and returns what it printed.
func cliRun(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out, errw bytes.Buffer
	err = run(ctx, args, strings.NewReader(stdin), &out, &errw)
	return out.String(), errw.String(), err
}

// cliMust runs a command that must succeed.
func cliMust(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errw, err := cliRun(t, stdin, args...)
	if err != nil {
		t.Fatalf("dlm %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errw)
	}
	return out
}

func TestAppendThenCat(t *testing.T) {
	srv := servertest.Start(t, nil)
	out := cliMust(t, "", "append", "--server", srv.URL, "--file", "file_3", "hello", " world")
	if !strings.HasPrefix(out, "token=") || !strings.Contains(out, "file=file_3 appends=2 bytes=11") {
		t.Errorf("append printed %q", out)
	}
	cliMust(t, "", "append", "--server", srv.URL, "--grpc", "--file", "file_3", "!")
	if got := cliMust(t, "", "cat", "--server", srv.URL, "file_3"); got != "hello world!" {
		t.Errorf("cat file_3 = %q, want %q", got, "hello world!")
	}
	if got := cliMust(t, "", "cat", "--server", srv.URL, "file_4"); got != "" {
		t.Errorf("cat file_4 = %q, want nothing", got)
	}
}

func TestAppendBadInputWritesNothing(t *testing.T) {
	srv := servertest.Start(t, nil)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no file", []string{"append", "--server", srv.URL, "x"}, "--file is required"},
		{"no text", []string{"append", "--server", srv.URL, "--file", "file_1"}, "no TEXT given"},
		{"unknown file", []string{"append", "--server", srv.URL, "--file", "file_100", "x"}, "file not found"},
		{"path", []string{"append", "--server", srv.URL, "--file", "../x", "x"}, "invalid file name"},
		{"empty text", []string{"append", "--server", srv.URL, "--file", "file_1", "a", ""}, "empty append"},
		{"no server", []string{"append", "--server", " , ", "--file", "file_1", "x"}, "no server given"},
		{"cat unknown", []string{"cat", "--server", srv.URL, "file_100"}, "file not found"},
		{"cat two names", []string{"cat", "--server", srv.URL, "file_1", "file_2"}, "exactly one file name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cliRun(t, "", tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	// The section with the empty text was aborted: its first text is not
	// in the file either.
	if got := cliMust(t, "", "cat", "--server", srv.URL, "file_1"); got != "" {
		t.Errorf("file_1 = %q after failed appends, want nothing", got)
	}
}

func TestAppendGivesUpWaiting(t *testing.T) {
	srv := servertest.Start(t, nil)
	holder, err := client.New(t.Context(), []string{srv.URL}, client.WithName("holder"))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	lk, err := holder.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = cliRun(t, "", "append", "--server", srv.URL, "--wait", "300ms", "--file", "file_9", "late")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append with the lock held = %v, want a deadline error", err)
	}
	want := fmt.Sprintf("append: the lock was not granted within 300ms (held by client %d (holder)); nothing was written", holder.ClientID())
	if got := errLine(err); got != want {
		t.Errorf("the error reads\n%q, want\n%q", got, want)
	}
	st, err := holder.Status(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if q := st.GetLock().GetQueue(); len(q) != 0 {
		t.Errorf("queue %v after the append gave up, want it empty", q)
	}
	if err := lk.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := cliMust(t, "", "cat", "--server", srv.URL, "file_9"); got != "" {
		t.Errorf("file_9 = %q, want nothing", got)
	}
}
