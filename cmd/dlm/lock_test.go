package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

// lockProc is one `dlm lock` process.
type lockProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    <-chan string
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startLock runs dlm lock with args; its stdout comes line by line.
func startLock(t *testing.T, args ...string) *lockProc {
	t.Helper()
	p := &lockProc{t: t, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(dlmBinary, append([]string{"lock"}, args...)...)
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.out = lines(stdout)
	go func() {
		// Drain stdout first: Wait closes the pipe.
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// A process stopped by a failed test must not outlive it.
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// expect waits for a line of stdout containing want.
func (p *lockProc) expect(want string, limit time.Duration) {
	p.t.Helper()
	deadline := time.After(limit)
	for {
		select {
		case line, ok := <-p.out:
			if !ok {
				p.t.Fatalf("dlm lock ended its output before printing %q; stderr:\n%s", want, p.stderr.String())
			}
			if strings.Contains(line, want) {
				return
			}
		case <-deadline:
			p.t.Fatalf("dlm lock did not print %q within %v; stderr:\n%s", want, limit, p.stderr.String())
		}
	}
}

// exit waits for the process and returns its exit code.
func (p *lockProc) exit(limit time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		p.t.Fatalf("dlm lock did not exit within %v; stderr:\n%s", limit, p.stderr.String())
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	p.t.Fatalf("dlm lock: %v", p.err)
	return -1
}

// trapping is a command that prints "started" and then waits, ending
// with status code on the signal sig (trapped by the shell).
func trapping(sig string, code int) []string {
	return []string{"sh", "-c", `trap 'echo got ` + sig + `; exit ` + strconv.Itoa(code) + `' ` + sig + `
echo "started $DLM_LOCK_NAME $DLM_FENCING_TOKEN $DLM_LOCK_MODE"
i=0
while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
exit 99`}
}

func newTestClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(t.Context(), []string{url}, append([]client.Option{client.WithToken(servertest.AdminToken)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// The command runs with the lock's name, token and mode in its
// environment, and dlm lock exits with its status, releasing the lock.
func TestLockPassesEnvAndExitStatus(t *testing.T) {
	srv := servertest.Start(t, nil)
	for _, tc := range []struct {
		args []string
		name string
		mode string
	}{
		{nil, "", "exclusive"},
		{[]string{"--name", "jobs/nightly"}, "jobs/nightly", "exclusive"},
		{[]string{"--name", "reports", "--shared"}, "reports", "shared"},
	} {
		args := append(append([]string{"--server", srv.URL}, tc.args...), "--",
			"sh", "-c", `echo "env=[$DLM_LOCK_NAME] token=$DLM_FENCING_TOKEN mode=$DLM_LOCK_MODE"; exit 3`)
		p := startLock(t, args...)
		p.expect("env=["+tc.name+"] token=", 20*time.Second)
		if code := p.exit(20 * time.Second); code != 3 {
			t.Fatalf("dlm lock %v exited %d, want the command's 3; stderr:\n%s", tc.args, code, p.stderr.String())
		}
	}
	// Every lock was released: a try gets each at once.
	c := newTestClient(t, srv.URL)
	for _, opts := range [][]client.LockOption{nil, {client.LockName("jobs/nightly")}, {client.LockName("reports")}} {
		lk, err := c.TryAcquire(t.Context(), opts...)
		if err != nil {
			t.Fatalf("after dlm lock exited, TryAcquire %v: %v", opts, err)
		}
		if err := lk.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// A command that succeeds makes dlm lock succeed.
	if out, err := exec.Command(dlmBinary, "lock", "--server", srv.URL, "--", "true").CombinedOutput(); err != nil {
		t.Fatalf("dlm lock -- true: %v\n%s", err, out)
	}
}

// With --wait, dlm lock gives up, says so, and never runs the command.
func TestLockWaitTimesOut(t *testing.T) {
	srv := servertest.Start(t, nil)
	holder := newTestClient(t, srv.URL, client.WithName("holder"))
	lk, err := holder.Acquire(t.Context(), client.LockName("busy"))
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	p := startLock(t, "--server", srv.URL, "--name", "busy", "--wait", "300ms", "--", "touch", marker)
	if code := p.exit(20 * time.Second); code == 0 {
		t.Fatal("dlm lock --wait succeeded while the lock was held")
	}
	if msg := p.stderr.String(); !strings.Contains(msg, `"busy" was not granted within 300ms`) || !strings.Contains(msg, "holder") {
		t.Errorf("stderr = %q, want it to say the lock was not granted in time and by whom it is held", msg)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran although the lock was not granted")
	}
	// dlm lock left the queue: the holder's release leaves the lock free.
	if err := lk.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	other := newTestClient(t, srv.URL)
	lk2, err := other.TryAcquire(t.Context(), client.LockName("busy"))
	if err != nil {
		t.Fatalf("after the wait ran out, the lock is not free: %v", err)
	}
	_ = lk2.Release(t.Context())
}

// Ctrl-C (SIGINT) goes to the command; when it exits, the lock is released
// at once (not at the lease's end), so a waiter gets it.
func TestLockInterruptForwardsAndReleases(t *testing.T) {
	srv := servertest.Start(t, nil)
	p := startLock(t, append([]string{"--server", srv.URL, "--name", "ctrl-c", "--lease", "30s", "--"}, trapping("INT", 130)...)...)
	p.expect("started ctrl-c", 20*time.Second)
	waiter := newTestClient(t, srv.URL)
	granted := make(chan error, 1)
	go func() {
		lk, err := waiter.Acquire(t.Context(), client.LockName("ctrl-c"))
		if err == nil {
			err = lk.Release(context.Background())
		}
		granted <- err
	}()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	p.expect("got INT", 10*time.Second)
	if code := p.exit(20 * time.Second); code != 130 {
		t.Fatalf("dlm lock exited %d, want the command's 130; stderr:\n%s", code, p.stderr.String())
	}
	// Far sooner than the 30s lease: the lock was released.
	select {
	case err := <-granted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was not granted the lock after dlm lock was interrupted")
	}
}

// A dlm lock that stalls past its lease (SIGSTOP) loses the lock to a
// waiter; resumed, it notices, sends its command SIGTERM, and exits 1 with
// the reason.
func TestLockLostTerminatesCommand(t *testing.T) {
	srv := servertest.Start(t, &node.Config{MinLease: 100 * time.Millisecond})
	p := startLock(t, append([]string{"--server", srv.URL, "--name", "lease", "--lease", "1s", "--grace", "5s", "--"}, trapping("TERM", 0)...)...)
	p.expect("started lease", 20*time.Second)
	waiter := newTestClient(t, srv.URL)
	granted := make(chan *client.Lock, 1)
	go func() {
		lk, err := waiter.Acquire(t.Context(), client.LockName("lease"))
		if err != nil {
			t.Error(err)
		}
		granted <- lk
	}()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var lk *client.Lock
	select {
	case lk = <-granted:
	case <-time.After(20 * time.Second):
		t.Fatal("the waiter was not granted the lock of the stopped dlm lock")
	}
	if lk == nil {
		t.FailNow()
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	p.expect("got TERM", 20*time.Second)
	if code := p.exit(20 * time.Second); code != 1 {
		t.Fatalf("dlm lock exited %d, want 1; stderr:\n%s", code, p.stderr.String())
	}
	if msg := p.stderr.String(); !strings.Contains(msg, `lost "lease"`) {
		t.Errorf("stderr = %q, want it to say the lock was lost", msg)
	}
	_ = lk.Release(t.Context())
}

// Shared holders run together: each command waits to see the other's
// marker, which it could not if dlm lock ran them one after the other.
func TestLockSharedRunTogether(t *testing.T) {
	srv := servertest.Start(t, nil)
	dir := t.TempDir()
	script := `touch "$DIR/$1"
i=0
while [ ! -e "$DIR/$2" ]; do
  i=$((i+1)); [ $i -gt 400 ] && exit 1
  sleep 0.05
done
echo "saw $2"`
	t.Setenv("DIR", dir)
	a := startLock(t, "--server", srv.URL, "--name", "readers", "--shared", "--", "sh", "-c", script, "sh", "a", "b")
	b := startLock(t, "--server", srv.URL, "--name", "readers", "--shared", "--", "sh", "-c", script, "sh", "b", "a")
	a.expect("saw b", 30*time.Second)
	b.expect("saw a", 30*time.Second)
	for _, p := range []*lockProc{a, b} {
		if code := p.exit(20 * time.Second); code != 0 {
			t.Fatalf("shared dlm lock exited %d; stderr:\n%s", code, p.stderr.String())
		}
	}
}

func TestLockBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lock"}, "no COMMAND given"},
		{[]string{"lock", "--wait", "-1s", "--", "true"}, "cannot be negative"},
		{[]string{"lock", "--", "/no/such/command"}, "no such file"},
	} {
		_, _, err := cliRun(t, "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("dlm %v = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
