package fencedstore_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlm/dlm/internal/e2e"
)

// proc is one process of the example, its output line by line.
type proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   chan string
	seen  []string
	done  chan struct{}
	err   error
}

func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: exec.Command(bin, args...), out: make(chan string, 64), done: make(chan struct{})}
	p.cmd.Stderr = os.Stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.out <- sc.Text()
		}
		close(p.out)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// expect returns the first line of output containing want.
func (p *proc) expect(want string, limit time.Duration) string {
	p.t.Helper()
	deadline := time.After(limit)
	for {
		select {
		case line, ok := <-p.out:
			if !ok {
				p.t.Fatalf("%s ended before printing %q (printed %q)", p.name, want, p.seen)
			}
			p.seen = append(p.seen, line)
			if strings.Contains(line, want) {
				return line
			}
		case <-deadline:
			p.t.Fatalf("%s did not print %q within %v (printed %q)", p.name, want, limit, p.seen)
		}
	}
}

func (p *proc) exitCode(limit time.Duration) int {
	p.t.Helper()
	for range p.out {
	}
	select {
	case <-p.done:
	case <-time.After(limit):
		p.t.Fatalf("%s did not exit within %v", p.name, limit)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

// The binaries, built once for every test.
var dlmBin, storeBin, writerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fenced-store-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if dlmBin, err = e2e.Build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for pkg, bin := range map[string]*string{"store": &storeBin, "writer": &writerBin} {
			*bin = filepath.Join(dir, pkg)
			out, err := exec.Command("go", "build", "-o", *bin, "github.com/dlm/dlm/examples/fenced-store/"+pkg).CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// setup runs a dlm server and the store, and returns the dlm URL, the
// store URL and the writer binary.
func setup(t *testing.T) (dlmURL, storeURL, writer string) {
	dlmURL, storeURL, writer, _ = setupWithDLM(t)
	return
}

func setupWithDLM(t *testing.T) (dlmURL, storeURL, writer, dlm string) {
	t.Helper()
	dir := t.TempDir()
	dlm, writer = dlmBin, writerBin
	cluster := e2e.NewSingle(dlm, dir, "--min-lease", "100ms")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cluster.Kill()
		if t.Failed() {
			t.Logf("dlm log:\n%s", e2e.Tail(cluster.Nodes[0].Log(), 40))
		}
	})
	dlmURL = cluster.URLs()[0]
	store := start(t, "store", storeBin, "-server", dlmURL, "-listen", "127.0.0.1:0", "-lock", "kv")
	line := store.expect("store listening on ", 20*time.Second)
	storeURL = strings.Fields(strings.TrimPrefix(line, "store listening on "))[0]
	return dlmURL, storeURL, writer, dlm
}

// A writer stopped (SIGSTOP) past its lease loses the lock to a second
// writer, which writes; resumed, the first writer's write carries its old
// token and the store refuses it: the newer value stays.
func TestStaleWriterIsRefusedAfterSuccessorWrote(t *testing.T) {
	dlmURL, storeURL, writer := setup(t)
	a := start(t, "writer A", writer, "-server", dlmURL, "-store", storeURL, "-key", "k", "-value", "from-A", "-lease", "1s", "-pause")
	a.expect("holding lock \"kv\" with token", 20*time.Second)
	a.expect("press enter", 5*time.Second)
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// B waits in the queue until A's lease runs out, then writes.
	b := start(t, "writer B", writer, "-server", dlmURL, "-store", storeURL, "-key", "k", "-value", "from-B")
	b.expect("store accepted k=from-B", 30*time.Second)
	if code := b.exitCode(20 * time.Second); code != 0 {
		t.Fatalf("writer B exited %d", code)
	}
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(a.stdin, "")
	a.expect("store refused the write (409 Conflict)", 20*time.Second)
	if code := a.exitCode(20 * time.Second); code != 3 {
		t.Fatalf("writer A exited %d, want 3 (refused)", code)
	}
	if _, v := get(t, storeURL+"/kv/k"); v != "from-B" {
		t.Fatalf("k = %q, want from-B: the stale write got through", v)
	}
	if _, log := get(t, storeURL+"/log"); strings.Contains(log, "from-A") {
		t.Fatalf("the store accepted the stale write:\n%s", log)
	}
}

// With no successor at all, the resumed writer's token is no grant of the
// lock any more: dlm's CheckToken says so and the store refuses it.
func TestStaleWriterIsRefusedWithNoSuccessor(t *testing.T) {
	dlmURL, storeURL, writer, dlm := setupWithDLM(t)
	a := start(t, "writer A", writer, "-server", dlmURL, "-store", storeURL, "-key", "k", "-value", "from-A", "-lease", "1s", "-pause")
	a.expect("press enter", 20*time.Second)
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Wait until dlm has ended A's session: the lock is free.
	err := e2e.Await(context.Background(), 30*time.Second, 50*time.Millisecond, func() (bool, string) {
		out, err := exec.Command(dlm, "locks", "--server", dlmURL, "--json").Output()
		if err != nil {
			return false, err.Error()
		}
		// protojson varies its spacing on purpose, so parse rather than match.
		var list struct{ Locks []struct{ Name string } }
		if err := json.Unmarshal(out, &list); err != nil {
			return false, err.Error()
		}
		for _, l := range list.Locks {
			if l.Name == "kv" {
				return false, string(out)
			}
		}
		return true, ""
	})
	if err != nil {
		t.Fatalf("lock kv still live after writer A stopped: %v", err)
	}
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(a.stdin, "")
	a.expect("store refused the write (409 Conflict)", 20*time.Second)
	if code := a.exitCode(20 * time.Second); code != 3 {
		t.Fatalf("writer A exited %d, want 3 (refused)", code)
	}
	if code, _ := get(t, storeURL+"/kv/k"); code != http.StatusNotFound {
		t.Fatalf("k exists after the only write was stale")
	}
}

// A current holder's write is accepted; a write without a token, or naming
// another lock, is not.
func TestStoreAcceptsOnlyCurrentHolder(t *testing.T) {
	dlmURL, storeURL, writer := setup(t)
	w := start(t, "writer", writer, "-server", dlmURL, "-store", storeURL, "-key", "k", "-value", "v1")
	w.expect("store accepted k=v1", 30*time.Second)
	if code := w.exitCode(20 * time.Second); code != 0 {
		t.Fatalf("writer exited %d", code)
	}
	for _, hdr := range []map[string]string{{}, {"Dlm-Lock": "other", "Dlm-Fencing-Token": "1"}} {
		req, _ := http.NewRequest(http.MethodPut, storeURL+"/kv/k", strings.NewReader("forged"))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("write with headers %v accepted (%s)", hdr, resp.Status)
		}
	}
	if _, v := get(t, storeURL+"/kv/k"); v != "v1" {
		t.Fatalf("k = %q, want v1", v)
	}
}
