package robustness

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlm/dlm/internal/leakcheck"
)

var (
	soakDuration = flag.Duration("duration", 0, "TestSoak: total time to keep running seeds (0: one short run)")
	soakSeed     = flag.Uint64("seed", 1, "TestSoak: the first seed (each further run takes the next)")
	runLength    = flag.Duration("length", 15*time.Second, "length of one run (one cluster, one seed)")
	namedWorkers = flag.Int("named", 4, "named-lock workers in each run (shared and exclusive, raw API)")
	leadFaults   = flag.String("lead", "", "TestSoak: comma-separated cluster faults each run starts with (names as in the summary's faultKinds)")
)

// allResults collects every run of the package's tests for the summary.
var (
	resultsMu  sync.Mutex
	allResults []*result
)

// Both binaries are built once, lazily, for every test in the package.
var (
	buildOnce sync.Once
	binDir    string
	bins      map[bool]string
	buildErr  error
)

func TestMain(m *testing.M) {
	if os.Getenv(peerEnv) != "" {
		// This process is a client started by a run (see peer.go).
		os.Exit(runPeer(os.Stdin, os.Stdout))
	}
	flag.Parse()
	before := leakcheck.Goroutines()
	code := m.Run()
	code = leakcheck.After(code, before)
	if len(allResults) > 0 {
		fmt.Println(summary(allResults))
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func binary(t *testing.T, mutations bool) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "dlm-robustness-bin-")
		if buildErr != nil {
			return
		}
		bins = make(map[bool]string)
		for _, m := range []bool{false, true} {
			if bins[m], buildErr = buildDLM(binDir, m); buildErr != nil {
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bins[mutations]
}

func resultsDir() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "results")
}

func workers() int {
	if runtime.NumCPU() <= 2 {
		return 5
	}
	return 8
}

func runSeed(t *testing.T, bin string, seed uint64, d time.Duration, mutation string, lead ...string) *result {
	t.Helper()
	named := *namedWorkers
	if mutation != "" {
		// The mutations aim at the library workers' checks, which catch
		// them without named workers (TestNamedLockMutation is the named
		// locks' own); named workers there would only thin out the cycled
		// RPC faults the library workers meet.
		named = 0
	}
	res, err := run(context.Background(), config{bin: bin, seed: seed, duration: d, workers: workers(), mutation: mutation,
		cycle: mutation != "", lead: lead, abandoning: mutation == "", named: named, results: resultsDir(), logf: t.Logf})
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	resultsMu.Lock()
	allResults = append(allResults, res)
	resultsMu.Unlock()
	return res
}

// report logs a run's violations and where its history went.
func report(t *testing.T, r *result) {
	t.Helper()
	if len(r.violations) == 0 {
		return
	}
	max := min(len(r.violations), 20)
	t.Logf("seed %d: %d violations (history, visualization and logs in %s):\n  %s", r.seed, len(r.violations), r.dir, strings.Join(r.violations[:max], "\n  "))
}

// TestRobustness is the quick mode: a few seeds against the real binary.
func TestRobustness(t *testing.T) {
	bin := binary(t, false)
	// Rare faults that every quick run must meet lead the first seed's
	// schedule.
	lead := map[uint64][]string{11: {"restart-cleared-suffix"}}
	for _, seed := range []uint64{11, 12} {
		r := runSeed(t, bin, seed, *runLength, "", lead[seed]...)
		if len(r.violations) > 0 {
			report(t, r)
			t.Errorf("seed %d: the suite found violations; rerun with: go test ./robustness/ -run TestSoak -seed %d", seed, seed)
		}
	}
}

// TestNamedAndSharedLocks runs mostly named-lock workers (named.go), half
// of them mostly shared, half mostly exclusive, against few library
// workers, under the cluster and RPC faults; the model must accept the
// history, and the run must have exercised what it claims to check.
func TestNamedAndSharedLocks(t *testing.T) {
	bin := binary(t, false)
	const seed = 21
	res, err := run(context.Background(), config{bin: bin, seed: seed, duration: 10 * time.Second, workers: 2, named: 8,
		results: resultsDir(), logf: t.Logf})
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	resultsMu.Lock()
	allResults = append(allResults, res)
	resultsMu.Unlock()
	if len(res.violations) > 0 {
		report(t, res)
		t.Errorf("seed %d: the suite found violations; rerun with: go test ./robustness/ -run TestNamedAndSharedLocks -v", seed)
	}
	n := res.named
	if n.sharedGrants < 10 || n.exclusiveGrants < 10 || n.locks < len(namedLocks) || n.current < 10 {
		t.Errorf("the run exercised too little to prove anything: %+v", n)
	}
}

// TestNamedLockMutation shows that the model of named and shared locks
// catches a broken server on its own: with deposed-grant, a node that does
// not lead grants any acquire from its own state, so a named lock gets a
// second holder beside a real one, whose CheckToken or release then
// succeeds after the conflicting grant; porcupine must refute a named
// lock's partition, not only the other checks. (skip-fencing is caught on
// named locks too, by the named workers' late releases, but its hook can
// leave a session naming a lock the state forgot, and every replica then
// panics at that session's expiry: see the report of issue 12.)
func TestNamedLockMutation(t *testing.T) {
	bin := binary(t, true)
	const mutation = "deposed-grant"
	for seed := uint64(21); seed <= 23; seed++ {
		// Only a mild cluster fault: a follower's grant needs none.
		res, err := run(context.Background(), config{bin: bin, seed: seed, duration: 6 * time.Second, workers: 1, named: 8,
			namedLocks: namedLocks[:3], mutation: mutation, cycle: true, kinds: []string{"delay-clients"}, results: resultsDir(), logf: t.Logf})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		resultsMu.Lock()
		allResults = append(allResults, res)
		resultsMu.Unlock()
		for _, v := range res.violations {
			if strings.HasPrefix(v, "the history is not linearizable") && strings.Contains(v, lockKey+"/") {
				t.Logf("%s caught by the named-lock model on seed %d: %s", mutation, seed, v)
				return
			}
		}
		t.Logf("seed %d: %d violations, none from a named lock's partition", seed, len(res.violations))
	}
	t.Errorf("the named-lock model did not catch %s", mutation)
}

// TestMutations shows that the checks can fail: each mutation breaks one
// safety mechanism of the server, and the suite must report a violation.
func TestMutations(t *testing.T) {
	bin := binary(t, true)
	for _, m := range []string{"skip-fencing", "dup-apply", "deposed-grant", "keep-expired"} {
		t.Run(m, func(t *testing.T) {
			// A mutation may need a particular fault to show; a few seeds
			// make that certain without making every run long.
			for seed := uint64(1); seed <= 3; seed++ {
				r := runSeed(t, bin, seed, 8*time.Second, m)
				if len(r.violations) > 0 {
					t.Logf("%s caught on seed %d: %s", m, seed, r.violations[0])
					return
				}
			}
			t.Errorf("mutation %s was not caught", m)
		})
	}
}

// TestSoak runs seeds one after another for -duration (one short run
// without it), and reports every seed that shows a violation.
func TestSoak(t *testing.T) {
	bin := binary(t, false)
	deadline := time.Now().Add(*soakDuration)
	length := *runLength
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "length" })
	if *soakDuration == 0 && !set {
		// The short run that go test ./... includes.
		length = 8 * time.Second
	}
	var lead []string
	if *leadFaults != "" {
		lead = strings.Split(*leadFaults, ",")
		for _, k := range lead {
			if !slices.Contains(faultKinds, k) {
				t.Fatalf("-lead: unknown fault %q (known: %s)", k, strings.Join(faultKinds, ", "))
			}
		}
	}
	for seed := *soakSeed; ; seed++ {
		r := runSeed(t, bin, seed, length, "", lead...)
		t.Logf("seed %d: %d operations, %d violations", seed, r.ops, len(r.violations))
		if len(r.violations) > 0 {
			report(t, r)
			t.Errorf("seed %d: violations found", seed)
		}
		if time.Now().Add(length).After(deadline) {
			break
		}
	}
}
