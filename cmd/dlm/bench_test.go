package main

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/dlm/dlm/server/servertest"
)

func TestBenchCycle(t *testing.T) {
	srv := servertest.Start(t, nil)
	out := cliMust(t, "", "bench", "--server", srv.URL, "--workload", "cycle", "--clients", "3", "--duration", "1s", "--lease", "2s")
	re := regexp.MustCompile(`^cycle clients=3 duration=1s cycles=(\d+) ([\d.]+) cycles/s p50=[\d.]+ms p99=[\d.]+ms errors=0\n$`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("bench printed %q", out)
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Errorf("no cycles completed: %q", out)
	}
	// Every cycle appended 32 bytes to its client's file.
	var total int
	for i := range 3 {
		data := cliMust(t, "", "cat", "--server", srv.URL, "file_"+strconv.Itoa(i))
		if len(data)%benchData != 0 {
			t.Errorf("file_%d holds %d bytes, not whole 32-byte records", i, len(data))
		}
		total += len(data)
	}
	if n, _ := strconv.Atoi(m[1]); total != n*benchData {
		t.Errorf("files hold %d bytes for %d cycles", total, n)
	}
}

func TestBenchBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--workload", "read"},
		{"bench", "--clients", "0"},
		{"bench", "--duration", "0s"},
	} {
		if _, _, err := cliRun(t, "", args...); err == nil {
			t.Errorf("dlm %v succeeded", args)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[int]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 1: time.Millisecond} {
		if got := percentile(d, p); got != want {
			t.Errorf("percentile(%d) = %v, want %v", p, got, want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
	if got := percentile(d[:1], 99); got != time.Millisecond {
		t.Errorf("percentile of one = %v", got)
	}
}
