package robustness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dlm/dlm/client"
)

// peerEnv makes the test binary a client process (see runPeer), which the
// fault schedule can stop with SIGSTOP while it holds the lock: its
// keepalive stops for real, as with a stalled or swapped-out holder.
const peerEnv = "DLM_ROBUSTNESS_PEER"

// runPeer serves one command per line on in, one answer line each on out:
//
//	open LEASE URL,… REAL=PROXY,…  -> ok
//	acquire                        -> ok TOKEN SESSION | err OUTCOME msg
//	append FILE DATA               -> ok | err OUTCOME msg
//	release                        -> ok | err OUTCOME msg
//	abort                          -> ok definite | ok maybe
func runPeer(in io.Reader, out io.Writer) int {
	var l *libLocker
	ctx := context.Background()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		answer := func(res outcome, err error, okText string) string {
			if res == ok {
				return strings.TrimSpace("ok " + okText)
			}
			return fmt.Sprintf("err %s %v", res, err)
		}
		var line string
		switch f[0] {
		case "open":
			lease, _ := time.ParseDuration(f[1])
			hosts := make(map[string]string)
			for _, kv := range strings.Split(f[3], ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					hosts[k] = v
				}
			}
			st := newStack(hosts)
			c, err := client.New(ctx, strings.Split(f[2], ","), client.WithHTTPClient(st.hc), client.WithLease(lease),
				client.WithRetryBudget(8*time.Second), client.WithAttemptTimeout(time.Second), client.WithPollWait(time.Second),
				client.WithName("peer"))
			if err != nil {
				line = answer(failed, err, "")
				break
			}
			l = &libLocker{c: c, st: st}
			line = "ok"
		case "acquire":
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			token, session, res, err := l.acquire(actx)
			cancel()
			line = answer(res, err, fmt.Sprintf("%d %d", token, session))
		case "append":
			res, err := l.append(ctx, f[1], f[2]+"\n")
			line = answer(res, err, "")
		case "release":
			res, err := l.release(ctx)
			line = answer(res, err, "")
		case "abort":
			line = "ok maybe"
			if l.abort(ctx) {
				line = "ok definite"
			}
		default:
			line = "err failed unknown command " + f[0]
		}
		fmt.Fprintln(out, line)
	}
	if l != nil {
		l.c.Close(ctx)
	}
	return 0
}

// peerLocker drives a client process.
type peerLocker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   chan string
}

func startPeer(c *cluster, lease time.Duration) (*peerLocker, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), peerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &peerLocker{cmd: cmd, stdin: stdin, out: make(chan string, 4)}
	go func() {
		defer close(p.out)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.out <- strings.TrimSpace(sc.Text())
		}
	}()
	var hosts []string
	for k, v := range c.hostMap() {
		hosts = append(hosts, k+"="+v)
	}
	if line := p.do("open", lease.String(), strings.Join(c.urls(), ","), strings.Join(hosts, ",")); line != "ok" {
		p.stop()
		return nil, fmt.Errorf("peer: open: %s", line)
	}
	return p, nil
}

// do sends one command and waits (bounded) for its answer; "" means none
// came.
func (p *peerLocker) do(args ...string) string {
	if _, err := fmt.Fprintln(p.stdin, strings.Join(args, " ")); err != nil {
		return ""
	}
	t := time.NewTimer(60 * time.Second)
	defer t.Stop()
	select {
	case line := <-p.out:
		return line
	case <-t.C:
		return ""
	}
}

func (p *peerLocker) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// stop ends the process: closing stdin makes it close its session.
func (p *peerLocker) stop() {
	p.signal(syscall.SIGCONT)
	p.stdin.Close()
	done := make(chan struct{})
	go func() {
		p.cmd.Wait()
		close(done)
	}()
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		p.cmd.Process.Kill()
		<-done
	}
}

// parse splits an answer into its outcome and the rest.
func parseAnswer(line string) (outcome, []string, error) {
	f := strings.Fields(line)
	switch {
	case len(f) == 0:
		return unknown, nil, fmt.Errorf("peer: no answer")
	case f[0] == "ok":
		return ok, f[1:], nil
	case len(f) >= 2:
		return outcome(f[1]), nil, fmt.Errorf("peer: %s", strings.Join(f[2:], " "))
	}
	return unknown, nil, fmt.Errorf("peer: bad answer %q", line)
}

func (p *peerLocker) acquire(context.Context) (uint64, uint64, outcome, error) {
	res, f, err := parseAnswer(p.do("acquire"))
	if res != ok || len(f) != 2 {
		return 0, 0, res, err
	}
	token, _ := strconv.ParseUint(f[0], 10, 64)
	session, _ := strconv.ParseUint(f[1], 10, 64)
	return token, session, ok, nil
}

func (p *peerLocker) append(_ context.Context, file, data string) (outcome, error) {
	res, _, err := parseAnswer(p.do("append", file, strings.TrimSpace(data)))
	return res, err
}

func (p *peerLocker) release(context.Context) (outcome, error) {
	res, _, err := parseAnswer(p.do("release"))
	return res, err
}

func (p *peerLocker) abort(context.Context) bool {
	return p.do("abort") == "ok definite"
}
