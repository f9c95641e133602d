package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/internal/e2e"
)

// benchData is what one cycle appends: 32 bytes, so that files grow at a
// known rate.
const benchData = 32

// benchWorkloads are the workloads in the order a list of them runs.
var benchWorkloads = []string{"floor", "cycle", "handoff", "append", "sessions", "waiters", "failover"}

// bench is one `dlm bench` run: its flags, the servers it measures, the
// floor and where results go.
type bench struct {
	cf       *clientFlags
	lease    time.Duration
	duration time.Duration
	count    int
	sizes    []int
	rounds   int
	// stage makes a cycle two calls: the append is staged in the client
	// and carried by the release.
	stage bool
	// locks, when positive, makes cycle run on named locks: client i
	// cycles lock i mod locks, acquire then release.
	locks  int
	output outputFormat
	stdout io.Writer
	stderr io.Writer
	target *benchTarget
	floor  benchFloor
	// shared carries the floor's calls to the server and the holder of
	// the waiters workload.
	shared *http.Client
	tls    *tls.Config
	// pool carries the sessions of the sessions and waiters workloads:
	// one process's thousands of sessions share a few connections, as one
	// application's would. One HTTP client per sessionsPerHTTP sessions:
	// Go's HTTP/2 client serializes new requests on one lock per client,
	// and with thousands of long polls in flight on one client, that lock,
	// not the server, was what the waiters workload measured.
	pool []*http.Client
}

// sessionsPerHTTP is how many sessions share one HTTP client (below the
// server's default of 250 requests in flight on one connection).
const sessionsPerHTTP = 200

// growPool grows the pool to carry n sessions; call it before they open
// concurrently.
func (b *bench) growPool(n int) {
	for len(b.pool)*sessionsPerHTTP < n {
		b.pool = append(b.pool, benchHTTPClient(b.tls))
	}
}

// runBench measures the lock service against the floor of this machine:
// see benchUsage. Each workload prints one line (one JSON object with
// --output json).
func runBench(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "[flags]", benchUsage, stderr)
	cf := addClientFlags(fs)
	workloads := fs.String("workload", "cycle", "comma-separated workloads to run in turn: "+strings.Join(benchWorkloads, ", "))
	clientList := fs.String("clients", "8", "comma-separated client counts for cycle and handoff, each run in turn (each client has its own session and connection)")
	duration := fs.Duration("duration", 10*time.Second, "how long each measured run lasts (per client count, per append size; the idle window of sessions lasts at least two keepalive periods)")
	lease := fs.Duration("lease", 0, "session lease (0: the server's default; 30s for the sessions and waiters workloads, a keepalive every 10s)")
	count := fs.Int("count", 1000, "sessions, or queued waiters, for those workloads")
	sizeList := fs.String("sizes", "32,65536", "comma-separated append sizes in bytes for the append workload")
	rounds := fs.Int("rounds", 3, "failover: how many times the leader is killed")
	locks := fs.Int("locks", 0, "cycle: run on this many named locks (bench-lock-0, ...), client i cycling lock i mod N: acquire then release, with no append (a named lock guards no files); 0: the default lock, with its append")
	stage := fs.Bool("stage", false, "cycle and handoff: stage the append in the client (Lock.Stage) and send it with the release: two calls per cycle instead of three")
	nodes := fs.Int("nodes", 1, "without --server: servers to start, 1 or 3 (failover always starts 3)")
	pidList := fs.String("server-pid", "", "with --server: comma-separated process ids of the servers, for server CPU and RSS")
	dataDir := fs.String("bench-dir", "", "folder for the started servers' data and the floor's fsync file (default: a temporary folder); with --server, a folder on the servers' disk")
	serveBin := fs.String("serve-bin", "", "the dlm binary that runs the started servers (default: this one)")
	output := addOutputFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	wls, err := benchWorkloadList(*workloads)
	if err != nil {
		return err
	}
	clients, err := positiveInts("--clients", *clientList)
	if err != nil {
		return err
	}
	sizes, err := positiveInts("--sizes", *sizeList)
	if err != nil {
		return err
	}
	pids, err := positiveInts("--server-pid", *pidList)
	switch {
	case *pidList != "" && err != nil:
		return err
	case *pidList != "" && !given["server"]:
		return errors.New("bench: --server-pid goes with --server (bench measures the servers it starts itself)")
	case *duration <= 0:
		return errors.New("bench: --duration must be positive")
	case *lease < 0:
		return errors.New("bench: --lease must not be negative")
	case *count < 1:
		return errors.New("bench: --count must be at least 1")
	case *rounds < 1:
		return errors.New("bench: --rounds must be at least 1")
	case *locks < 0:
		return errors.New("bench: --locks must not be negative")
	case *locks > 0 && *stage:
		return errors.New("bench: --stage stages an append, and a named lock's cycle (--locks) has none")
	case *locks > 0 && slices.Contains(wls, "handoff"):
		return errors.New("bench: --locks goes with the cycle workload: handoff pairs the grants of the one default lock")
	case *nodes != 1 && *nodes != 3:
		return errors.New("bench: --nodes must be 1 or 3")
	case given["nodes"] && given["server"]:
		return errors.New("bench: --nodes starts servers; it does not go with --server")
	case given["server"] && slices.Contains(wls, "failover"):
		return errors.New("bench: failover kills the leader of a cluster bench starts itself; it does not go with --server")
	}
	for _, s := range sizes {
		if s > 1<<20 {
			return fmt.Errorf("bench: --sizes %d is larger than the server's default largest append (1 MiB)", s)
		}
	}
	if slices.Contains(wls, "handoff") && slices.Max(clients) < 2 {
		return errors.New("bench: handoff needs at least 2 clients (a hand-off goes from one to another)")
	}

	b := &bench{cf: cf, lease: *lease, duration: *duration, count: *count, sizes: sizes, rounds: *rounds,
		stage: *stage, locks: *locks, output: *output, stdout: stdout, stderr: stderr}
	tc, err := cf.tls.config()
	if err != nil {
		return err
	}
	b.shared, b.tls = benchHTTPClient(tc), tc
	defer func() {
		b.shared.CloseIdleConnections()
		for _, hc := range b.pool {
			hc.CloseIdleConnections()
		}
	}()

	root := *dataDir
	if root == "" {
		root = os.TempDir()
	}
	dir, err := os.MkdirTemp(root, "dlm-bench-")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)

	bin := *serveBin
	if bin == "" && !given["server"] {
		if bin, err = os.Executable(); err != nil {
			return fmt.Errorf("bench: the dlm binary to start servers with: %w", err)
		}
	}
	// The floor first, before any server runs beside it.
	if b.floor, err = measureFloor(ctx, dir, min(b.duration/4, 2*time.Second)); err != nil {
		return fmt.Errorf("bench: floor: %w", err)
	}
	for _, wl := range wls {
		if err := ctx.Err(); err != nil {
			return err
		}
		if wl == "failover" {
			if err := b.runFailover(ctx, bin, filepath.Join(dir, "failover")); err != nil {
				return err
			}
			continue
		}
		if b.target == nil {
			if given["server"] {
				b.target = &benchTarget{pids: func() []int { return pids }}
			} else {
				t, err := startBenchTarget(ctx, bin, filepath.Join(dir, "servers"), *nodes, stderr)
				if err != nil {
					return err
				}
				defer t.stop()
				cf.server = joinURLs(t.cluster.URLs())
				b.target = t
			}
		}
		if err := b.run(ctx, wl, clients); err != nil {
			return err
		}
	}
	return nil
}

const benchUsage = `Measures the lock service against this machine's floor and prints one line per
run (one JSON object with --output json). Workloads:
  floor     F: write + fdatasync of 32 B on a preallocated file on --bench-dir's
            file system; R: a loopback HTTP/2 unary round trip to an in-process handler;
            R_server: the server's health check. Every other figure is also given
            against them (F+R is the least one durable call can cost).
  cycle     N clients loop acquire, append 32 B, release on the one lock
            (--locks M: on M named locks, client i on lock i mod M, acquire, release)
  handoff   the cycle, measuring release returned -> next waiter's acquire returned
  append    appends/s and MB/s inside sections of one client, per size
  sessions  --count idle sessions kept alive: server CPU % and RSS
  waiters   --count sessions queued for the lock: RSS, FIFO order, grant latency
  failover  a 3-node cluster; the leader killed (SIGKILL) -> the first new grant
Without --server, bench starts its own servers (dlm serve, --nodes of them) on a
temporary data folder; their CPU and RSS come from /proc. With --server, give
--server-pid for them.`

func benchWorkloadList(s string) ([]string, error) {
	var out []string
	for w := range strings.SplitSeq(s, ",") {
		w = strings.TrimSpace(w)
		if !slices.Contains(benchWorkloads, w) {
			return nil, fmt.Errorf("bench: unknown workload %q (supported: %s)", w, strings.Join(benchWorkloads, ", "))
		}
		if !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out, nil
}

// positiveInts parses a comma-separated list of positive integers.
func positiveInts(name, s string) ([]int, error) {
	var out []int
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("bench: %s is empty", name)
	}
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bench: %s: %q is not a positive whole number", name, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// benchHTTPClient is the client's own default (HTTP/2, cleartext for
// http://, pings on silent connections), made once so that many sessions
// share its connections.
func benchHTTPClient(tc *tls.Config) *http.Client {
	p := new(http.Protocols)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:       p,
		TLSClientConfig: tc,
		HTTP2:           &http.HTTP2Config{SendPingTimeout: 2 * time.Second, PingTimeout: 2 * time.Second},
	}}
}

// run runs one workload against the target.
func (b *bench) run(ctx context.Context, wl string, clients []int) error {
	switch wl {
	case "floor":
		return b.emit(b.floorLine(ctx))
	case "cycle", "handoff":
		for _, n := range clients {
			if wl == "handoff" && n < 2 {
				continue // nobody to hand off to
			}
			line, err := b.runCycle(ctx, wl, n)
			if err != nil {
				return err
			}
			if err := b.emit(line); err != nil {
				return err
			}
		}
		return nil
	case "append":
		for _, size := range b.sizes {
			line, err := b.runAppend(ctx, size)
			if err != nil {
				return err
			}
			if err := b.emit(line); err != nil {
				return err
			}
		}
		return nil
	case "sessions":
		line, err := b.runSessions(ctx)
		if err != nil {
			return err
		}
		return b.emit(line)
	case "waiters":
		line, err := b.runWaiters(ctx)
		if err != nil {
			return err
		}
		return b.emit(line)
	}
	return fmt.Errorf("bench: no runner for %q", wl)
}

// open starts one session on hc, or on a connection of its own when hc
// is nil.
func (b *bench) open(ctx context.Context, name string, hc *http.Client, extra ...client.Option) (*client.Client, error) {
	opts := []client.Option{client.WithName(name), client.WithLease(b.lease)}
	if hc != nil {
		opts = append(opts, client.WithHTTPClient(hc))
	}
	return b.cf.open(ctx, b.stderr, append(opts, extra...)...)
}

// benchTarget is what bench measures: the servers it started (cluster) or
// those given with --server (pids from --server-pid, maybe none).
type benchTarget struct {
	cluster *e2e.Cluster
	pids    func() []int
}

// startBenchTarget starts nodes `dlm serve` processes under dir and waits
// until they have a leader. Admission limits that would refuse the
// workloads' thousands of sessions from one address are lifted.
func startBenchTarget(ctx context.Context, bin, dir string, nodes int, stderr io.Writer) (*benchTarget, error) {
	args := []string{"--init-rate", "0", "--max-sessions", "0"}
	var c *e2e.Cluster
	if nodes == 1 {
		c = e2e.NewSingle(bin, dir, args...)
	} else {
		var err error
		if c, err = e2e.NewCluster(bin, dir, nodes, args...); err != nil {
			return nil, err
		}
	}
	if os.Getenv(tokenEnv) == "" {
		// Members joining each other need one admin token.
		tok := make([]byte, 16)
		rand.Read(tok)
		for _, n := range c.Nodes {
			n.Token = hex.EncodeToString(tok)
			n.Env = append(n.Env, tokenEnv+"="+n.Token)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "bench: starting %d server(s) in %s\n", nodes, dir)
	if err := c.Start(ctx); err != nil {
		return nil, fmt.Errorf("bench: start servers: %w", err)
	}
	return &benchTarget{cluster: c, pids: func() []int {
		var pids []int
		for _, n := range c.Up() {
			pids = append(pids, n.Pid())
		}
		return pids
	}}, nil
}

func (t *benchTarget) stop() {
	if t.cluster != nil {
		for _, n := range t.cluster.Nodes {
			n.Stop(5 * time.Second)
		}
	}
}

func (t *benchTarget) nodes() int {
	if t.cluster == nil {
		return 0
	}
	return len(t.cluster.Nodes)
}

// benchLine is one result: a workload name and ordered fields, printed as
// "workload k=v ..." or as one JSON object, so that both say the same.
type benchLine struct {
	keys []string
	vals []any
}

func newBenchLine(workload string) *benchLine {
	return (&benchLine{}).add("workload", workload)
}

func (l *benchLine) add(k string, v any) *benchLine {
	if f, ok := v.(float64); ok {
		v = round3(f)
	}
	l.keys = append(l.keys, k)
	l.vals = append(l.vals, v)
	return l
}

func (l *benchLine) text() string {
	var sb strings.Builder
	sb.WriteString(fmt.Sprint(l.vals[0]))
	for i := 1; i < len(l.keys); i++ {
		fmt.Fprintf(&sb, " %s=%v", l.keys[i], l.vals[i])
	}
	return sb.String()
}

func (l *benchLine) json() ([]byte, error) {
	buf := []byte{'{'}
	for i, k := range l.keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(l.vals[i])
		if err != nil {
			return nil, err
		}
		buf = append(append(append(buf, kb...), ':'), vb...)
	}
	return append(buf, '}'), nil
}

// emit prints a result: JSON lines for scripts (one object per line, what
// internal/benchplot reads), text for people.
func (b *bench) emit(l *benchLine) error {
	if b.output == outputJSON {
		j, err := l.json()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(b.stdout, "%s\n", j)
		return err
	}
	_, err := fmt.Fprintln(b.stdout, l.text())
	return err
}

// round3 keeps three decimals: enough for milliseconds and rates, and
// lines stay readable.
func round3(f float64) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', 3, 64), 64)
	return r
}

func msFloat(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the p-th percentile (nearest rank) of sorted values.
func percentile(sorted []time.Duration, p int) time.Duration {
	return percentileFrac(sorted, float64(p))
}

// percentileFrac is percentile for fractional ranks (99.9).
func percentileFrac(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int((p*float64(len(sorted)) + 99.999999) / 100)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// progress prints a line on stderr every few seconds of a long run, until
// stop is called; a run of unknown length (total 0) gets one too, once it
// has lasted.
func (b *bench) progress(what string, total time.Duration, done func() string) (stop func()) {
	if total > 0 && total < 10*time.Second {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if total > 0 {
					fmt.Fprintf(b.stderr, "bench: %s %v/%v %s\n", what, time.Since(start).Round(time.Second), total, done())
				} else {
					fmt.Fprintf(b.stderr, "bench: %s %v %s\n", what, time.Since(start).Round(time.Second), done())
				}
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

// pause keeps a client whose calls fail at once from spinning.
func pause(ctx context.Context) {
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
