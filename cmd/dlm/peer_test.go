package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
)

// peerEnv makes the test binary act as a client peer: a separate process
// that a test can stall with SIGSTOP, driven by one command per line on
// stdin and answering one line each on stdout.
const peerEnv = "DLM_TEST_PEER"

// runPeer serves the peer protocol:
//
//	open URL LEASE  -> ok CLIENT_ID
//	acquire         -> ok TOKEN
//	append FILE TXT -> ok
//	release         -> ok
//
// Any failure answers "err REASON message", REASON being a client sentinel's
// name (LOCK_EXPIRED, …) or OTHER.
func runPeer(in io.Reader, out io.Writer) int {
	var (
		c  *client.Client
		lk *client.Lock
	)
	ctx := context.Background()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var err error
		answer := "ok"
		switch f[0] {
		case "open":
			lease, _ := time.ParseDuration(f[2])
			c, err = client.New(ctx, []string{f[1]}, client.WithLease(lease), client.WithName("peer"))
			if err == nil {
				answer = "ok " + strconv.FormatUint(c.ClientID(), 10)
			}
		case "acquire":
			lk, err = c.Acquire(ctx)
			if err == nil {
				answer = "ok " + strconv.FormatUint(lk.Token(), 10)
			}
		case "append":
			err = lk.Append(ctx, f[1], []byte(strings.Join(f[2:], " ")))
		case "release":
			err = lk.Release(ctx)
		default:
			err = fmt.Errorf("unknown command %q", f[0])
		}
		if err != nil {
			answer = "err " + reasonWord(err) + " " + err.Error()
		}
		fmt.Fprintln(out, answer)
	}
	return 0
}

func reasonWord(err error) string {
	// In this order: a lock lost with its session is both LOCK_EXPIRED
	// and SESSION_EXPIRED, and a test asks for the first (a map's order
	// would answer either, at random).
	for _, w := range []struct {
		word     string
		sentinel error
	}{
		{"LOCK_EXPIRED", client.ErrLockExpired}, {"NOT_HOLDER", client.ErrNotHolder},
		{"SESSION_EXPIRED", client.ErrSessionExpired}, {"UNAVAILABLE", client.ErrUnavailable},
	} {
		if errors.Is(err, w.sentinel) {
			return w.word
		}
	}
	return "OTHER"
}

// peer is a client process driven by a test.
type peer struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   <-chan string
}

func startPeer(t *testing.T, url string, lease time.Duration) *peer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), peerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, cmd: cmd, stdin: stdin, out: lines(stdout)}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	p.must("open", url, lease.String())
	return p
}

// do sends one command and returns the answer line.
func (p *peer) do(args ...string) string {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.stdin, strings.Join(args, " ")); err != nil {
		p.t.Fatalf("peer: %v", err)
	}
	select {
	case line, ok := <-p.out:
		if !ok {
			p.t.Fatal("peer exited")
		}
		return line
	case <-time.After(60 * time.Second):
		p.t.Fatalf("peer: no answer to %v", args)
	}
	return ""
}

func (p *peer) must(args ...string) string {
	p.t.Helper()
	line := p.do(args...)
	if !strings.HasPrefix(line, "ok") {
		p.t.Fatalf("peer %v: %s", args, line)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "ok"))
}

func (p *peer) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("peer: signal %v: %v", sig, err)
	}
}
