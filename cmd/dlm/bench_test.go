package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/server/servertest"
)

// benchJSON runs dlm bench --output json and returns its lines, parsed.
func benchJSON(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	out := cliMust(t, "", append([]string{"bench", "--output", "json"}, args...)...)
	var lines []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bench printed %q, not a JSON line: %v", line, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// need fails unless m holds every key.
func need(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%v line has no %q: %v", m["workload"], k, m)
		}
	}
}

// TestBenchCycle runs cycles of three calls, then of two (--stage: the
// append rides with the release); every cycle's 32 bytes are in the files.
func TestBenchCycle(t *testing.T) {
	for _, stage := range []bool{false, true} {
		t.Run(fmt.Sprintf("stage=%v", stage), func(t *testing.T) {
			srv := servertest.Start(t, nil)
			args := []string{"bench", "--server", srv.URL, "--workload", "cycle", "--clients", "1,3", "--duration", "1s", "--lease", "2s"}
			if stage {
				args = append(args, "--stage")
			}
			out := cliMust(t, "", args...)
			re := regexp.MustCompile(fmt.Sprintf(`(?m)^cycle nodes=0 clients=(\d) stage=%v duration_seconds=1 cycles=(\d+) cycles_per_second=[\d.]+ floor_cycles_per_second=[\d.]+ vs_floor=[\d.]+ p50_ms=[\d.]+ p99_ms=[\d.]+ p50_floor_units=[\d.]+ p99_floor_units=[\d.]+ errors=0$`, stage))
			m := re.FindAllStringSubmatch(out, -1)
			if len(m) != 2 || m[0][1] != "1" || m[1][1] != "3" {
				t.Fatalf("bench printed %q", out)
			}
			cycles := 0
			for _, line := range m {
				n, _ := strconv.Atoi(line[2])
				if n == 0 {
					t.Errorf("no cycles completed: %q", line[0])
				}
				cycles += n
			}
			var total int
			for i := range 3 {
				data := cliMust(t, "", "cat", "--server", srv.URL, "file_"+strconv.Itoa(i))
				if len(data)%benchData != 0 {
					t.Errorf("file_%d holds %d bytes, not whole 32-byte records", i, len(data))
				}
				total += len(data)
			}
			if total != cycles*benchData {
				t.Errorf("files hold %d bytes for %d cycles", total, cycles)
			}
		})
	}
}

// TestBenchCycleNamedLocks runs cycles on named locks (--locks): 4 clients
// on 2 locks, each grant in the replicated history on its client's lock,
// released, and nothing appended to the files.
func TestBenchCycleNamedLocks(t *testing.T) {
	srv := servertest.Start(t, nil)
	lines := benchJSON(t, "--server", srv.URL, "--workload", "cycle", "--clients", "4", "--locks", "2", "--duration", "1s", "--lease", "2s")
	if len(lines) != 1 || lines[0]["workload"] != "cycle" {
		t.Fatalf("bench printed %v", lines)
	}
	l := lines[0]
	need(t, l, "cycles_per_second", "p99_ms", "locks")
	if l["locks"] != 2.0 || l["errors"] != 0.0 || l["cycles"].(float64) < 1 {
		t.Fatalf("cycle line %v", l)
	}
	h, err := srv.Node.LockHistory(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range h.Events {
		seen[e.Lock]++
		if e.EndedUnixMs == 0 {
			t.Errorf("grant %d of %q not ended", e.Token, e.Lock)
		}
	}
	if want := min(int(l["cycles"].(float64)), 1024); seen["bench-lock-0"]+seen["bench-lock-1"] < want || seen["bench-lock-0"] == 0 || seen["bench-lock-1"] == 0 || len(seen) != 2 {
		t.Errorf("history holds grants %v for %v cycles", seen, l["cycles"])
	}
	for i := range 4 {
		if data := cliMust(t, "", "cat", "--server", srv.URL, "file_"+strconv.Itoa(i)); data != "" {
			t.Errorf("file_%d holds %d bytes: a named lock's cycle appends nothing", i, len(data))
		}
	}
}

// The floor, hand-off and append workloads against an embedded server,
// as JSON lines; the appends are all in the files.
func TestBenchFloorHandoffAppend(t *testing.T) {
	srv := servertest.Start(t, nil)
	lines := benchJSON(t, "--server", srv.URL, "--workload", "floor,handoff,append", "--clients", "1,3",
		"--sizes", "32,1000", "--duration", "500ms", "--lease", "2s")
	var got []string
	for _, l := range lines {
		got = append(got, l["workload"].(string))
	}
	// handoff skips one client: nobody to hand off to.
	if strings.Join(got, ",") != "floor,handoff,append,append" {
		t.Fatalf("workloads printed %v", got)
	}
	need(t, lines[0], "f_ms", "f_append_ms", "r_ms", "r_server_ms", "one_client_cycles_per_second", "contended_cycles_per_second")
	for _, k := range []string{"f_ms", "r_ms"} {
		if v, _ := lines[0][k].(float64); v <= 0 {
			t.Errorf("floor %s = %v", k, lines[0][k])
		}
	}
	need(t, lines[1], "handoffs", "p50_ms", "p99_ms", "p999_ms", "p99_floor_units", "from_release_call_p50_ms")
	if lines[1]["clients"] != 3.0 || lines[1]["errors"] != 0.0 {
		t.Errorf("handoff line %v", lines[1])
	}
	var bytes int
	for i, size := range []int{32, 1000} {
		l := lines[2+i]
		need(t, l, "appends_per_second", "mb_per_second", "per_append_floor_units")
		if l["size"] != float64(size) {
			t.Errorf("append line %d has size %v, want %d", i, l["size"], size)
		}
		n, _ := l["appends"].(float64)
		if n < 1 {
			t.Errorf("no appends: %v", l)
		}
		bytes += int(n) * size
	}
	// Each size's run starts its sections at file_0; the cycles of the
	// handoff run wrote to file_0..file_2, 32 bytes each.
	handoffBytes := int(lines[1]["cycles"].(float64)) * benchData
	var total int
	for i := range 3 {
		total += len(cliMust(t, "", "cat", "--server", srv.URL, "file_"+strconv.Itoa(i)))
	}
	if total != bytes+handoffBytes {
		t.Errorf("files hold %d bytes, want %d appended and %d from cycles", total, bytes, handoffBytes)
	}
}

// Sessions and waiters with a handful of each, on a server bench starts
// itself, so that its CPU and RSS are read from /proc; the waiters are
// granted in their queue's order.
func TestBenchSessionsWaitersOwnServer(t *testing.T) {
	lines := benchJSON(t, "--serve-bin", dlmBinary, "--bench-dir", t.TempDir(), "--workload", "sessions,waiters,cycle",
		"--count", "5", "--clients", "2", "--duration", "300ms", "--lease", "1500ms")
	if len(lines) != 3 {
		t.Fatalf("printed %d lines: %v", len(lines), lines)
	}
	s, w, c := lines[0], lines[1], lines[2]
	need(t, s, "server_cpu_percent", "rss_mib", "rss_kib_per_session", "keepalives_per_second")
	// The idle window is two keepalive periods (2 × 1500ms/3), not 300ms.
	if s["count"] != 5.0 || s["nodes"] != 1.0 || s["lease_seconds"] != 1.5 || s["duration_seconds"] != 1.0 {
		t.Errorf("sessions line %v", s)
	}
	need(t, w, "rss_queued_mib", "rss_kib_per_waiter", "head_grant_ms", "grant_p99_ms", "server_cpu_ms_per_grant")
	if w["fifo"] != true || w["grants"] != 5.0 || w["errors"] != 0.0 {
		t.Errorf("waiters line %v", w)
	}
	need(t, c, "server_cpu_percent", "server_cpu_ms_per_cycle")
}

// Sessions and waiters against a server bench did not start: no /proc
// figures without --server-pid, the rest as usual.
func TestBenchSessionsWaitersEmbedded(t *testing.T) {
	srv := servertest.Start(t, nil)
	lines := benchJSON(t, "--server", srv.URL, "--workload", "sessions,waiters", "--count", "4", "--duration", "200ms", "--lease", "1500ms")
	if len(lines) != 2 {
		t.Fatalf("printed %d lines: %v", len(lines), lines)
	}
	if _, ok := lines[0]["rss_mib"]; ok {
		t.Errorf("RSS of a server with no known pid: %v", lines[0])
	}
	if lines[1]["fifo"] != true || lines[1]["grants"] != 4.0 {
		t.Errorf("waiters line %v", lines[1])
	}
}

func TestBenchFailover(t *testing.T) {
	lines := benchJSON(t, "--serve-bin", dlmBinary, "--bench-dir", t.TempDir(), "--workload", "failover", "--rounds", "1", "--duration", "200ms")
	if len(lines) != 1 {
		t.Fatalf("printed %v", lines)
	}
	need(t, lines[0], "first_grant_p50_ms", "first_grant_max_ms")
	if v, _ := lines[0]["first_grant_p50_ms"].(float64); v <= 0 || lines[0]["rounds"] != 1.0 {
		t.Errorf("failover line %v", lines[0])
	}
}

func TestBenchBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--workload", "read"}, `unknown workload "read"`},
		{[]string{"bench", "--workload", "cycle,"}, `unknown workload ""`},
		{[]string{"bench", "--clients", "0"}, `--clients: "0" is not a positive whole number`},
		{[]string{"bench", "--clients", "1,x"}, `--clients: "x"`},
		{[]string{"bench", "--sizes", "2000000"}, "larger than the server's default largest append"},
		{[]string{"bench", "--duration", "0s"}, "--duration must be positive"},
		{[]string{"bench", "--count", "0"}, "--count must be at least 1"},
		{[]string{"bench", "--rounds", "0"}, "--rounds must be at least 1"},
		{[]string{"bench", "--nodes", "2"}, "--nodes must be 1 or 3"},
		{[]string{"bench", "--server", "http://127.0.0.1:1", "--nodes", "3"}, "does not go with --server"},
		{[]string{"bench", "--server-pid", "12"}, "--server-pid goes with --server"},
		{[]string{"bench", "--server", "http://127.0.0.1:1", "--server-pid", "-3"}, `--server-pid: "-3"`},
		{[]string{"bench", "--server", "http://127.0.0.1:1", "--workload", "failover"}, "failover kills the leader"},
		{[]string{"bench", "--workload", "handoff", "--clients", "1"}, "handoff needs at least 2 clients"},
		{[]string{"bench", "--output", "xml"}, "not an output format"},
		{[]string{"bench", "--locks", "-1"}, "--locks must not be negative"},
		{[]string{"bench", "--locks", "2", "--stage"}, "a named lock's cycle (--locks) has none"},
		{[]string{"bench", "--locks", "2", "--workload", "cycle,handoff"}, "--locks goes with the cycle workload"},
		{[]string{"bench", "extra"}, "unexpected arguments"},
	} {
		_, _, err := cliRun(t, "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("dlm %v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}

// handoffs pairs grants in token order, only when the next holder was
// already waiting, and counts a grant that beat the release's reply as 0.
func TestHandoffs(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	records := []cycleRecord{
		// Out of order on purpose: pairing goes by token.
		{token: 30, started: at(5), granted: at(14), release: at(15), done: at(17)},
		{token: 10, started: at(0), granted: at(1), release: at(2), done: at(4)},
		// Waited (started 3 < done 4): hand-off 6 - 4 = 2ms, 4ms from the call.
		{token: 20, started: at(3), granted: at(6), release: at(7), done: at(12)},
		// Waited on 30 (started 16 < 17), granted at 16 before the reply: 0.
		{token: 40, started: at(16), granted: at(16), release: at(18), done: at(19)},
		// Not waiting: asked after 40's release had returned.
		{token: 50, started: at(20), granted: at(21), release: at(22), done: at(23)},
	}
	hand, fromCall, early := handoffs(records)
	// 30 after 20: started 5 < done 12, granted 14 - 12 = 2ms.
	want := []time.Duration{0, 2 * time.Millisecond, 2 * time.Millisecond}
	if len(hand) != len(want) || early != 1 {
		t.Fatalf("handoffs = %v, early %d; want %v, early 1", hand, early, want)
	}
	for i := range want {
		if hand[i] != want[i] {
			t.Errorf("handoffs = %v, want %v", hand, want)
		}
	}
	wantCall := []time.Duration{time.Millisecond, 4 * time.Millisecond, 7 * time.Millisecond}
	for i := range wantCall {
		if fromCall[i] != wantCall[i] {
			t.Errorf("from the release call = %v, want %v", fromCall, wantCall)
		}
	}
}

func TestBenchLine(t *testing.T) {
	l := newBenchLine("cycle").add("clients", 8).add("p50_ms", 1.23456).add("fifo", true).add("last_error", "a b")
	if got, want := l.text(), "cycle clients=8 p50_ms=1.235 fifo=true last_error=a b"; got != want {
		t.Errorf("text %q, want %q", got, want)
	}
	j, err := l.json()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(j), `{"workload":"cycle","clients":8,"p50_ms":1.235,"fifo":true,"last_error":"a b"}`; got != want {
		t.Errorf("json %s, want %s", got, want)
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
	if got := percentileFrac(d, 99.9); got != 100*time.Millisecond {
		t.Errorf("percentile 99.9 of 100 = %v", got)
	}
}
