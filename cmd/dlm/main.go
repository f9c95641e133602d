// Command dlm is the one binary of dlm: the server (serve) and the client
// commands (append, cat, status, shell, lock, locks, bench).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// command is one subcommand: it parses its own flags from args and runs
// until done or until ctx is cancelled (SIGINT, SIGTERM or SIGHUP).
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run a server node", runServe},
		{"dev-cluster", "run a local cluster of separate server processes", runDevCluster},
		{"members", "list, add or remove cluster members", runMembers},
		{"append", "append texts to a file in one critical section", runAppend},
		{"cat", "print a file", runCat},
		{"status", "show the node, the lock, the queue and the files", runStatus},
		{"shell", "interactive prompt: acquire, append, release, cat", runShell},
		{"lock", "hold a lock while a command runs (dlm lock --name NAME -- COMMAND)", runLock},
		{"locks", "list the live locks with holders, modes, tokens and queues", runLocks},
		{"bench", "measure lock cycles per second", runBench},
		{"snapshot", "save a snapshot from the leader, verify one, or restore one into a new data folder", runSnapshot},
		{"certs", "make a CA and TLS certificates for nodes and clients", runCerts},
		{"token", "print a new random token (for --auth-tokens or DLM_TOKEN)", runToken},
		{"recover", "make a stopped node the only member of its cluster (majority lost for good)", runRecover},
		{"completion", "print a bash completion script (source <(dlm completion bash))", runCompletion},
	}
}

func main() {
	// SIGHUP (the terminal closed) ends a command as Ctrl-C does, so that a
	// shell aborts its critical section and closes its session rather than
	// leave the lock held until the lease runs out. Under nohup it stays
	// ignored: asking for it would undo that.
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	ctx, stop := signal.NotifyContext(context.Background(), sigs...)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	var status *exitStatus
	switch {
	case errors.Is(err, flag.ErrHelp):
		// Asked for help (-h): the help was the answer.
	case errors.As(err, &status):
		// dlm lock passes its command's exit status through.
		if status.err != nil {
			fmt.Fprintln(os.Stderr, "dlm:", errLine(err))
		}
		os.Exit(status.code)
	case err != nil:
		fmt.Fprintln(os.Stderr, "dlm:", errLine(err))
		os.Exit(1)
	}
}

// run runs the command args name. Every command's error comes back
// headed by the command's name, once; main adds "dlm: ", once.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		usage(stderr)
		return errors.New("no command given")
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help" && len(args) == 1:
		usage(stderr)
		return nil
	case args[0] == "help":
		// dlm help CMD [VERB] is dlm CMD [VERB] -h.
		return run(ctx, append(append([]string(nil), args[1:]...), "-h"), stdin, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := withTokenHint(c.run(ctx, args[1:], stdin, stdout, stderr))
		if err == nil || errors.Is(err, flag.ErrHelp) {
			return err
		}
		if msg := err.Error(); !strings.HasPrefix(msg, c.name+": ") && !strings.HasPrefix(msg, c.name+" ") {
			err = fmt.Errorf("%s: %w", c.name, err)
		}
		return err
	}
	return fmt.Errorf("unknown command %q (dlm help lists the commands)", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: dlm <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run dlm help <command> (or dlm <command> -h) for the flags of one command.")
}
