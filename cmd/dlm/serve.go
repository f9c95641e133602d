package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dlm/dlm/internal/certs"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/dashboard"
	"github.com/dlm/dlm/server/membership"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/service"
)

func runServe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "[flags]", "Runs a server node: the lock API, the dashboard and, with --raft, a cluster member.", stderr)
	// Every default comes from node.DefaultConfig: the numbers live there.
	cfg := node.DefaultConfig()
	dataDir := fs.String("data", "./dlm-data", "data folder: raft/ holds the log and snapshots, files/ the files")
	listen := fs.String("listen", "127.0.0.1:7070", "address for the API (Connect, gRPC, gRPC-Web) and the dashboard")
	fs.StringVar(&cfg.ID, "id", "", "this node's id, kept in the data folder (default: the stored one, or node1)")
	fs.StringVar(&cfg.RaftAddr, "raft", "", "host:port for Raft traffic between nodes (empty: a single node; port 0: one the system chooses, printed on the serving line, for a node's first start)")
	bootstrap := fs.Bool("bootstrap", false, "start a new cluster with this node as its only member (the default for a new folder without --join or --peers)")
	join := fs.String("join", "", "comma-separated client URLs of a running cluster to join")
	peers := fs.String("peers", "", "a fixed cluster to boot: id=raftaddr,id=raftaddr,… (this node among them)")
	fs.DurationVar(&cfg.DefaultLease, "lease", cfg.DefaultLease, "default session lease (a session may ask for another)")
	fs.DurationVar(&cfg.MinLease, "min-lease", cfg.MinLease, "shortest lease a session may ask for")
	fs.DurationVar(&cfg.MaxLease, "max-lease", cfg.MaxLease, "longest lease a session may ask for")
	fs.DurationVar(&cfg.DefaultPollWait, "poll-wait", cfg.DefaultPollWait, "how long an acquire waits in the queue when the request does not say")
	fs.IntVar(&cfg.MaxAppendBytes, "max-append", cfg.MaxAppendBytes, "largest append in bytes")
	fs.IntVar(&cfg.MaxSectionBytes, "max-section", cfg.MaxSectionBytes, "largest critical section in bytes")
	fs.Int64Var(&cfg.MaxReadBytes, "max-read", cfg.MaxReadBytes, "largest answer to one file read in bytes")
	fs.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", cfg.SnapshotThreshold, "log entries between snapshots")
	fs.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", cfg.SnapshotInterval, "how often to check --snapshot-threshold")
	fs.IntVar(&cfg.SnapshotRetain, "snapshot-retain", cfg.SnapshotRetain, "snapshots kept in the data folder")
	fs.Uint64Var(&cfg.TrailingLogs, "trailing-logs", cfg.TrailingLogs, "log entries kept after a snapshot, for followers to catch up from")
	fs.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", cfg.HeartbeatTimeout, "Raft: how long a follower goes without hearing from the leader before it calls an election")
	fs.DurationVar(&cfg.ElectionTimeout, "election-timeout", cfg.ElectionTimeout, "Raft: how long a candidate goes without a leader before it calls an election (at least --heartbeat-timeout)")
	fs.DurationVar(&cfg.LeaderLeaseTimeout, "leader-lease-timeout", cfg.LeaderLeaseTimeout, "Raft: how long a leader stays leader without hearing from a majority (at most --heartbeat-timeout)")
	fs.DurationVar(&cfg.CommitTimeout, "commit-timeout", cfg.CommitTimeout, "Raft: the longest wait before the leader sends new entries without a heartbeat")
	fs.IntVar(&cfg.LogSegmentSize, "log-segment-size", cfg.LogSegmentSize, "bytes in one Raft log segment file, each preallocated: the free space a start needs")
	fs.Var(byteSize{&cfg.MinFreeSpace}, "min-free-space", "the leader refuses new sessions, acquires and appends (DISK_FULL) while the data folder's volume has less free space than this; releases, aborts and closes still work; 0 turns the check off (default: one largest critical section twice, for the log and the files, plus one log segment)")
	fs.Var(byteSize{&cfg.MaxFileBytes}, "max-file-size", "largest size of one file; an append that would pass it fails with FILE_TOO_LARGE")
	var limits service.ServerLimits
	fs.DurationVar(&limits.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time a client has to send a request's headers")
	fs.DurationVar(&limits.BodyTimeout, "body-timeout", 30*time.Second, "time a client has to send a request's body (answering may take longer: long polls and snapshot streams are not cut)")
	fs.DurationVar(&limits.IdleTimeout, "idle-timeout", 2*time.Minute, "an HTTP/1.1 keep-alive or HTTP/2 connection with no request in flight is closed after this long")
	fs.IntVar(&limits.MaxConcurrentStreams, "max-streams", 250, "requests in flight on one HTTP/2 connection")
	fs.IntVar(&limits.MaxConnections, "max-connections", 10000, "open client connections; more wait until one closes")
	fs.IntVar(&cfg.MaxSessions, "max-sessions", cfg.MaxSessions, "open sessions in the cluster; more are refused with TOO_MANY_SESSIONS (0: no limit)")
	fs.IntVar(&cfg.MaxLocks, "max-locks", cfg.MaxLocks, "live named locks in the cluster (held, waited for or in their lock-delay; the default lock is not counted); an acquire that would make one more is refused with TOO_MANY_LOCKS (0: no limit)")
	fs.DurationVar(&cfg.LockDelay, "lock-delay", cfg.LockDelay, "how long a lock stays ungranted after its holder's lease runs out (not after a release or close), so that the stale holder's writes to other systems drain first; an acquire's lock_delay_ms overrides it per grant (at most 60s)")
	var initRate service.InitRate
	fs.Float64Var(&initRate.Rate, "init-rate", 20, "sessions one client address (an IPv4 address, an IPv6 /64) may open per second, sustained; more are refused with INIT_RATE_LIMITED (0: no limit)")
	fs.IntVar(&initRate.Burst, "init-burst", 200, "sessions one client address may open at once after a pause")
	authTokens := fs.String("auth-tokens", "", "file of client credentials, one \"ROLE TOKEN\" per line (roles admin, client, read; # comments): with it the lock API needs a client token and reads a read token (default: only administration needs a token, the admin one)")
	tokenFile := fs.String("token-file", "", "file holding the cluster's admin token, the same on every member (default: $DLM_TOKEN, else DATA/admin-token, created with a random token for a new single node)")
	tlsCert := fs.String("tls-cert", "", "PEM certificate (chain) of this node: serve the API over TLS (https://) and, with --raft, Raft too; it must name the hosts of --listen and --raft")
	tlsKey := fs.String("tls-key", "", "PEM private key of --tls-cert")
	tlsClientCA := fs.String("tls-client-ca", "", "PEM CA: require API clients to present a certificate it signed (mutual TLS)")
	peerCA := fs.String("peer-ca", "", "PEM CA that signed the cluster members' certificates: Raft peers must present one (default: --tls-client-ca; required with --tls-cert and --raft otherwise)")
	var corsOrigins stringList
	fs.Var(&corsOrigins, "cors-origin", "an origin (scheme://host[:port]) whose web pages may call the lock API across origins; repeat it or separate origins with commas (default: none, only the dashboard served by this node); membership and snapshots are never open to other origins")
	debugAddr := fs.String("debug-listen", "", "loopback host:port serving net/http/pprof's profiles under /debug/pprof/ (default: off; only a loopback address is accepted)")
	verbose := fs.Bool("v", false, "log every leadership and session change")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	switch minFree := cfg.MinFreeSpace; {
	case !flagSet(fs, "min-free-space"):
		cfg.MinFreeSpace = node.DefaultMinFreeSpace(cfg.MaxSectionBytes, cfg.LogSegmentSize)
	case minFree == 0:
		cfg.MinFreeSpace = -1
	}
	var err error
	if cfg.Peers, err = node.ParsePeers(*peers); err != nil {
		return err
	}
	var joinURLs []string
	for _, u := range strings.Split(*join, ",") {
		if u = strings.TrimSpace(u); u != "" {
			joinURLs = append(joinURLs, u)
		}
	}
	cfg.Join = len(joinURLs) > 0
	var handlerCfg service.HandlerConfig
	if handlerCfg.CORSOrigins, err = service.ParseCORSOrigins(corsOrigins); err != nil {
		return fmt.Errorf("serve: --cors-origin: %w", err)
	}
	if limits.ReadHeaderTimeout <= 0 || limits.BodyTimeout <= 0 || limits.IdleTimeout <= 0 {
		return errors.New("serve: --read-header-timeout, --body-timeout and --idle-timeout must be positive")
	}
	switch {
	case cfg.MaxSessions < 0:
		return errors.New("serve: --max-sessions must not be negative")
	case cfg.MaxSessions == 0:
		cfg.MaxSessions = -1 // no limit
	}
	switch {
	case cfg.MaxLocks < 0:
		return errors.New("serve: --max-locks must not be negative")
	case cfg.MaxLocks == 0:
		cfg.MaxLocks = -1 // no limit
	}
	if !(initRate.Rate >= 0) || initRate.Burst < 1 {
		return errors.New("serve: --init-rate must not be negative and --init-burst must be at least 1")
	}
	if limits.MaxConcurrentStreams < 1 || limits.MaxConnections < 1 {
		return errors.New("serve: --max-streams and --max-connections must be at least 1")
	}
	if *bootstrap && (cfg.Join || len(cfg.Peers) > 0) {
		return errors.New("serve: --bootstrap starts a new cluster; it cannot go with --join or --peers")
	}
	if (cfg.Join || len(cfg.Peers) > 0) && cfg.RaftAddr == "" {
		return errors.New("serve: a cluster member needs --raft host:port")
	}
	var member membership.Config
	apiTLS, err := serveTLS(&cfg, &member, *tlsCert, *tlsKey, *tlsClientCA, *peerCA)
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.DataDir, cfg.Logger = *dataDir, log
	member.Logger = log
	if err := cfg.Validate(); err != nil {
		return flagError(err)
	}

	var creds []auth.Credential
	if *authTokens != "" {
		var warning string
		if creds, warning, err = auth.LoadTokens(*authTokens); err != nil {
			return fmt.Errorf("serve: --auth-tokens: %w", err)
		}
		if warning != "" {
			log.Warn("--auth-tokens: " + warning)
		}
	}
	adminToken, tokenPath, wrote, err := serveAdminToken(*dataDir, *tokenFile, cfg.Join || len(cfg.Peers) > 0, creds)
	if err != nil {
		return err
	}
	member.AdminToken = adminToken
	cfg.VerifyURL = membership.VerifyURL(member)
	handlerCfg.Guard = auth.NewGuard(adminToken, creds, *authTokens != "")

	var debugLn net.Listener
	if *debugAddr != "" {
		if debugLn, err = debugListen(*debugAddr); err != nil {
			return err
		}
		defer debugLn.Close()
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	cfg.ClientURL = "http://" + ln.Addr().String()
	if apiTLS != nil {
		cfg.ClientURL = "https://" + ln.Addr().String()
	}
	n, err := node.Open(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	handlerCfg.Metrics = n.Metrics()
	srv := service.NewServer(service.Handler(service.New(n, service.WithInitRate(initRate)), service.NewCluster(n), dashboard.Handler(), handlerCfg), limits)
	served := make(chan error, 1)
	go func() {
		if apiTLS != nil {
			served <- srv.ServeTLS(ln, apiTLS)
		} else {
			served <- srv.Serve(ln)
		}
	}()
	// A --raft port 0 was bound by Open: the line names the port it got,
	// for whoever starts the others (and this node again: it must come
	// back on it).
	raftNote := ""
	if cfg.RaftAddr = n.RaftAddr(); cfg.RaftAddr != "" {
		raftNote = "raft on " + cfg.RaftAddr + ", "
	}
	// Joining and announcing call the cluster's API, this node's included:
	// they start once it serves, and stop before the node does.
	memberCtx, stopMember := context.WithCancel(ctx)
	var memberDone sync.WaitGroup
	memberDone.Go(func() { membership.Run(memberCtx, member, n, joinURLs) })
	fmt.Fprintf(stdout, "dlm serving on %s (%sdata in %s)\n", cfg.ClientURL, raftNote, cfg.DataDir)
	if debugLn != nil {
		dbg := debugServer()
		go serveDebug(dbg, debugLn)
		defer dbg.Close()
		fmt.Fprintf(stdout, "profiles on http://%s/debug/pprof/\n", debugLn.Addr())
	}
	state := ""
	if wrote {
		state = " (new)"
	}
	find := "dlm commands run in this folder read it"
	if filepath.Clean(*dataDir) != "dlm-data" {
		find = "dlm commands read it with --data " + *dataDir
	}
	fmt.Fprintf(stdout, "admin token in %s%s: %s; elsewhere set %s\n", tokenPath, state, find, tokenEnv)

	select {
	case err = <-served:
	case <-ctx.Done():
	}
	// Stop the node first so that waiting acquires return at once, then let
	// in-flight calls finish.
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stopMember()
	memberDone.Wait()
	nerr := n.Shutdown()
	serr := srv.HTTP.Shutdown(shutCtx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, nerr, serr)
}

// serveAdminToken settles the node's admin token: from --token-file, else
// $DLM_TOKEN, else the data folder's admin-token, else (a new single node)
// a random one written there. A given token is also written there, so that
// the CLI on this machine finds it. A node that joins a cluster must share
// its token, so it is never generated for one.
//
// A token that creds give a lower role is refused, before anything is
// written: a client's token exported as DLM_TOKEN must not become the
// admin token by starting a server from that shell.
func serveAdminToken(dataDir, tokenFile string, joins bool, creds []auth.Credential) (tok, path string, wrote bool, err error) {
	var given string
	switch {
	case tokenFile != "":
		if given, err = auth.ReadTokenFile(tokenFile); err != nil {
			return "", "", false, fmt.Errorf("serve: --token-file: %w", err)
		}
	case strings.TrimSpace(os.Getenv(tokenEnv)) != "":
		given = strings.TrimSpace(os.Getenv(tokenEnv))
		if err := auth.CheckToken(given); err != nil {
			return "", "", false, fmt.Errorf("serve: $%s: %w", tokenEnv, err)
		}
	}
	path = filepath.Join(dataDir, auth.AdminTokenFile)
	lower := func(tok string) error {
		for _, c := range creds {
			if c.Token == tok && c.Role != auth.Admin {
				return fmt.Errorf("serve: the admin token (from --token-file, $%s or %s) is a %s token in --auth-tokens: the admin token must be its own", tokenEnv, path, c.Role)
			}
		}
		return nil
	}
	if err := lower(given); given != "" && err != nil {
		return "", "", false, err
	}
	tok, wrote, err = auth.AdminToken(dataDir, given, !joins)
	if err != nil {
		if given == "" && joins {
			return "", "", false, fmt.Errorf("serve: a node that joins a cluster (--join, --peers) needs the cluster's admin token, the same on every member: set %s or --token-file FILE to the content of a running member's DATA/%s (for a new --peers cluster, any random token of %d+ characters, e.g. openssl rand -hex 32)", tokenEnv, auth.AdminTokenFile, auth.MinTokenLength)
		}
		return "", "", false, fmt.Errorf("serve: admin token: %w", err)
	}
	if err := lower(tok); err != nil {
		return "", "", false, err
	}
	return tok, path, wrote, nil
}

// configFlags names the node.Config fields that serve's flags set.
var configFlags = map[string]string{
	"DataDir": "--data", "RaftAddr": "--raft", "Join": "--join", "Peers": "--peers",
	"DefaultLease": "--lease", "MinLease": "--min-lease", "MaxLease": "--max-lease",
	"DefaultPollWait": "--poll-wait", "MaxAppendBytes": "--max-append",
	"MaxSectionBytes": "--max-section", "MaxReadBytes": "--max-read",
	"SnapshotThreshold": "--snapshot-threshold", "SnapshotInterval": "--snapshot-interval",
	"SnapshotRetain": "--snapshot-retain", "TrailingLogs": "--trailing-logs",
	"HeartbeatTimeout": "--heartbeat-timeout", "ElectionTimeout": "--election-timeout",
	"LeaderLeaseTimeout": "--leader-lease-timeout", "CommitTimeout": "--commit-timeout",
	"LogSegmentSize": "--log-segment-size", "MinFreeSpace": "--min-free-space",
	"MaxFileBytes": "--max-file-size", "MaxSessions": "--max-sessions",
	"MaxLocks": "--max-locks", "LockDelay": "--lock-delay",
}

// flagError says a refused node.Config in the flags' names.
func flagError(err error) error {
	var ce *node.ConfigError
	if !errors.As(err, &ce) {
		return fmt.Errorf("serve: %w", err)
	}
	return errors.New("serve: " + ce.Explain(func(field string) string {
		if f, ok := configFlags[field]; ok {
			return f
		}
		return field
	}))
}

// flagSet says whether the command line set the named flag.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// serveTLS reads the TLS flags: the API's config (nil: plain http) and, for
// a cluster member, Raft's and the one for calls to other members.
func serveTLS(cfg *node.Config, member *membership.Config, cert, key, clientCA, peerCA string) (*tls.Config, error) {
	if cert == "" && key == "" {
		if clientCA != "" || peerCA != "" {
			return nil, errors.New("serve: --tls-client-ca and --peer-ca need --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, errors.New("serve: TLS needs both --tls-cert and --tls-key")
	}
	api, err := certs.Server(cert, key, clientCA)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if cfg.RaftAddr == "" {
		return api, nil
	}
	if peerCA == "" {
		peerCA = clientCA
	}
	if peerCA == "" {
		return nil, errors.New("serve: Raft over TLS needs --peer-ca FILE, the CA that signed the members' certificates (only peers with one may connect)")
	}
	if cfg.RaftTLS, err = certs.Peer(cert, key, peerCA); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	// Members reach each other's API with the same certificate and CA.
	if member.TLS, err = certs.Client(peerCA, cert, key); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	return api, nil
}

// stringList is a flag that may be given several times.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}
