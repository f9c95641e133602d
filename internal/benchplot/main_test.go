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
