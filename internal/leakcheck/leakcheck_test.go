package leakcheck

import (
	"strings"
	"testing"
	"time"
)

func parked(stop <-chan struct{}) { <-stop }

// A goroutine started after the snapshot is reported while it runs and not
// once it ends; one that ends within the limit is not reported at all.
func TestLeaked(t *testing.T) {
	before := Goroutines()
	stop := make(chan struct{})
	go parked(stop)
	leaks := Leaked(before, 50*time.Millisecond)
	if len(leaks) != 1 || !strings.Contains(leaks[0], "leakcheck.parked") {
		t.Fatalf("leaks = %q; want the parked goroutine", leaks)
	}
	if leaks := Leaked(before, 50*time.Millisecond, "leakcheck.parked"); len(leaks) != 0 {
		t.Fatalf("an ignored goroutine was reported: %q", leaks)
	}
	go func() { time.Sleep(100 * time.Millisecond); close(stop) }()
	if leaks := Leaked(before, 10*time.Second); len(leaks) != 0 {
		t.Fatalf("a goroutine that ended within the limit was reported: %q", leaks)
	}
}
