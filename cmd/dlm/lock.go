package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// The environment of a command run under dlm lock.
const (
	envLockName = "DLM_LOCK_NAME"
	envToken    = "DLM_FENCING_TOKEN"
	envLockMode = "DLM_LOCK_MODE"
)

// exitStatus makes dlm exit with code, printing msg (if any) after "dlm: ".
// dlm lock passes its command's status through with it.
type exitStatus struct {
	code int
	err  error // nil: print nothing
}

func (e *exitStatus) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitStatus) Unwrap() error { return e.err }

// runLock takes a lock, runs a command while it holds it, and releases it
// when the command exits: etcdctl lock and consul lock for dlm.
func runLock(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("lock", "[flags] -- COMMAND [ARGS...]",
		"Takes a lock, runs COMMAND with "+envLockName+" and "+envToken+" in its environment, releases the lock when\n"+
			"COMMAND exits and exits with its status. If the lock is lost while COMMAND runs, COMMAND gets SIGTERM\n"+
			"(SIGKILL after --grace) and dlm lock exits 1 with the reason. SIGINT and SIGTERM are passed on to COMMAND.",
		stderr)
	cf := addClientFlags(fs)
	name := fs.String("name", "", "the lock's name (empty: the default lock, which guards the files)")
	shared := fs.Bool("shared", false, "take the lock in shared mode: other shared holders may run at once")
	wait := fs.Duration("wait", 0, "give up when the lock is not granted within this time (0: wait as long as it takes)")
	lease := fs.Duration("lease", 0, "session lease (0: the server's default): how long a stalled dlm lock keeps the lock")
	delay := fs.Duration("lock-delay", 0, "lock-delay of this grant if its lease runs out (unset: the server's --lock-delay)")
	grace := fs.Duration("grace", 10*time.Second, "how long COMMAND has to exit after SIGTERM before it gets SIGKILL")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fs.Usage()
		return errors.New("lock: no COMMAND given (dlm lock [flags] -- COMMAND [ARGS...])")
	}
	if *wait < 0 || *grace < 0 {
		return errors.New("lock: --wait and --grace cannot be negative")
	}
	var opts []client.LockOption
	if *name != "" {
		opts = append(opts, client.LockName(*name))
	}
	if *shared {
		opts = append(opts, client.Shared())
	}
	if *wait > 0 {
		opts = append(opts, client.Timeout(*wait))
	}
	if flagSet(fs, "lock-delay") {
		opts = append(opts, client.LockDelay(*delay))
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("lock: %w", err)
	}

	// Signals are taken from here on: to end the wait, or to pass on to
	// the command.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	c, err := cf.open(ctx, stderr, client.WithName("dlm lock "+argv[0]), client.WithLease(*lease))
	if err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer closeClient(ctx, c)
	what := lockLabel(*name)
	lk, err := c.Acquire(ctx, opts...)
	switch {
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("lock: interrupted while waiting for %s; %s did not run", what, argv[0])
	case errors.Is(err, client.ErrNotAvailable):
		return fmt.Errorf("lock: %s was not granted within %v%s; %s did not run", what, *wait, holderNote(ctx, c, *name), argv[0])
	case err != nil:
		return fmt.Errorf("lock: acquire %s: %w", what, err)
	}

	cmd := exec.Command(path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.Env = append(os.Environ(),
		envLockName+"="+*name,
		envToken+"="+strconv.FormatUint(lk.Token(), 10),
		envLockMode+"="+modeWord(lk.Mode()))
	if err := cmd.Start(); err != nil {
		_ = lk.Release(context.WithoutCancel(ctx))
		return fmt.Errorf("lock: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// kill sends sig, then SIGKILL if the command is still running after
	// the grace period, and waits for it to exit.
	kill := func(sig os.Signal) error {
		_ = cmd.Process.Signal(sig)
		t := time.NewTimer(*grace)
		defer t.Stop()
		for {
			select {
			case err := <-done:
				return err
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-t.C:
				fmt.Fprintf(stderr, "dlm lock: %s did not exit within %v of %v; killing it\n", argv[0], *grace, sig)
				_ = cmd.Process.Kill()
			}
		}
	}

	var waitErr error
	select {
	case waitErr = <-done:
	case s := <-sigs:
		// Ctrl-C or a stop: the command decides how to end, within the
		// grace period; then the lock is released.
		waitErr = kill(s)
	case <-lk.Lost():
		cause := context.Cause(lk.Context())
		fmt.Fprintf(stderr, "dlm lock: lost %s (token %d): %s; sending %s SIGTERM\n", what, lk.Token(), errLine(cause), argv[0])
		kill(syscall.SIGTERM)
		return &exitStatus{code: 1, err: fmt.Errorf("lock: lost %s (token %d) while %s ran, which was terminated: %s", what, lk.Token(), argv[0], errLine(cause))}
	}
	code := exitCode(waitErr)
	if err := lk.Release(context.WithoutCancel(ctx)); err != nil {
		if errors.Is(err, client.ErrLockExpired) || errors.Is(err, client.ErrSessionExpired) {
			// The command finished, but it may have finished without the
			// lock: say so, and do not report success.
			return &exitStatus{code: max(code, 1), err: fmt.Errorf("lock: %s (token %d) was lost before %s exited: %s", what, lk.Token(), argv[0], errLine(err))}
		}
		fmt.Fprintf(stderr, "dlm lock: release %s: %s (the lease ends it)\n", what, errLine(err))
	}
	if code != 0 {
		return &exitStatus{code: code}
	}
	return nil
}

// exitCode is a finished command's exit status, as a shell gives it: 128+N
// when signal N ended it.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 1
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

func lockLabel(name string) string {
	if name == "" {
		return "the default lock"
	}
	return strconv.Quote(name)
}

func modeWord(m dlmv1.LockMode) string {
	if m == dlmv1.LockMode_LOCK_MODE_SHARED {
		return "shared"
	}
	return "exclusive"
}

// holderNote names who holds the lock name, as " (held by …)", or "" when
// the service does not say in time.
func holderNote(ctx context.Context, c *client.Client, name string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.StatusPage(ctx, &dlmv1.StatusRequest{Lock: lockField(name)})
	if err != nil {
		return ""
	}
	var who []string
	for _, h := range holdersOf(st.GetLock()) {
		who = append(who, holderWord(h))
	}
	if len(who) == 0 {
		return ""
	}
	return " (held by " + strings.Join(who, ", ") + ")"
}

// lockField is a lock name as the API carries it: unset for the default
// lock.
func lockField(name string) *string {
	if name == "" {
		return nil
	}
	return &name
}

// holdersOf lists a lock's holders, from a server that lists them all or,
// from an older one, the one it names.
func holdersOf(l *dlmv1.LockStatus) []*dlmv1.LockHolder {
	if hs := l.GetHolders(); len(hs) > 0 {
		return hs
	}
	if l.GetHolder() == 0 {
		return nil
	}
	return []*dlmv1.LockHolder{{ClientId: l.GetHolder(), Token: l.GetToken(), Name: l.GetHolderName(),
		Mode: dlmv1.LockMode_LOCK_MODE_EXCLUSIVE, LeaseLeftMs: l.GetLeaseLeftMs()}}
}

func holderWord(h *dlmv1.LockHolder) string {
	if h.GetName() != "" {
		return fmt.Sprintf("client %d (%s)", h.GetClientId(), printable(h.GetName()))
	}
	return fmt.Sprintf("client %d", h.GetClientId())
}
