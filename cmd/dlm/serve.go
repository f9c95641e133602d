package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/dlm/dlm/server/dashboard"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/service"
)

func runServe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg node.Config
	dataDir := fs.String("data", "./dlm-data", "data folder: raft/ holds the log and snapshots, files/ the files")
	listen := fs.String("listen", "127.0.0.1:7070", "address for the API (Connect, gRPC, gRPC-Web) and the dashboard")
	fs.StringVar(&cfg.ID, "id", "", "this node's id, kept in the data folder (default: the stored one, or node1)")
	fs.StringVar(&cfg.RaftAddr, "raft", "", "host:port for Raft traffic between nodes (empty: a single node)")
	bootstrap := fs.Bool("bootstrap", false, "start a new cluster with this node as its only member (the default for a new folder without --join or --peers)")
	join := fs.String("join", "", "comma-separated client URLs of a running cluster to join")
	peers := fs.String("peers", "", "a fixed cluster to boot: id=raftaddr,id=raftaddr,… (this node among them)")
	fs.DurationVar(&cfg.DefaultLease, "lease", 10*time.Second, "default session lease (a session may ask for another)")
	fs.DurationVar(&cfg.MinLease, "min-lease", 200*time.Millisecond, "shortest lease a session may ask for")
	fs.IntVar(&cfg.MaxAppendBytes, "max-append", 1<<20, "largest append in bytes")
	fs.IntVar(&cfg.MaxSectionBytes, "max-section", 64<<20, "largest critical section in bytes")
	fs.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", 8192, "log entries between snapshots")
	fs.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", 0, "how often to check --snapshot-threshold (0: every 2 minutes)")
	fs.Uint64Var(&cfg.TrailingLogs, "trailing-logs", 10240, "log entries kept after a snapshot, for followers to catch up from")
	fs.IntVar(&cfg.LogSegmentSize, "log-segment-size", node.DefaultLogSegmentSize, "bytes in one Raft log segment file, each preallocated: the free space a start needs")
	cfg.MinFreeSpace = node.DefaultMinFreeSpace(64<<20, node.DefaultLogSegmentSize)
	fs.Var(byteSize{&cfg.MinFreeSpace}, "min-free-space", "the leader refuses new sessions, acquires and appends (DISK_FULL) while the data folder's volume has less free space than this; releases, aborts and closes still work; 0 turns the check off (default: one largest critical section twice, for the log and the files, plus one log segment)")
	cfg.MaxFileBytes = node.DefaultMaxFileBytes
	fs.Var(byteSize{&cfg.MaxFileBytes}, "max-file-size", "largest size of one file; an append that would pass it fails with FILE_TOO_LARGE")
	var limits service.ServerLimits
	fs.DurationVar(&limits.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time a client has to send a request's headers")
	fs.DurationVar(&limits.BodyTimeout, "body-timeout", 30*time.Second, "time a client has to send a request's body (answering may take longer: long polls and snapshot streams are not cut)")
	fs.DurationVar(&limits.IdleTimeout, "idle-timeout", 2*time.Minute, "an HTTP/1.1 keep-alive or HTTP/2 connection with no request in flight is closed after this long")
	fs.IntVar(&limits.MaxConcurrentStreams, "max-streams", 250, "requests in flight on one HTTP/2 connection")
	fs.IntVar(&limits.MaxConnections, "max-connections", 10000, "open client connections; more wait until one closes")
	var corsOrigins stringList
	fs.Var(&corsOrigins, "cors-origin", "an origin (scheme://host[:port]) whose web pages may call the lock API across origins; repeat it or separate origins with commas (default: none, only the dashboard served by this node); membership and snapshots are never open to other origins")
	verbose := fs.Bool("v", false, "log every leadership and session change")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	switch minFree := cfg.MinFreeSpace; {
	case !flagSet(fs, "min-free-space"):
		cfg.MinFreeSpace = 0 // the node derives it from --max-section
	case minFree == 0:
		cfg.MinFreeSpace = -1
	}
	var err error
	if cfg.Peers, err = node.ParsePeers(*peers); err != nil {
		return err
	}
	for _, u := range strings.Split(*join, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.Join = append(cfg.Join, u)
		}
	}
	var handlerCfg service.HandlerConfig
	if handlerCfg.CORSOrigins, err = service.ParseCORSOrigins(corsOrigins); err != nil {
		return fmt.Errorf("serve: --cors-origin: %w", err)
	}
	if limits.ReadHeaderTimeout <= 0 || limits.BodyTimeout <= 0 || limits.IdleTimeout <= 0 {
		return errors.New("serve: --read-header-timeout, --body-timeout and --idle-timeout must be positive")
	}
	if limits.MaxConcurrentStreams < 1 || limits.MaxConnections < 1 {
		return errors.New("serve: --max-streams and --max-connections must be at least 1")
	}
	if cfg.LogSegmentSize < 64<<10 || cfg.LogSegmentSize > 1<<30 {
		return fmt.Errorf("serve: --log-segment-size %d is outside 65536 (64 KiB) to 1073741824 (1 GiB)", cfg.LogSegmentSize)
	}
	if *bootstrap && (len(cfg.Join) > 0 || len(cfg.Peers) > 0) {
		return errors.New("serve: --bootstrap starts a new cluster; it cannot go with --join or --peers")
	}
	if (len(cfg.Join) > 0 || len(cfg.Peers) > 0) && cfg.RaftAddr == "" {
		return errors.New("serve: a cluster member needs --raft host:port")
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.DataDir, cfg.Logger = *dataDir, log

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	cfg.ClientURL = "http://" + ln.Addr().String()
	n, err := node.Open(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	srv := service.NewServer(service.Handler(service.New(n), service.NewCluster(n), dashboard.Handler(), handlerCfg), limits)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "dlm serving on %s (data in %s)\n", cfg.ClientURL, cfg.DataDir)

	select {
	case err = <-served:
	case <-ctx.Done():
	}
	// Stop the node first so that waiting acquires return at once, then let
	// in-flight calls finish.
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nerr := n.Shutdown()
	serr := srv.HTTP.Shutdown(shutCtx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, nerr, serr)
}

// flagSet says whether the command line set the named flag.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// stringList is a flag that may be given several times.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}
