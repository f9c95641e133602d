package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
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

// Closing the shell's terminal (SIGHUP) or stopping it (SIGTERM) aborts its
// critical section and closes its session: another client gets the lock at
// once, not when the shell's 60 s lease runs out.
func TestShellSignalFreesTheLock(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			srv := servertest.Start(t, nil)
			cmd := exec.Command(dlmBinary, "shell", "--server", srv.URL, "--lease", "60s")
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			out := lines(stdout)
			await := func(want string) {
				t.Helper()
				deadline := time.After(20 * time.Second)
				for {
					select {
					case line := <-out:
						if strings.Contains(line, want) {
							return
						}
					case <-deadline:
						t.Fatalf("the shell did not print %q", want)
					}
				}
			}
			fmt.Fprintln(stdin, "acquire")
			await("you hold the lock")
			fmt.Fprintln(stdin, "append file_3 unsaved")
			await("staged 7 bytes")
			// stdin stays open: the signal alone must end the shell.
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			await("aborting the critical section")
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				t.Fatal("the shell did not exit")
			}

			other, err := client.New(t.Context(), []string{srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close(context.Background())
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			lk, err := other.Acquire(ctx)
			if err != nil {
				t.Fatalf("another client could not take the lock within 10s of the shell's exit: %v", err)
			}
			defer lk.Release(context.Background())
			st, err := other.Status(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(st.GetSessions()); n != 1 {
				t.Errorf("%d sessions open, want only the new client's: the shell's must be closed", n)
			}
			if got := readFile(t, srv.URL, "file_3"); got != "" {
				t.Errorf("file_3 = %q, want nothing: the section was aborted", got)
			}
		})
	}
}

// A lost lock is reported once, and the hint is a shell command.
func TestShellLostLockSaidOnce(t *testing.T) {
	srv := servertest.Start(t, nil)
	cmd := exec.Command(dlmBinary, "shell", "--server", srv.URL, "--lease", "300ms")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out, errw strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Stop the shell, so its keepalives stop and its lease runs out, then
	// let it go on.
	fmt.Fprintln(stdin, "acquire")
	pollUntil(t, 20*time.Second, "the shell holds the lock", func() (bool, string) {
		st, err := client.NewReader([]string{srv.URL})
		if err != nil {
			return false, err.Error()
		}
		s, err := st.Status(t.Context(), true)
		if err != nil {
			return false, err.Error()
		}
		return s.GetLock().GetHolder() != 0, "no holder"
	})
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 20*time.Second, "the lease ran out", func() (bool, string) {
		r, _ := client.NewReader([]string{srv.URL})
		s, err := r.Status(t.Context(), true)
		if err != nil {
			return false, err.Error()
		}
		return s.GetLock().GetHolder() == 0 && len(s.GetSessions()) == 0, "still held"
	})
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "append file_2 late")
	fmt.Fprintln(stdin, "release")
	fmt.Fprintln(stdin, "acquire")
	fmt.Fprintln(stdin, "release")
	stdin.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("the shell did not end")
	}
	all := out.String() + errw.String()
	t.Logf("the shell said:\n%s", all)
	if n := strings.Count(all, "was lost"); n != 1 {
		t.Errorf("the loss is reported %d times, want once:\n%s", n, all)
	}
	if !strings.Contains(all, "Type acquire to take it again") || strings.Contains(all, "open a new one") {
		t.Errorf("the hint does not name the shell command:\n%s", all)
	}
	if strings.Count(out.String(), "you hold the lock") != 2 || !strings.Contains(out.String(), "released token") {
		t.Errorf("acquire after the loss did not work:\n%s\n%s", out.String(), errw.String())
	}
	if strings.Contains(all, "dlm: ") {
		t.Errorf("a message still carries a dlm: head:\n%s", all)
	}
}

// An acquire that runs out of time says so in one line, naming the holder.
func TestShellAcquireTimeoutNamesTheHolder(t *testing.T) {
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
	defer lk.Release(context.Background())
	_, errw, err := cliRun(t, "acquire 300ms\nquit\n", "shell", "--server", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("error: the lock was not granted within 300ms (held by client %d (holder)); you left the queue\n", holder.ClientID())
	if errw != want {
		t.Errorf("stderr =\n%q, want\n%q", errw, want)
	}
}
