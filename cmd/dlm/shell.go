package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

const shellHelp = `commands:
  acquire [WAIT]          take the lock, waiting in the queue (at most WAIT, e.g. 10s)
  try                     take the lock only if it is free
  append [FILE [TEXT]]    stage TEXT for FILE (asks for what is missing)
  release                 commit the staged appends and release the lock
  abort                   discard the staged appends and release the lock
  cat FILE                print a file
  status [--lock NAME]    show the node, the lock, the queue and the files
  locks                   list the live locks
  help                    show this list
  quit                    leave (held locks are aborted first)
files are file_0 to file_99; appends reach the file only at release.
acquire and try take --lock NAME (a named lock) and --shared (shared mode);
release and abort take --lock NAME. Only the default lock held exclusively
can append. The session may hold several locks at once.
`

// runShell is an interactive prompt for one session. It reads commands line
// by line, so it works as well with a terminal as with piped input.
func runShell(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("shell", "[flags]", "An interactive prompt: acquire, append, release, abort, cat, status.", stderr)
	cf := addClientFlags(fs)
	lease := fs.Duration("lease", 0, "session lease (0: the server's default)")
	name := fs.String("name", "dlm shell", "session label shown in status")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("shell: unexpected argument %q", fs.Arg(0))
	}
	hc, err := cf.tls.httpClient()
	if err != nil {
		return fmt.Errorf("shell: %w", err)
	}
	c, err := cf.open(ctx, stderr, client.WithName(*name), client.WithLease(*lease))
	if err != nil {
		return fmt.Errorf("shell: %w", err)
	}
	copts, err := cf.interceptors()
	if err != nil {
		return fmt.Errorf("shell: %w", err)
	}
	sh := &shell{ctx: ctx, c: c, lines: readLines(stdin), out: stdout, errw: stderr, copts: copts, hc: hc, held: make(map[string]*client.Lock)}
	fmt.Fprintf(stdout, "connected as client %d; type help for the commands\n", c.ClientID())
	sh.loop()
	sh.abandon()
	if err := closeClient(ctx, c); err != nil {
		fmt.Fprintf(stderr, "error: closing the session: %v\n", err)
	}
	return nil
}

type shell struct {
	ctx   context.Context
	c     *client.Client
	hc    *http.Client // asks the other members about themselves
	lines <-chan string
	out   io.Writer
	errw  io.Writer
	// held are the locks the shell holds, by name ("" the default lock).
	held map[string]*client.Lock
	// copts send the token on the shell's own status probes.
	copts []connect.ClientOption
}

// readLines feeds stdin's lines to a channel, so that waiting for input
// can be interrupted by a signal.
func readLines(r io.Reader) <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			ch <- strings.TrimRight(sc.Text(), "\r")
		}
	}()
	return ch
}

// ask prompts and returns the next line; false at the end of input or on
// interrupt.
func (sh *shell) ask(prompt string) (string, bool) {
	fmt.Fprint(sh.out, prompt)
	select {
	case line, ok := <-sh.lines:
		if !ok {
			fmt.Fprintln(sh.out)
		}
		return line, ok
	case <-sh.ctx.Done():
		fmt.Fprintln(sh.out)
		return "", false
	}
}

func (sh *shell) fail(format string, args ...any) {
	fmt.Fprintf(sh.errw, "error: "+format+"\n", args...)
}

// failErr reports an error from the service in one line.
func (sh *shell) failErr(err error) { sh.fail("%s", errLine(err)) }

// lockGone reports whether err says the held lock is gone for good.
func lockGone(err error) bool {
	return errors.Is(err, client.ErrLockExpired) || errors.Is(err, client.ErrSessionExpired)
}

func (sh *shell) loop() {
	for {
		sh.noticeLoss()
		line, ok := sh.ask("dlm> ")
		if !ok {
			return
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch cmd := strings.ToLower(fields[0]); cmd {
		case "acquire", "lock":
			sh.acquire(fields[1:])
		case "try":
			sh.try(fields[1:])
		case "append":
			sh.append(line)
		case "release", "commit":
			sh.release(fields[1:], false)
		case "abort":
			sh.release(fields[1:], true)
		case "cat":
			sh.cat(fields[1:])
		case "status":
			sh.status(fields[1:])
		case "locks":
			sh.locks()
		case "help", "?":
			fmt.Fprint(sh.out, shellHelp)
		case "quit", "exit", "q":
			return
		default:
			sh.fail("unknown command %q; type help for the list", fields[0])
		}
	}
}

// noticeLoss tells the user, between commands, that a lock was lost.
func (sh *shell) noticeLoss() {
	for _, lk := range sh.held {
		select {
		case <-lk.Lost():
			sh.lost(lk, context.Cause(lk.Context()))
		default:
		}
	}
}

// lost says, once, that a held lock is gone, and forgets it. Acquire
// opens a new session if the old one expired, so acquire is all it takes to
// carry on.
func (sh *shell) lost(lk *client.Lock, cause error) {
	why := errLine(cause)
	switch {
	case errors.Is(cause, client.ErrSessionExpired):
		why = "the session expired"
	case errors.Is(cause, client.ErrLockExpired):
		why = "the lease ran out or the lock was revoked"
	}
	if lk.Name() == "" {
		fmt.Fprintf(sh.out, "the lock (token %d) was lost (%s); its staged appends were discarded, nothing was written. Type acquire to take it again.\n", lk.Token(), why)
	} else {
		fmt.Fprintf(sh.out, "lock %q (token %d) was lost (%s). Type acquire --lock %s to take it again.\n", lk.Name(), lk.Token(), why, lk.Name())
	}
	delete(sh.held, lk.Name())
}

// lockArgs reads --lock NAME (or --lock=NAME) and --shared from args; what
// is left is returned.
func lockArgs(args []string) (name string, shared bool, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--shared" || a == "-shared":
			shared = true
		case a == "--lock" || a == "-lock":
			if i+1 == len(args) {
				return "", false, nil, errors.New("--lock needs a NAME")
			}
			i++
			name = args[i]
		case strings.HasPrefix(a, "--lock="):
			name = strings.TrimPrefix(a, "--lock=")
		case strings.HasPrefix(a, "-"):
			return "", false, nil, fmt.Errorf("unknown flag %s (--lock NAME, --shared)", a)
		default:
			rest = append(rest, a)
		}
	}
	return name, shared, rest, nil
}

func lockOptions(name string, shared bool) []client.LockOption {
	var opts []client.LockOption
	if name != "" {
		opts = append(opts, client.LockName(name))
	}
	if shared {
		opts = append(opts, client.Shared())
	}
	return opts
}

// holding says which lock the shell took, the default one as it always
// has.
func (sh *shell) holding(lk *client.Lock) {
	sh.held[lk.Name()] = lk
	if lk.Name() == "" && lk.Mode() != dlmv1.LockMode_LOCK_MODE_SHARED {
		fmt.Fprintf(sh.out, "you hold the lock, token %d\n", lk.Token())
		return
	}
	fmt.Fprintf(sh.out, "you hold %s (%s), token %d\n", lockLabel(lk.Name()), modeWord(lk.Mode()), lk.Token())
}

func (sh *shell) acquire(args []string) {
	name, shared, args, err := lockArgs(args)
	if err != nil {
		sh.fail("acquire: %v", err)
		return
	}
	if lk := sh.held[name]; lk != nil {
		if name == "" {
			sh.fail("you already hold the lock (token %d); release or abort it first", lk.Token())
		} else {
			sh.fail("you already hold %s (token %d); release it first", lockLabel(name), lk.Token())
		}
		return
	}
	ctx := sh.ctx
	var wait time.Duration
	if len(args) > 0 {
		var err error
		wait, err = time.ParseDuration(args[0])
		if err != nil || wait <= 0 || len(args) > 1 {
			sh.fail("acquire takes an optional wait such as 10s, not %q", strings.Join(args, " "))
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	if name == "" {
		fmt.Fprintln(sh.out, "waiting for the lock...")
	} else {
		fmt.Fprintf(sh.out, "waiting for %s...\n", lockLabel(name))
	}
	lk, err := sh.c.Acquire(ctx, lockOptions(name, shared)...)
	if errors.Is(err, context.DeadlineExceeded) && sh.ctx.Err() == nil {
		held := ""
		if name == "" {
			if h := holderOf(sh.ctx, sh.c); h != "" {
				held = " (held by " + h + ")"
			}
			sh.fail("the lock was not granted within %s%s; you left the queue", wait, held)
			return
		}
		sh.fail("%s was not granted within %s%s; you left the queue", lockLabel(name), wait, holderNote(sh.ctx, sh.c, name))
		return
	}
	if err != nil {
		sh.failErr(err)
		return
	}
	sh.holding(lk)
}

func (sh *shell) try(args []string) {
	name, shared, rest, err := lockArgs(args)
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("unexpected %q", strings.Join(rest, " "))
	}
	if err != nil {
		sh.fail("try: %v", err)
		return
	}
	if lk := sh.held[name]; lk != nil {
		if name == "" {
			sh.fail("you already hold the lock (token %d)", lk.Token())
		} else {
			sh.fail("you already hold %s (token %d)", lockLabel(name), lk.Token())
		}
		return
	}
	lk, err := sh.c.TryAcquire(sh.ctx, lockOptions(name, shared)...)
	if errors.Is(err, client.ErrNotAvailable) {
		if name == "" {
			fmt.Fprintln(sh.out, "the lock is held by someone else")
		} else {
			fmt.Fprintf(sh.out, "%s is held by someone else\n", lockLabel(name))
		}
		return
	}
	if err != nil {
		sh.failErr(err)
		return
	}
	sh.holding(lk)
}

// append stages one text. The line is "append", "append FILE" or
// "append FILE TEXT..."; the text is the rest of the line as typed.
func (sh *shell) append(line string) {
	rest := strings.TrimSpace(line)[len("append"):]
	rest = strings.TrimLeft(rest, " \t")
	file, text, hasText := strings.Cut(rest, " ")
	file = strings.TrimSpace(file)
	lk := sh.held[""]
	if lk == nil {
		sh.fail("you do not hold the lock; type acquire first")
		return
	}
	var ok bool
	if file == "" {
		if file, ok = sh.ask("file name: "); !ok {
			return
		}
		file = strings.TrimSpace(file)
	}
	if !hasText || text == "" {
		if text, ok = sh.ask("text: "); !ok {
			return
		}
	}
	if text == "" {
		sh.fail("nothing to append")
		return
	}
	err := lk.Append(sh.ctx, file, []byte(text))
	switch {
	case lockGone(err):
		sh.lost(lk, err)
	case errors.Is(err, client.ErrInvalidFileName), errors.Is(err, client.ErrFileNotFound):
		sh.fail("%s (files are file_0 to file_99)", errLine(err))
	case err != nil:
		sh.failErr(err)
	default:
		fmt.Fprintf(sh.out, "staged %d bytes for %s\n", len(text), file)
	}
}

func (sh *shell) release(args []string, abort bool) {
	name, _, rest, err := lockArgs(args)
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("unexpected %q", strings.Join(rest, " "))
	}
	if err != nil {
		sh.fail("%v", err)
		return
	}
	lk := sh.held[name]
	if lk == nil {
		if name == "" {
			sh.fail("you do not hold the lock")
		} else {
			sh.fail("you do not hold %s", lockLabel(name))
		}
		return
	}
	what := "token"
	if name != "" {
		what = lockLabel(name) + " token"
	}
	ctx := context.WithoutCancel(sh.ctx)
	if abort {
		if err := lk.Abort(ctx); err != nil {
			sh.failErr(err)
			return
		}
		fmt.Fprintf(sh.out, "aborted %s %d; the staged appends are discarded\n", what, lk.Token())
		delete(sh.held, name)
		return
	}
	err = lk.Release(ctx)
	switch {
	case lockGone(err):
		sh.lost(lk, err)
	case err != nil:
		sh.fail("%s (try release again)", errLine(err))
	case name == "":
		fmt.Fprintf(sh.out, "released token %d; the appends are in the files\n", lk.Token())
		delete(sh.held, name)
	default:
		fmt.Fprintf(sh.out, "released %s %d\n", what, lk.Token())
		delete(sh.held, name)
	}
}

func (sh *shell) cat(args []string) {
	if len(args) != 1 {
		sh.fail("usage: cat FILE")
		return
	}
	data, err := sh.c.ReadFile(sh.ctx, args[0])
	if err != nil {
		sh.failErr(err)
		return
	}
	sh.out.Write(data)
	if len(data) > 0 && data[len(data)-1] != '\n' {
		fmt.Fprintln(sh.out)
	}
	if len(data) == 0 {
		fmt.Fprintf(sh.out, "(%s is empty)\n", args[0])
	}
}

func (sh *shell) status(args []string) {
	name, _, rest, err := lockArgs(args)
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("unexpected %q", strings.Join(rest, " "))
	}
	if err != nil {
		sh.fail("status: %v", err)
		return
	}
	st, err := sh.c.StatusPage(sh.ctx, &dlmv1.StatusRequest{Lock: lockField(name)})
	if err != nil {
		sh.failErr(err)
		return
	}
	if err := printStatus(sh.out, st, probeMembers(sh.ctx, sh.hc, st, sh.copts)); err != nil {
		sh.failErr(err)
	}
}

func (sh *shell) locks() {
	locks, err := sh.c.ListLocks(sh.ctx, false)
	if err != nil {
		sh.failErr(err)
		return
	}
	if err := printLocks(sh.out, locks); err != nil {
		sh.failErr(err)
	}
}

// abandon aborts the locks still held when the shell ends: only an
// explicit release commits.
func (sh *shell) abandon() {
	sh.noticeLoss()
	for name, lk := range sh.held {
		if name == "" {
			fmt.Fprintf(sh.out, "aborting the critical section of token %d (type release to commit)\n", lk.Token())
		} else {
			fmt.Fprintf(sh.out, "releasing %s (token %d)\n", lockLabel(name), lk.Token())
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(sh.ctx), 10*time.Second)
		if err := lk.Abort(ctx); err != nil {
			sh.failErr(err)
		}
		cancel()
		delete(sh.held, name)
	}
}
