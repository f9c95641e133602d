package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dlm/dlm/internal/certs"
	"github.com/dlm/dlm/server/auth"
)

// devNode is one server process of a dev-cluster: its command line stays
// the same across restarts, so clients find it again on the same ports.
type devNode struct {
	name   string
	url    string
	raft   string
	args   []string
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// nodeExit reports that a node's process ended.
type nodeExit struct {
	nd  *devNode
	cmd *exec.Cmd
	err error
}

// runDevCluster starts a cluster of separate dlm serve processes on
// loopback, the one-command way to try replication on one machine. A node
// that dies leaves the others running: killing one, the leader included, is
// how to watch a failover.
func runDevCluster(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("dev-cluster", "[flags]", "Runs a local cluster of separate server processes, for trying failover.", stderr)
	nodes := fs.Int("nodes", 3, "number of nodes (3 or 5 tolerate 1 or 2 down)")
	dataDir := fs.String("data", "./dlm-cluster", "folder holding one data folder per node")
	port := fs.Int("port", 7071, "client port of the first node; node i listens on port+i-1 and uses port+10000+i-1 for Raft (0: free ports chosen by the system, printed at start)")
	lease := fs.Duration("lease", 10*time.Second, "default session lease")
	restart := fs.Duration("restart", 0, "restart a node that died after this delay (0: do not, print how to)")
	useTLS := fs.Bool("tls", false, "serve the API and Raft over TLS, with a throw-away CA and node certificates made in DATA/tls")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("dev-cluster: unexpected argument %q", fs.Arg(0))
	}
	if *nodes < 1 || *nodes > 9 {
		return errors.New("dev-cluster: --nodes must be between 1 and 9")
	}
	if *port < 0 || *port > 65535-10000-*nodes {
		return fmt.Errorf("dev-cluster: --port %d leaves no room for the Raft ports (port+10000…); use 0 for free ports", *port)
	}
	if *restart < 0 {
		return errors.New("dev-cluster: --restart must not be negative")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	addrs, err := devClusterAddrs(*port, *nodes)
	if err != nil {
		return fmt.Errorf("dev-cluster: %w", err)
	}
	var (
		nds   []*devNode
		peers []string
	)
	for i := range *nodes {
		nd := &devNode{name: fmt.Sprintf("n%d", i+1), url: addrs[2*i], raft: addrs[2*i+1]}
		nds = append(nds, nd)
		peers = append(peers, nd.name+"="+nd.raft)
	}
	// Absolute, so that the printed restart command works from anywhere.
	data, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	// One admin token for every node, as a cluster needs: the user's
	// $DLM_TOKEN, else the one a former run left, else a new one. Each
	// node keeps it in its data folder, where the CLI can read it.
	token := strings.TrimSpace(os.Getenv(tokenEnv))
	if token == "" {
		token, err = auth.ReadTokenFile(filepath.Join(data, nds[0].name, auth.AdminTokenFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("dev-cluster: %w", err)
		}
	}
	if token == "" {
		if token, err = auth.NewToken(); err != nil {
			return err
		}
	}
	env := append(os.Environ(), tokenEnv+"="+token)
	scheme, caFile := "http://", ""
	var ca *certs.CA
	if *useTLS {
		scheme = "https://"
		if ca, err = certs.NewCA("dlm dev-cluster CA"); err != nil {
			return fmt.Errorf("dev-cluster: %w", err)
		}
	}
	for _, nd := range nds {
		dir := filepath.Join(data, nd.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		nd.args = []string{self, "serve", "--id", nd.name, "--listen", nd.url, "--raft", nd.raft,
			"--peers", strings.Join(peers, ","), "--data", dir, "--lease", lease.String()}
		if ca != nil {
			f, err := ca.WriteIssued(filepath.Join(data, "tls"), nd.name, "127.0.0.1", "localhost")
			if err != nil {
				return fmt.Errorf("dev-cluster: %w", err)
			}
			caFile = f.CA
			nd.args = append(nd.args, "--tls-cert", f.Cert, "--tls-key", f.Key, "--peer-ca", f.CA)
		}
	}

	exits := make(chan nodeExit, *nodes)
	start := func(nd *devNode) error {
		cmd := exec.Command(nd.args[0], nd.args[1:]...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = io.Discard, stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		nd.cmd, nd.exited = cmd, make(chan struct{})
		// One goroutine per process owns its Wait, which must not be
		// called twice.
		go func(exited chan struct{}) {
			err := cmd.Wait()
			close(exited)
			exits <- nodeExit{nd, cmd, err}
		}(nd.exited)
		return nil
	}
	defer stopDevNodes(nds)
	for _, nd := range nds {
		if err := start(nd); err != nil {
			return err
		}
	}

	var urls []string
	fmt.Fprintf(stdout, "dlm dev-cluster: %d nodes, data in %s\n", *nodes, *dataDir)
	for _, nd := range nds {
		urls = append(urls, scheme+nd.url)
		fmt.Fprintf(stdout, "  %s  %s%s  raft %s  pid %d\n", nd.name, scheme, nd.url, nd.raft, nd.cmd.Process.Pid)
	}
	if caFile != "" {
		fmt.Fprintf(stdout, "TLS for the API and Raft; CA certificate: %s\n", caFile)
		fmt.Fprintf(stdout, "\ntry: dlm status --ca %s --server %s\n", shellJoin([]string{caFile}), strings.Join(urls, ","))
	} else {
		fmt.Fprintf(stdout, "\ntry: dlm status --server %s\n", strings.Join(urls, ","))
	}
	fmt.Fprintf(stdout, "admin token in %s (each node's data folder has it): dlm members and dlm snapshot save read it with --data %s\n",
		filepath.Join(*dataDir, nds[0].name, auth.AdminTokenFile), filepath.Join(*dataDir, nds[0].name))
	fmt.Fprintln(stdout, "Kill any node (kill -9 PID) to watch a failover; the others keep running.")
	fmt.Fprintln(stdout, "Ctrl-C stops every node.")

	restarts := make(chan *devNode, *nodes)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ex := <-exits:
			if ctx.Err() != nil {
				return nil // stopping: Ctrl-C reached the nodes too
			}
			status := "exit status 0"
			if ex.err != nil {
				status = ex.err.Error()
			}
			fmt.Fprintf(stdout, "dev-cluster: node %s (pid %d) exited: %s; the other nodes keep running\n",
				ex.nd.name, ex.cmd.Process.Pid, status)
			if *restart > 0 {
				fmt.Fprintf(stdout, "dev-cluster: restarting %s in %s\n", ex.nd.name, *restart)
				go func(nd *devNode) {
					t := time.NewTimer(*restart)
					defer t.Stop()
					select {
					case <-t.C:
						restarts <- nd
					case <-ctx.Done():
					}
				}(ex.nd)
				continue
			}
			fmt.Fprintf(stdout, "dev-cluster: to start it again, run:\n  %s\n", shellJoin(ex.nd.args))
		case nd := <-restarts:
			if ctx.Err() != nil {
				return nil
			}
			if err := start(nd); err != nil {
				fmt.Fprintf(stdout, "dev-cluster: restarting %s failed: %v; to try by hand, run:\n  %s\n", nd.name, err, shellJoin(nd.args))
				continue
			}
			fmt.Fprintf(stdout, "dev-cluster: restarted %s (pid %d)\n", nd.name, nd.cmd.Process.Pid)
		}
	}
}

// stopDevNodes stops the running nodes: SIGTERM, which each serves as a
// clean shutdown, and SIGKILL for one still running 15 s later. Ctrl-C
// reaches them too (same process group); SIGTERM covers a dev-cluster
// stopped another way.
func stopDevNodes(nds []*devNode) {
	for _, nd := range nds {
		if nd.cmd != nil {
			nd.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for _, nd := range nds {
		if nd.cmd == nil {
			continue
		}
		select {
		case <-nd.exited:
		case <-deadline.C:
			nd.cmd.Process.Kill()
			<-nd.exited
		}
	}
}

// devClusterAddrs returns the client and Raft address of each node, in that
// order. Port 0 takes every port from the system, each by binding :0, with
// all listeners held open until all are chosen so none is chosen twice.
func devClusterAddrs(port, nodes int) ([]string, error) {
	var addrs []string
	if port != 0 {
		for i := range nodes {
			addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port+i), fmt.Sprintf("127.0.0.1:%d", port+10000+i))
		}
		return addrs, nil
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range 2 * nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// shellJoin quotes args for a POSIX shell, so a printed command can be
// pasted as it is.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@+") == "" {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
