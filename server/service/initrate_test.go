package service

import (
	"fmt"
	"testing"
	"time"
)

// The table of addresses stays bounded under a flood of new addresses, idle
// buckets are forgotten, and addresses beyond the table share one bucket
// rather than going unlimited.
func TestInitLimiterTableBounded(t *testing.T) {
	l := newInitLimiter(InitRate{Rate: 1, Burst: 2, MaxAddresses: 100})
	now := time.Unix(1_700_000_000, 0)
	l.now = func() time.Time { return now }
	for i := range 100 {
		if ok, _ := l.allow(fmt.Sprintf("10.0.%d.%d:1234", i/250, i%250)); !ok {
			t.Fatalf("first open from address %d refused", i)
		}
	}
	// The table is full and no bucket is idle: newcomers share the
	// overflow bucket (burst 2), then are refused.
	allowed := 0
	for i := range 50 {
		if ok, _ := l.allow(fmt.Sprintf("192.0.2.%d:1", i)); ok {
			allowed++
		}
	}
	if allowed != 2 || len(l.buckets) != 100 {
		t.Fatalf("50 new addresses with a full table: %d allowed, table %d; want 2, 100", allowed, len(l.buckets))
	}
	// After the buckets refill they are forgotten to make room.
	now = now.Add(10 * time.Second)
	if ok, _ := l.allow("198.51.100.1:1"); !ok || len(l.buckets) != 1 {
		t.Fatalf("after the table went idle: allowed %v, table %d; want true, 1", ok, len(l.buckets))
	}
	// The wait given is the time to the next token.
	l.allow("198.51.100.1:2")
	ok, wait := l.allow("198.51.100.1:3")
	if ok || wait != time.Second {
		t.Fatalf("third open at once with burst 2, 1/s: allowed %v, wait %v; want refused, 1s", ok, wait)
	}
}

// One IPv6 host owns a whole /64: its addresses share a bucket.
func TestInitLimiterIPv6Prefix(t *testing.T) {
	l := newInitLimiter(InitRate{Rate: 1, Burst: 1})
	if ok, _ := l.allow("[2001:db8::1]:5"); !ok {
		t.Fatal("first open refused")
	}
	if ok, _ := l.allow("[2001:db8::2]:5"); ok {
		t.Fatal("another address of the same /64 got a bucket of its own")
	}
	if ok, _ := l.allow("[2001:db8:0:1::1]:5"); !ok {
		t.Fatal("another /64 was refused")
	}
}
