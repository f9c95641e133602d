package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/internal/e2e"
)

// devCluster is a running `dlm dev-cluster` process.
type devCluster struct {
	t      *testing.T
	cmd    *exec.Cmd
	exited chan error
	out    <-chan string
	urls   []string
	rafts  []string
	ids    []string
	ca     string         // the CA certificate of a --tls cluster
	hc     *http.Client   // trusts ca
	pids   map[string]int // node id → pid
	seen   []string       // lines read so far after the start banner
}

// startDevCluster runs dev-cluster --port 0 with args and reads the nodes'
// addresses and pids from its banner.
func startDevCluster(t *testing.T, args ...string) *devCluster {
	t.Helper()
	cmd := exec.Command(dlmBinary, append([]string{"dev-cluster", "--port", "0", "--data", t.TempDir()}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dc := &devCluster{t: t, cmd: cmd, exited: make(chan error, 1), out: lines(stdout), pids: make(map[string]int), hc: http.DefaultClient}
	go func() { dc.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-dc.exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("dev-cluster stdout after the banner:\n%s\nstderr:\n%s", strings.Join(dc.seen, "\n"), e2e.Tail(stderr.String(), 40))
		}
	})
	deadline := time.After(20 * time.Second)
	for {
		select {
		case line := <-dc.out:
			// "n1  http://127.0.0.1:P  raft 127.0.0.1:Q  pid N"
			f := strings.Fields(line)
			if len(f) == 6 && (strings.HasPrefix(f[1], "http://") || strings.HasPrefix(f[1], "https://")) && f[2] == "raft" && f[4] == "pid" {
				pid, err := strconv.Atoi(f[5])
				if err != nil {
					t.Fatalf("bad pid in %q", line)
				}
				if strings.HasSuffix(f[1], ":0") || strings.HasSuffix(f[3], ":0") {
					t.Fatalf("dev-cluster printed port 0: %q", line)
				}
				dc.urls = append(dc.urls, f[1])
				dc.rafts = append(dc.rafts, f[3])
				dc.ids = append(dc.ids, f[0])
				dc.pids[f[0]] = pid
			}
			if ca, ok := strings.CutPrefix(line, "TLS for the API and Raft; CA certificate: "); ok {
				dc.ca, dc.hc = ca, tlsHTTPClient(t, ca, "", "")
			}
			if strings.HasPrefix(line, "Ctrl-C") {
				if len(dc.urls) == 0 {
					t.Fatal("dev-cluster printed no nodes")
				}
				for _, u := range dc.urls {
					if err := awaitLeaderKnownVia(dc.hc, u, 30*time.Second, nil); err != nil {
						t.Fatal(err)
					}
				}
				return dc
			}
		case err := <-dc.exited:
			dc.exited <- err // for the cleanup
			t.Fatalf("dev-cluster exited at start: %v\n%s", err, stderr.String())
		case <-deadline:
			t.Fatalf("dev-cluster printed %d URLs in 20s", len(dc.urls))
		}
	}
}

// awaitLine waits for an output line that contains want, and returns it.
func (dc *devCluster) awaitLine(want string, limit time.Duration) string {
	dc.t.Helper()
	deadline := time.After(limit)
	for {
		select {
		case line, ok := <-dc.out:
			if !ok {
				dc.t.Fatalf("dev-cluster output ended before %q", want)
			}
			dc.seen = append(dc.seen, line)
			if strings.Contains(line, want) {
				return line
			}
		case <-deadline:
			dc.t.Fatalf("dev-cluster did not print %q within %v", want, limit)
		}
	}
}

// alive reports whether the dev-cluster process still runs.
func (dc *devCluster) alive() bool {
	select {
	case err := <-dc.exited:
		dc.exited <- err // for the cleanup
		return false
	default:
		return true
	}
}

// interrupt sends SIGINT and waits for a clean exit.
func (dc *devCluster) interrupt() {
	dc.t.Helper()
	if err := dc.cmd.Process.Signal(syscall.SIGINT); err != nil {
		dc.t.Fatal(err)
	}
	select {
	case err := <-dc.exited:
		dc.exited <- err // for the cleanup
		if err != nil {
			dc.t.Fatalf("dev-cluster exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		dc.t.Fatal("dev-cluster did not exit after SIGINT")
	}
}

// leaderID asks the cluster which node leads.
func (dc *devCluster) leaderID(ctx context.Context) string {
	dc.t.Helper()
	r, err := client.NewReader(dc.urls, client.WithRetryBudget(20*time.Second))
	if err != nil {
		dc.t.Fatal(err)
	}
	st, err := r.Status(ctx, true)
	if err != nil {
		dc.t.Fatal(err)
	}
	return st.GetNode().GetId()
}

// dev-cluster starts its nodes, answers as a cluster, and on SIGINT (Ctrl-C)
// stops every node and exits.
func TestDevClusterStopsOnInterrupt(t *testing.T) {
	dc := startDevCluster(t, "--nodes", "3")
	dc.interrupt()
	for _, u := range dc.urls {
		if err := awaitLeaderKnown(u, 200*time.Millisecond, nil); err == nil {
			t.Fatalf("%s still answers after dev-cluster exited", u)
		}
	}
}

// The README's failover walk-through on a real dev-cluster: kill -9 the
// leader's process; dev-cluster keeps the others running and says how to
// start it again; clients given the list of servers find the new leader and
// carry on; the held lock, its token, the queue and the staged critical
// section survive; the printed command brings the node back.
func TestDevClusterFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dc := startDevCluster(t, "--nodes", "3", "--lease", "10s")
	servers := strings.Join(dc.urls, ",")

	holder, err := client.New(ctx, dc.urls, client.WithName("holder"), client.WithRetryBudget(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background()) // a no-op once closed
	lk, err := holder.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Append(ctx, "file_1", []byte("before,")); err != nil {
		t.Fatal(err)
	}
	waiter, err := client.New(ctx, dc.urls, client.WithName("waiter"), client.WithRetryBudget(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close(context.Background())
	type grant struct {
		lk  *client.Lock
		err error
	}
	granted := make(chan grant, 1)
	go func() {
		l, err := waiter.Acquire(ctx)
		granted <- grant{l, err}
	}()
	pollUntil(t, 20*time.Second, "the waiter queued", func() (bool, string) {
		st, err := holder.Status(ctx, true)
		if err != nil {
			return false, err.Error()
		}
		return len(st.GetLock().GetQueue()) == 1, fmt.Sprint(st.GetLock().GetQueue())
	})

	leader := dc.leaderID(ctx)
	if err := syscall.Kill(dc.pids[leader], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	line := dc.awaitLine("node "+leader+" ", 20*time.Second)
	if !strings.Contains(line, "exited: signal: killed") {
		t.Errorf("death reported as %q", line)
	}
	dc.awaitLine("to start it again, run:", 5*time.Second)
	restartCmd := dc.awaitLine("serve --id "+leader+" ", 5*time.Second)

	// The staged section survives; so does the token.
	if err := lk.Append(ctx, "file_1", []byte("after,")); err != nil {
		t.Fatalf("append after the leader died: %v", err)
	}
	token := lk.Token()
	if err := lk.Release(ctx); err != nil {
		t.Fatalf("release after the leader died: %v", err)
	}
	// The queue survives: the waiter is next, with a larger token.
	var g grant
	select {
	case g = <-granted:
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter was not granted the lock")
	}
	if g.err != nil {
		t.Fatalf("waiter: %v", g.err)
	}
	if g.lk.Token() <= token {
		t.Errorf("waiter's token %d not above the holder's %d", g.lk.Token(), token)
	}
	if err := g.lk.Append(ctx, "file_1", []byte("waiter,")); err != nil {
		t.Fatal(err)
	}
	if err := g.lk.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// And the command line carries on through the listed servers.
	for i := range 3 {
		cliMust(t, "", "append", "--server", servers, "--file", "file_1", fmt.Sprintf("cli%d,", i))
	}
	want := "before,after,waiter,cli0,cli1,cli2,"
	pollUntil(t, 10*time.Second, "dlm cat shows every section", func() (bool, string) {
		got := cliMust(t, "", "cat", "--server", servers, "file_1")
		return got == want, got
	})
	if !dc.alive() {
		t.Fatal("dev-cluster exited after one node died")
	}
	for _, c := range []*client.Client{holder, waiter} {
		if err := c.Close(ctx); err != nil {
			t.Error(err)
		}
	}

	// The printed command, run as printed, brings the node back.
	f := strings.Fields(restartCmd)
	if strings.ContainsAny(restartCmd, `'"`) || len(f) < 2 {
		t.Fatalf("restart command %q needs a shell; the test data folder should not", restartCmd)
	}
	back := exec.Command(f[0], f[1:]...)
	if err := back.Start(); err != nil {
		t.Fatal(err)
	}
	backExited := make(chan struct{})
	go func() { back.Wait(); close(backExited) }()
	t.Cleanup(func() {
		back.Process.Signal(syscall.SIGTERM)
		select {
		case <-backExited:
		case <-time.After(10 * time.Second):
			back.Process.Kill()
		}
	})
	var url string
	for i, id := range dc.ids {
		if id == leader {
			url = dc.urls[i]
		}
	}
	pollUntil(t, 30*time.Second, "the restarted node caught up", func() (bool, string) {
		r, err := client.NewReader([]string{url}, client.WithRetryBudget(time.Second))
		if err != nil {
			return false, err.Error()
		}
		data, err := r.ReadFile(ctx, "file_1")
		if err != nil {
			return false, err.Error()
		}
		return string(data) == want, string(data)
	})
	dc.interrupt()
}

// With --restart, dev-cluster starts a node that died again by itself.
func TestDevClusterRestartsADeadNode(t *testing.T) {
	dc := startDevCluster(t, "--nodes", "3", "--restart", "200ms")
	victim := dc.ids[1]
	if err := syscall.Kill(dc.pids[victim], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	dc.awaitLine("node "+victim+" ", 20*time.Second)
	line := dc.awaitLine("restarted "+victim, 20*time.Second)
	f := strings.Fields(line)
	pid, err := strconv.Atoi(strings.Trim(f[len(f)-1], "()"))
	if err != nil || pid == dc.pids[victim] {
		t.Fatalf("restart line %q: want a new pid", line)
	}
	if err := awaitLeaderKnown(dc.urls[1], 30*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	dc.interrupt()
}
