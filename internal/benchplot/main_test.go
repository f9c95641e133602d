package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlots(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs.jsonl")
	lines := `bench: starting 1 server(s) in /tmp/x
{"workload":"floor","nodes":1,"f_ms":0.15,"r_ms":0.2}
{"workload":"cycle","nodes":1,"clients":1,"cycles_per_second":400,"p99_ms":3.5}
{"workload":"cycle","nodes":1,"clients":8,"cycles_per_second":600,"p99_ms":20}
{"workload":"cycle","nodes":1,"clients":8,"cycles_per_second":700,"p99_ms":22}
{"workload":"cycle","nodes":3,"clients":8,"cycles_per_second":250,"p99_ms":40}
{"workload":"handoff","nodes":1,"clients":8,"p99_ms":0.5}
`
	if err := os.WriteFile(runs, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.jsonl")
	if err := os.WriteFile(other, []byte(`{"workload":"cycle","system":"etcd","nodes":1,"clients":8,"cycles_per_second":79}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "svg")
	if err := run([]string{"-out", out, "-compare", other, runs}, io.Discard); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string][]string{
		"cycles.svg": {"dlm, 1 node", "dlm, 3 nodes", "etcd, 1 node", "cycles/s"},
		// etcd's line gave no p99: it has no series there.
		"p99.svg": {"dlm, 1 node", "dlm, 3 nodes", "p99 (ms)"},
	} {
		b, err := os.ReadFile(filepath.Join(out, file))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if !strings.Contains(s, "<svg") {
			t.Errorf("%s is not an SVG", file)
		}
		for _, w := range want {
			if !strings.Contains(s, w) {
				t.Errorf("%s does not show %q", file, w)
			}
		}
		if file == "p99.svg" && strings.Contains(s, "etcd") {
			t.Errorf("p99.svg shows etcd, which gave no p99")
		}
	}
}

func TestPlotsBadInput(t *testing.T) {
	dir := t.TempDir()
	if err := run([]string{"-out", dir}, io.Discard); err == nil {
		t.Error("no input files accepted")
	}
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"workload\":\n"), 0o644)
	if err := run([]string{"-out", dir, bad}, io.Discard); err == nil || !strings.Contains(err.Error(), "bad.jsonl:1") {
		t.Errorf("a broken line: %v", err)
	}
	empty := filepath.Join(dir, "empty.jsonl")
	os.WriteFile(empty, []byte("{\"workload\":\"floor\"}\n"), 0o644)
	if err := run([]string{"-out", dir, empty}, io.Discard); err == nil {
		t.Error("input without cycle lines accepted")
	}
}

func TestGroupsPlot(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "groups.txt")
	lines := `goos: linux
BenchmarkGroups/G=1-2   	    2602	    747888 ns/op	         0.3145 cpu_ms/cycle	      1329 cycles/s	         1.000 max_group_share	         1.000 vs_G1
BenchmarkGroups/G=1-2   	    2602	    747888 ns/op	         0.3145 cpu_ms/cycle	      1500 cycles/s	         1.000 max_group_share	         1.000 vs_G1
BenchmarkGroups/G=2-2   	    4424	    344466 ns/op	         0.2084 cpu_ms/cycle	      2874 cycles/s	         0.5000 max_group_share	         2.162 vs_G1
BenchmarkGroups/own/replicas=3/G=1-2	    4424	    344466 ns/op	         0.2084 cpu_ms/cycle	      3000 cycles/s
BenchmarkGroups/own/replicas=3/G=8-2	    4424	    344466 ns/op	         0.2084 cpu_ms/cycle	      9000 cycles/s
PASS
`
	if err := os.WriteFile(in, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "svg")
	if err := run([]string{"-out", out, "-groups", in}, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "groups.svg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"<svg", "measured", "own/replicas=3, measured", "own/replicas=3, G × (G = 1)", "G × (G = 1)", "groups", "cycles/s"} {
		if !strings.Contains(string(b), w) {
			t.Errorf("groups.svg does not show %q", w)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "cycles.svg")); err == nil {
		t.Error("-groups alone drew cycles.svg too")
	}
	broken := filepath.Join(dir, "broken.txt")
	os.WriteFile(broken, []byte("BenchmarkGroups/G=1-2 10 5 ns/op\n"), 0o644)
	if err := run([]string{"-out", out, "-groups", broken}, io.Discard); err == nil || !strings.Contains(err.Error(), "without cycles/s") {
		t.Errorf("a line without cycles/s: %v", err)
	}
	none := filepath.Join(dir, "none.txt")
	os.WriteFile(none, []byte("PASS\n"), 0o644)
	if err := run([]string{"-out", out, "-groups", none}, io.Discard); err == nil {
		t.Error("an output without BenchmarkGroups lines accepted")
	}
}
