package robustness

import (
	"context"
	"testing"
	"time"
)

// TestStorageFaults is the quick mode's short run of the storage faults of
// the schedule, in turn: a full disk on one node (the leader or a
// follower), then a byte flipped in a stopped follower's log. Each must
// happen at least once; the ordinary runs draw them at random as well.
func TestStorageFaults(t *testing.T) {
	bin := binary(t, false)
	const seed = 31
	res, err := run(context.Background(), config{bin: bin, seed: seed, duration: 10 * time.Second, workers: workers(),
		cycle: true, kinds: []string{"disk-full", "corrupt-follower-log"}, results: resultsDir(), logf: t.Logf})
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	resultsMu.Lock()
	allResults = append(allResults, res)
	resultsMu.Unlock()
	t.Logf("seed %d: %d operations, faults %v", seed, res.ops, res.faults)
	if len(res.violations) > 0 {
		report(t, res)
		t.Errorf("seed %d: the suite found violations under storage faults", seed)
	}
	for _, kind := range []string{"disk-full", "corrupt-follower-log"} {
		if res.faults[kind] == 0 {
			t.Errorf("no %s fault happened (faults: %v)", kind, res.faults)
		}
	}
}
