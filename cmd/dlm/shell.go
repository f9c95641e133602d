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
)

const shellHelp = `commands:
  acquire [WAIT]          take the lock, waiting in the queue (at most WAIT, e.g. 10s)
  try                     take the lock only if it is free
  append [FILE [TEXT]]    stage TEXT for FILE (asks for what is missing)
  release                 commit the staged appends and release the lock
  abort                   discard the staged appends and release the lock
  cat FILE                print a file
  status                  show the node, the lock, the queue and the files
  help                    show this list
  quit                    leave (a held lock is aborted first)
files are file_0 to file_99; appends reach the file only at release.
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
	sh := &shell{ctx: ctx, c: c, lines: readLines(stdin), out: stdout, errw: stderr, copts: copts, hc: hc}
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
	lk    *client.Lock
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
			sh.try()
		case "append":
			sh.append(line)
		case "release", "commit":
			sh.release(false)
		case "abort":
			sh.release(true)
		case "cat":
			sh.cat(fields[1:])
		case "status":
			sh.status()
		case "help", "?":
			fmt.Fprint(sh.out, shellHelp)
		case "quit", "exit", "q":
			return
		default:
			sh.fail("unknown command %q; type help for the list", fields[0])
		}
	}
}

// noticeLoss tells the user, between commands, that the lock was lost.
func (sh *shell) noticeLoss() {
	if sh.lk == nil {
		return
	}
	select {
	case <-sh.lk.Lost():
		sh.lost(context.Cause(sh.lk.Context()))
	default:
	}
}

// lost says, once, that the held lock is gone, and forgets it. Acquire
// opens a new session if the old one expired, so acquire is all it takes to
// carry on.
func (sh *shell) lost(cause error) {
	why := errLine(cause)
	switch {
	case errors.Is(cause, client.ErrSessionExpired):
		why = "the session expired"
	case errors.Is(cause, client.ErrLockExpired):
		why = "the lease ran out or the lock was revoked"
	}
	fmt.Fprintf(sh.out, "the lock (token %d) was lost (%s); its staged appends were discarded, nothing was written. Type acquire to take it again.\n", sh.lk.Token(), why)
	sh.lk = nil
}

func (sh *shell) acquire(args []string) {
	if sh.lk != nil {
		sh.fail("you already hold the lock (token %d); release or abort it first", sh.lk.Token())
		return
	}
	ctx := sh.ctx
	var wait time.Duration
	if len(args) > 0 {
		var err error
		wait, err = time.ParseDuration(args[0])
		if err != nil || wait <= 0 {
			sh.fail("acquire takes an optional wait such as 10s, not %q", args[0])
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	fmt.Fprintln(sh.out, "waiting for the lock...")
	lk, err := sh.c.Acquire(ctx)
	if errors.Is(err, context.DeadlineExceeded) && sh.ctx.Err() == nil {
		held := ""
		if h := holderOf(sh.ctx, sh.c); h != "" {
			held = " (held by " + h + ")"
		}
		sh.fail("the lock was not granted within %s%s; you left the queue", wait, held)
		return
	}
	if err != nil {
		sh.failErr(err)
		return
	}
	sh.lk = lk
	fmt.Fprintf(sh.out, "you hold the lock, token %d\n", lk.Token())
}

func (sh *shell) try() {
	if sh.lk != nil {
		sh.fail("you already hold the lock (token %d)", sh.lk.Token())
		return
	}
	lk, err := sh.c.TryAcquire(sh.ctx)
	if errors.Is(err, client.ErrNotAvailable) {
		fmt.Fprintln(sh.out, "the lock is held by someone else")
		return
	}
	if err != nil {
		sh.failErr(err)
		return
	}
	sh.lk = lk
	fmt.Fprintf(sh.out, "you hold the lock, token %d\n", lk.Token())
}

// append stages one text. The line is "append", "append FILE" or
// "append FILE TEXT..."; the text is the rest of the line as typed.
func (sh *shell) append(line string) {
	rest := strings.TrimSpace(line)[len("append"):]
	rest = strings.TrimLeft(rest, " \t")
	file, text, hasText := strings.Cut(rest, " ")
	file = strings.TrimSpace(file)
	if sh.lk == nil {
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
	err := sh.lk.Append(sh.ctx, file, []byte(text))
	switch {
	case lockGone(err):
		sh.lost(err)
	case errors.Is(err, client.ErrInvalidFileName), errors.Is(err, client.ErrFileNotFound):
		sh.fail("%s (files are file_0 to file_99)", errLine(err))
	case err != nil:
		sh.failErr(err)
	default:
		fmt.Fprintf(sh.out, "staged %d bytes for %s\n", len(text), file)
	}
}

func (sh *shell) release(abort bool) {
	if sh.lk == nil {
		sh.fail("you do not hold the lock")
		return
	}
	ctx := context.WithoutCancel(sh.ctx)
	if abort {
		if err := sh.lk.Abort(ctx); err != nil {
			sh.failErr(err)
			return
		}
		fmt.Fprintf(sh.out, "aborted token %d; the staged appends are discarded\n", sh.lk.Token())
		sh.lk = nil
		return
	}
	err := sh.lk.Release(ctx)
	switch {
	case lockGone(err):
		sh.lost(err)
	case err != nil:
		sh.fail("%s (try release again)", errLine(err))
	default:
		fmt.Fprintf(sh.out, "released token %d; the appends are in the files\n", sh.lk.Token())
		sh.lk = nil
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

func (sh *shell) status() {
	st, err := sh.c.Status(sh.ctx, false)
	if err != nil {
		sh.failErr(err)
		return
	}
	if err := printStatus(sh.out, st, probeMembers(sh.ctx, sh.hc, st, sh.copts)); err != nil {
		sh.failErr(err)
	}
}

// abandon aborts a lock still held when the shell ends: only an explicit
// release commits.
func (sh *shell) abandon() {
	sh.noticeLoss()
	if sh.lk == nil {
		return
	}
	fmt.Fprintf(sh.out, "aborting the critical section of token %d (type release to commit)\n", sh.lk.Token())
	ctx, cancel := context.WithTimeout(context.WithoutCancel(sh.ctx), 10*time.Second)
	defer cancel()
	if err := sh.lk.Abort(ctx); err != nil {
		sh.failErr(err)
	}
	sh.lk = nil
}
