// Package leakcheck fails a test binary whose tests leave goroutines
// running: a node that Shutdown did not stop, a timer loop nobody closed, a
// request still held. It compares the goroutines alive after the tests with
// those alive before them, so it needs no list of what may leak.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Grace is how long goroutines that are ending as the tests end get to go.
const Grace = 10 * time.Second

// Goroutines returns the stack of every goroutine alive now, by id: the
// "before" of Leaked.
func Goroutines() map[string]string { return goroutines() }

// Main runs the tests and, when they pass, fails the run if goroutines they
// started are still alive after Grace. A goroutine whose stack contains one
// of ignore is not counted.
func Main(m *testing.M, ignore ...string) {
	before := goroutines()
	os.Exit(After(m.Run(), before, ignore...))
}

// After is Main's check for a TestMain that does more around m.Run: given
// m.Run's code and the goroutines from before it, it returns the code to
// exit with, 1 (and the stacks on stderr) when the tests leaked.
func After(code int, before map[string]string, ignore ...string) int {
	if code == 0 {
		if leaks := Leaked(before, Grace, ignore...); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "leakcheck: %d goroutines outlived the tests:\n\n%s\n", len(leaks), strings.Join(leaks, "\n\n"))
			code = 1
		}
	}
	return code
}

// Leaked waits up to limit for every goroutine not in before (and not
// matching ignore) to end, and returns the stacks of those that did not.
func Leaked(before map[string]string, limit time.Duration, ignore ...string) []string {
	deadline := time.Now().Add(limit)
	for {
		var leaks []string
		for id, stack := range goroutines() {
			if _, old := before[id]; old || ignored(stack, ignore) {
				continue
			}
			leaks = append(leaks, stack)
		}
		if len(leaks) == 0 || time.Now().After(deadline) {
			return leaks
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ignored is the goroutines no test starts or can stop, and those the
// caller names.
func ignored(stack string, ignore []string) bool {
	for _, s := range append(ignore,
		// A test binary's own machinery.
		"testing.(*M).", "testing.tRunner", "testing.runTests",
		// The leak check itself, and the signal loop os/signal starts once.
		"internal/leakcheck.goroutines", "os/signal.loop",
		// Started once per process by the runtime or the standard library.
		"runtime.ensureSigM", "runtime/trace.", "created by runtime.gc",
	) {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}

// goroutines returns every goroutine's stack by its id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		// "goroutine 12 [chan receive]:"
		head, _, _ := strings.Cut(g, " [")
		if id, ok := strings.CutPrefix(head, "goroutine "); ok {
			out[id] = g
		}
	}
	return out
}
