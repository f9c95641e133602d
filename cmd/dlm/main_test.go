package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/servertest"
)

// dlmBinary is the dlm command built once for the end-to-end tests, which
// run it as real processes and kill them.
var dlmBinary string

func TestMain(m *testing.M) {
	if os.Getenv(peerEnv) != "" {
		// This process is a client peer started by a test (see peer_test.go).
		os.Exit(runPeer(os.Stdin, os.Stdout))
	}
	// Every server a test starts (processes inherit it, and servertest's
	// use the same) and every command it runs share one admin token, as
	// an operator's exported DLM_TOKEN would. Tests of the token's other
	// sources set it empty.
	os.Setenv(tokenEnv, servertest.AdminToken)
	dir, err := os.MkdirTemp("", "dlm-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dlmBinary = filepath.Join(dir, "dlm")
	build := exec.Command("go", "build", "-o", dlmBinary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building dlm:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago, for an address where nothing must answer. A server gets
// "127.0.0.1:0" instead (startServer learns the port it chose).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a dlm serve process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	exited chan struct{}
	addr   string
	data   string
	args   []string
	logs   *os.File
}

// startServer runs `dlm serve` on addr with data in dir and waits until it
// knows a leader (a single node: until it leads).
func startServer(t *testing.T, addr, dir string, args ...string) *proc {
	t.Helper()
	logs, err := os.Create(filepath.Join(t.TempDir(), "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, addr: addr, data: dir, args: args, logs: logs}
	t.Cleanup(func() {
		p.kill()
		logs.Close()
	})
	p.start()
	return p
}

func (p *proc) url() string { return "http://" + p.addr }

func (p *proc) start() {
	p.t.Helper()
	args := append([]string{"serve", "--listen", p.addr, "--data", p.data, "--min-lease", "100ms"}, p.args...)
	// The port may still be held by the process just killed; retry a
	// bounded number of times.
	for attempt := 0; ; attempt++ {
		p.cmd = exec.Command(dlmBinary, args...)
		p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
		if err := p.cmd.Start(); err != nil {
			p.t.Fatal(err)
		}
		p.exited = make(chan struct{})
		go func(cmd *exec.Cmd, exited chan struct{}) {
			cmd.Wait()
			close(exited)
		}(p.cmd, p.exited)
		err := p.learnAddr()
		if err == nil {
			err = awaitLeaderKnown(p.url(), 20*time.Second, p.exited)
		}
		if err == nil {
			return
		}
		p.kill()
		if attempt == 5 {
			p.t.Fatalf("dlm serve did not come up: %v (log %s)", err, p.logs.Name())
		}
	}
}

// learnAddr replaces a port 0 in p.addr by the one the server chose, read
// from the line it prints once it listens. Restarts then reuse that port.
func (p *proc) learnAddr() error {
	if !strings.HasSuffix(p.addr, ":0") {
		return nil
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(p.logs.Name())
		if err != nil {
			return err
		}
		if _, rest, ok := strings.Cut(string(b), "dlm serving on http://"); ok {
			if addr, _, ok := strings.Cut(rest, " "); ok {
				p.addr = addr
				return nil
			}
		}
		select {
		case <-p.exited:
			return errors.New("the process exited")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return errors.New("no serving line in 20s")
}

// kill9 kills the server with SIGKILL: no shutdown code runs.
func (p *proc) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill -9: %v", err)
	}
	<-p.exited
}

func (p *proc) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// awaitLeaderKnown polls Status until the server names a leader (itself, for
// a single node), the process exits, or the time is up.
func awaitLeaderKnown(url string, limit time.Duration, exited <-chan struct{}) error {
	return awaitLeaderKnownVia(http.DefaultClient, url, limit, exited)
}

// awaitLeaderKnownVia is awaitLeaderKnown through hc (an https:// server's
// CA).
func awaitLeaderKnownVia(hc connect.HTTPClient, url string, limit time.Duration, exited <-chan struct{}) error {
	// With the server's admin token (DLM_TOKEN), in case it needs one for
	// reads.
	c := dlmv1connect.NewLockServiceClient(hc, url, connect.WithInterceptors(auth.Bearer(os.Getenv(tokenEnv))))
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := c.Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{}))
		cancel()
		if err == nil && res.Msg.GetNode().GetLeaderUrl() != "" {
			return nil
		}
		last = err
		select {
		case <-exited:
			return errors.New("the process exited")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("no leader after %v: %v", limit, last)
}

// readFile reads a file through the API.
func readFile(t *testing.T, url, name string) string {
	t.Helper()
	c := dlmv1connect.NewLockServiceClient(http.DefaultClient, url)
	res, err := c.ReadFile(context.Background(), connect.NewRequest(&dlmv1.ReadFileRequest{File: name}))
	if err != nil {
		t.Fatalf("ReadFile %s: %v", name, err)
	}
	return string(res.Msg.GetData())
}

// lines reads a process's output line by line into a channel.
func lines(r io.Reader) <-chan string {
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- strings.TrimSpace(sc.Text())
		}
	}()
	return ch
}
