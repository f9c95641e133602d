package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// runDevCluster starts a cluster of separate dlm serve processes on
// loopback, the one-command way to try replication on one machine.
func runDevCluster(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev-cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := fs.Int("nodes", 3, "number of nodes (3 or 5 tolerate 1 or 2 down)")
	dataDir := fs.String("data", "./dlm-cluster", "folder holding one data folder per node")
	port := fs.Int("port", 7071, "client port of the first node; node i listens on port+i-1 and uses port+10000+i-1 for Raft")
	lease := fs.Duration("lease", 10*time.Second, "default session lease")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodes < 1 || *nodes > 9 {
		return errors.New("dev-cluster: --nodes must be between 1 and 9")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var peers []string
	for i := 1; i <= *nodes; i++ {
		peers = append(peers, fmt.Sprintf("n%d=127.0.0.1:%d", i, *port+10000+i-1))
	}
	var (
		procs []*exec.Cmd
		// done[i] closes when child i has exited: one goroutine per child
		// owns its Wait, which must not be called twice.
		done []chan struct{}
	)
	defer func() {
		// Ctrl-C reaches the children too (same process group); SIGTERM
		// covers a parent stopped another way. Both shut down cleanly.
		for _, p := range procs {
			p.Process.Signal(syscall.SIGTERM)
		}
		for _, d := range done {
			<-d
		}
	}()
	exited := make(chan error, *nodes)
	var urls []string
	for i := 1; i <= *nodes; i++ {
		dir := filepath.Join(*dataDir, fmt.Sprintf("n%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		url := fmt.Sprintf("127.0.0.1:%d", *port+i-1)
		cmd := exec.Command(self, "serve", "--id", fmt.Sprintf("n%d", i), "--listen", url,
			"--raft", fmt.Sprintf("127.0.0.1:%d", *port+10000+i-1), "--peers", strings.Join(peers, ","),
			"--data", dir, "--lease", lease.String())
		cmd.Stdout, cmd.Stderr = io.Discard, stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, cmd)
		d := make(chan struct{})
		done = append(done, d)
		go func(name string) {
			err := cmd.Wait()
			close(d)
			exited <- fmt.Errorf("dev-cluster: node %s exited: %w", name, err)
		}(fmt.Sprintf("n%d", i))
		urls = append(urls, "http://"+url)
	}
	fmt.Fprintf(stdout, "dlm dev-cluster: %d nodes, data in %s\n", *nodes, *dataDir)
	for i, u := range urls {
		fmt.Fprintf(stdout, "  n%d  %s\n", i+1, u)
	}
	fmt.Fprintf(stdout, "\ntry: dlm status --server %s\n", strings.Join(urls, ","))
	fmt.Fprintln(stdout, "Ctrl-C stops every node.")
	select {
	case <-ctx.Done():
		return nil
	case err := <-exited:
		return err
	}
}
