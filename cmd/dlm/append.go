package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
)

// defaultServer is where `dlm serve` listens by default.
const defaultServer = "http://127.0.0.1:7070"

// clientFlags are the flags of every command that talks to a server: one
// set, so that --server, --token, --ca and the rest mean the same
// everywhere. --retry and -v apply to the commands that use the client
// library (append, cat, status, shell, bench).
type clientFlags struct {
	server  string
	grpc    bool
	budget  time.Duration
	verbose bool
	*tokenFlags
	tls *tlsFlags
}

func addClientFlags(fs *flag.FlagSet) *clientFlags {
	f := &clientFlags{tokenFlags: addTokenFlags(fs)}
	fs.StringVar(&f.server, "server", defaultServer, "server base URL, or a comma-separated list of a cluster's servers")
	fs.BoolVar(&f.grpc, "grpc", false, "speak gRPC instead of the Connect protocol")
	fs.DurationVar(&f.budget, "retry", 30*time.Second, "how long each call keeps retrying while the service is unreachable")
	fs.BoolVar(&f.verbose, "v", false, "log retries, leader changes and lost locks to stderr")
	f.tls = addTLSFlags(fs)
	return f
}

func (f *clientFlags) options(stderr io.Writer, extra ...client.Option) ([]string, []client.Option, error) {
	eps := client.ParseEndpoints(f.server)
	if len(eps) == 0 {
		return nil, nil, errors.New("no server given (--server)")
	}
	tok, err := f.value()
	if err != nil {
		return nil, nil, err
	}
	opts := []client.Option{client.WithRetryBudget(f.budget), client.WithToken(tok)}
	if f.grpc {
		opts = append(opts, client.WithGRPC())
	}
	if o, err := f.tls.option(); err != nil {
		return nil, nil, err
	} else if o != nil {
		opts = append(opts, o)
	}
	if f.verbose {
		opts = append(opts, client.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	}
	return eps, append(opts, extra...), nil
}

// connect is what a command that calls the generated clients itself
// (members, snapshot) needs: the servers, the HTTP client (--ca, --cert)
// and the client options (the token, --grpc).
func (f *clientFlags) connect() ([]string, *http.Client, []connect.ClientOption, error) {
	servers := client.ParseEndpoints(f.server)
	if len(servers) == 0 {
		return nil, nil, nil, errors.New("no server given (--server)")
	}
	copts, err := f.interceptors()
	if err != nil {
		return nil, nil, nil, err
	}
	if f.grpc {
		copts = append(copts, connect.WithGRPC())
	}
	hc, err := f.tls.httpClient()
	if err != nil {
		return nil, nil, nil, err
	}
	return servers, hc, copts, nil
}

// open starts a session.
func (f *clientFlags) open(ctx context.Context, stderr io.Writer, extra ...client.Option) (*client.Client, error) {
	eps, opts, err := f.options(stderr, extra...)
	if err != nil {
		return nil, err
	}
	return client.New(ctx, eps, opts...)
}

// reader reads without a session, so read-only commands leave no trace in
// the service's log and work while a cluster cannot commit.
func (f *clientFlags) reader(stderr io.Writer) (*client.Reader, error) {
	eps, opts, err := f.options(stderr)
	if err != nil {
		return nil, err
	}
	return client.NewReader(eps, opts...)
}

// closeClient ends a session without letting an interrupted ctx stop it.
func closeClient(ctx context.Context, c *client.Client) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return c.Close(ctx)
}

// runAppend appends each TEXT argument to one file in a single critical
// section: all of them reach the file, next to each other, or none does.
func runAppend(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("append", "[flags] --file NAME TEXT...", "Appends every TEXT to the file in one critical section and prints the fencing token.", stderr)
	cf := addClientFlags(fs)
	file := fs.String("file", "", "the file to append to: file_0 to file_99")
	wait := fs.Duration("wait", 0, "give up when the lock is not granted within this time (0: wait as long as it takes)")
	lease := fs.Duration("lease", 0, "session lease (0: the server's default)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	texts := fs.Args()
	if *file == "" {
		fs.Usage()
		return errors.New("append: --file is required")
	}
	if len(texts) == 0 {
		fs.Usage()
		return errors.New("append: no TEXT given")
	}
	c, err := cf.open(ctx, stderr, client.WithName("dlm append"), client.WithLease(*lease))
	if err != nil {
		return fmt.Errorf("append: %w", err)
	}
	defer closeClient(ctx, c)

	actx := ctx
	if *wait > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, *wait)
		defer cancel()
	}
	lk, err := c.Acquire(actx)
	if err != nil && *wait > 0 && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return &notGranted{wait: *wait, holder: holderOf(ctx, c)}
	}
	if err != nil {
		return fmt.Errorf("append: acquire: %w", err)
	}
	var bytes int
	for _, text := range texts {
		if err := lk.Append(lk.Context(), *file, []byte(text)); err != nil {
			_ = lk.Abort(context.WithoutCancel(ctx))
			return fmt.Errorf("append: nothing was written: %w", err)
		}
		bytes += len(text)
	}
	if err := lk.Release(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("append: release: %w", err)
	}
	fmt.Fprintf(stdout, "token=%d file=%s appends=%d bytes=%d\n", lk.Token(), *file, len(texts), bytes)
	return nil
}

// notGranted is the error of a --wait that ran out: one line that says so,
// which still matches context.DeadlineExceeded.
type notGranted struct {
	wait   time.Duration
	holder string // "" when unknown
}

func (e *notGranted) Error() string {
	held := ""
	if e.holder != "" {
		held = " (held by " + e.holder + ")"
	}
	return fmt.Sprintf("append: the lock was not granted within %s%s; nothing was written", e.wait, held)
}

func (e *notGranted) Unwrap() error { return context.DeadlineExceeded }

// holderOf names the lock's holder as status does, or returns "" if the
// service does not say in time.
func holderOf(ctx context.Context, c *client.Client) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.Status(ctx, false)
	if err != nil || st.GetLock().GetHolder() == 0 {
		return ""
	}
	id := st.GetLock().GetHolder()
	if name := st.GetLock().GetHolderName(); name != "" {
		return fmt.Sprintf("client %d (%s)", id, name)
	}
	return fmt.Sprintf("client %d", id)
}
