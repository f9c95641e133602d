package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
)

// servingLine is what dlm serve prints once it listens, followed by its
// client URL.
const servingLine = "dlm serving on "

// Node is one `dlm serve` process, started and restarted on the same
// address and data folder. Set its fields before the first Start.
type Node struct {
	ID   string
	Bin  string
	Addr string // the API's host:port; a port 0 is replaced by the one the process chose
	// RaftAddr is the --raft address the harness passes ("": none); a
	// port 0 is replaced by the one the process chose, so that a restart
	// comes back on it (the Raft configuration keeps a member's address).
	RaftAddr string
	Data     string
	// Args follow `serve --listen ADDR --data DATA [--raft RAFTADDR]`.
	Args    []string
	Env     []string // added to this process's environment
	LogPath string   // stdout and stderr of every incarnation, appended
	// HTTP makes the harness's own calls (Status); nil: a client without
	// keep-alives, so that no connection outlives a killed or paused
	// process. A TLS node needs one that trusts its CA.
	HTTP *http.Client
	// Token is sent as the bearer of the harness's own calls; "": the
	// DLM_TOKEN of this process, as the node has.
	Token string

	mu          sync.Mutex
	scheme      string
	cmd         *exec.Cmd
	exited      chan struct{}
	logOffset   int64
	incarnation int
	paused      bool
}

var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// HTTPClient is the client of the harness's own calls to the node.
func (n *Node) HTTPClient() *http.Client {
	if n.HTTP != nil {
		return n.HTTP
	}
	return noKeepAlive
}

// URL is the node's client URL, https:// once it said it serves TLS.
func (n *Node) URL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	scheme := n.scheme
	if scheme == "" {
		scheme = "http://"
	}
	return scheme + n.Addr
}

// API makes raw calls to this node alone, without the client's retries,
// with the harness's token.
func (n *Node) API() dlmv1connect.LockServiceClient {
	token := n.Token
	if token == "" {
		token = os.Getenv("DLM_TOKEN")
	}
	var opts []connect.ClientOption
	if token != "" {
		opts = append(opts, connect.WithInterceptors(auth.Bearer(token)))
	}
	return dlmv1connect.NewLockServiceClient(n.HTTPClient(), n.URL(), opts...)
}

// Status asks the node for its own view (not consistent), which every node
// gives, leader or not, with every session on one page; bounded by a
// second.
func (n *Node) Status(ctx context.Context) (*dlmv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	res, err := n.API().Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{PageSize: 1000}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// Start runs the node and waits until it serves (answers Status; not until
// it knows a leader: a lone member of a cluster never does). A process
// that exits at once (a port still held by the one just killed) is started
// again, a bounded number of times.
func (n *Node) Start() error {
	var err error
	for attempt := range 5 {
		if err = n.Launch(); err == nil {
			return nil
		}
		n.Kill()
		if attempt < 4 {
			// Give a port held by the process just killed a moment to
			// be released before the next attempt.
			time.Sleep(200 * time.Millisecond)
		}
	}
	return fmt.Errorf("%s did not come up: %w (log %s)\n%s", n.ID, err, n.LogPath, Tail(n.Log(), 20))
}

// Launch runs the node once, without Start's retries, and waits until it
// serves or exits: a test that expects a start to fail sees it exit.
func (n *Node) Launch() error {
	if err := n.Spawn(); err != nil {
		return err
	}
	return n.AwaitServing(20 * time.Second)
}

// Spawn runs the node without waiting for it to serve (Launch waits);
// a caller that starts several nodes at once waits for them together.
func (n *Node) Spawn() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	logs, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logs.Close()
	n.incarnation++
	fmt.Fprintf(logs, "=== start %s incarnation %d at %s\n", n.ID, n.incarnation, time.Now().Format(time.RFC3339Nano))
	if n.logOffset, err = logs.Seek(0, 2); err != nil {
		return err
	}
	args := []string{"serve", "--listen", n.Addr, "--data", n.Data}
	if n.RaftAddr != "" {
		args = append(args, "--raft", n.RaftAddr)
	}
	args = append(args, n.Args...)
	cmd := exec.Command(n.Bin, args...)
	cmd.Env = append(os.Environ(), n.Env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	n.cmd, n.exited, n.paused = cmd, exited, false
	return nil
}

// AwaitServing waits until this incarnation prints its serving line (a
// port 0, of the API or of Raft, is learned from it, so restarts reuse the
// port) and answers Status, or exits.
func (n *Node) AwaitServing(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	exited := n.Exited()
	for {
		err := n.learnURL()
		if err == nil {
			_, err = n.Status(context.Background())
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not serving after %v: %w", n.ID, limit, err)
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start", n.ID)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (n *Node) learnURL() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	b, err := os.ReadFile(n.LogPath)
	if err != nil {
		return err
	}
	if int64(len(b)) < n.logOffset {
		return errors.New("no serving line yet")
	}
	_, rest, ok := strings.Cut(string(b[n.logOffset:]), servingLine)
	if !ok {
		return errors.New("no serving line yet")
	}
	line, _, ok := strings.Cut(rest, "\n")
	if !ok {
		return errors.New("no serving line yet")
	}
	url, note, _ := strings.Cut(line, " ")
	scheme, addr, ok := strings.Cut(url, "://")
	if !ok {
		return fmt.Errorf("serving line names %q", url)
	}
	if n.RaftAddr != "" {
		// "(raft on HOST:PORT, data in DIR)"
		_, raftAddr, ok := strings.Cut(note, "raft on ")
		if raftAddr, _, _ = strings.Cut(raftAddr, ","); !ok || raftAddr == "" {
			return fmt.Errorf("serving line %q names no Raft address", line)
		}
		n.RaftAddr = raftAddr
	}
	n.scheme, n.Addr = scheme+"://", addr
	return nil
}

// Exited is closed when the current incarnation ends (nil before the first
// start).
func (n *Node) Exited() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exited
}

// Running reports whether the current incarnation runs (paused or not).
func (n *Node) Running() bool {
	exited := n.Exited()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// Paused reports whether the node is stopped by Pause.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// Pid is the current incarnation's process id (0 before the first start).
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Incarnation counts the starts so far.
func (n *Node) Incarnation() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.incarnation
}

// Kill sends SIGKILL (no shutdown code runs) and waits until the process is
// gone; nothing if it is not running.
func (n *Node) Kill() {
	n.Signal(syscall.SIGKILL)
	if exited := n.Exited(); exited != nil {
		<-exited
	}
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
}

// Stop asks the process to shut down (SIGTERM) and waits up to limit for
// it, then kills it. It reports whether the process ended by itself.
func (n *Node) Stop(limit time.Duration) bool {
	exited := n.Exited()
	if exited == nil {
		return true
	}
	n.Signal(syscall.SIGCONT) // a paused process cannot shut down
	n.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return true
	case <-time.After(limit):
		n.Kill()
		return false
	}
}

// Pause stops the process with SIGSTOP: it keeps its sockets but answers
// nothing, to its clients or to the other nodes.
func (n *Node) Pause() error { return n.Signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (n *Node) Resume() error { return n.Signal(syscall.SIGCONT) }

// Signal sends sig to the current incarnation, if it runs.
func (n *Node) Signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil
	}
	select {
	case <-n.exited:
		return nil
	default:
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%v to %s: %w", sig, n.ID, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return nil
}

// Log is everything the node's incarnations printed.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.LogPath)
	return string(b)
}

// AwaitLeaderKnown polls Status until the node names a leader (itself, for
// a single node), the process exits, or limit has passed.
func (n *Node) AwaitLeaderKnown(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	exited := n.Exited()
	var last error
	for time.Now().Before(deadline) {
		st, err := n.Status(context.Background())
		if err == nil && st.GetNode().GetLeaderUrl() != "" {
			return nil
		}
		if err == nil {
			err = errors.New("it knows no leader")
		}
		last = err
		select {
		case <-exited:
			return fmt.Errorf("%s exited", n.ID)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: no leader after %v: %v", n.ID, limit, last)
}

// Tail returns the last lines of a node's log, leaving out Raft's repeated
// complaints about a peer that is down.
func Tail(s string, lines int) string {
	var kept []string
	skipped := 0
	for l := range strings.SplitSeq(strings.TrimRight(s, "\n"), "\n") {
		if strings.Contains(l, "failed to heartbeat") || strings.Contains(l, "failed to appendEntries") {
			skipped++
			continue
		}
		kept = append(kept, l)
	}
	return fmt.Sprintf("(%d lines about unreachable peers left out)\n%s", skipped, strings.Join(kept[max(len(kept)-lines, 0):], "\n"))
}

// AwaitLeading waits until the node leads and takes writes: a consistent
// Status with a known state index goes through the leader's own check
// that its term is established (a new leader answers UNAVAILABLE, "catching
// up", until then; a follower says so at once), bounded by limit.
func (n *Node) AwaitLeading(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	exited := n.Exited()
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := n.API().Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{Consistent: true, KnownStateIndex: 1, WaitMs: 1}))
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-exited:
			return fmt.Errorf("%s exited", n.ID)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: not leading after %v: %v", n.ID, limit, last)
}

// AwaitReady waits until the node knows a leader and, if that is itself,
// until it takes writes (AwaitLeading): a single node, or one that joins a
// running cluster, is then ready for a test's first request.
func (n *Node) AwaitReady(limit time.Duration) error {
	start := time.Now()
	if err := n.AwaitLeaderKnown(limit); err != nil {
		return err
	}
	st, err := n.Status(context.Background())
	if err != nil {
		return err
	}
	if st.GetNode().GetLeaderUrl() != n.URL() {
		return nil
	}
	return n.AwaitLeading(limit - time.Since(start))
}
