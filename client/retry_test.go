package client

import (
	"slices"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	for n := 1; n <= 40; n++ {
		ceiling := min(backoffBase<<min(n-1, 20), backoffMax)
		for range 200 {
			d := backoff(n)
			if d < ceiling/2 || d > ceiling {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, ceiling/2, ceiling)
			}
		}
	}
	if got := backoff(0); got > backoffBase {
		t.Errorf("backoff(0) = %v, want at most %v", got, backoffBase)
	}
}

func TestBackoffIsJittered(t *testing.T) {
	seen := make(map[time.Duration]bool)
	for range 50 {
		seen[backoff(5)] = true
	}
	if len(seen) < 10 {
		t.Errorf("50 draws of backoff(5) gave only %d values", len(seen))
	}
}

func TestParseEndpoints(t *testing.T) {
	for in, want := range map[string][]string{
		"http://127.0.0.1:7070":              {"http://127.0.0.1:7070"},
		"127.0.0.1:7070, 127.0.0.1:7071/":    {"http://127.0.0.1:7070", "http://127.0.0.1:7071"},
		"https://a.example/dlm/,,http://b:1": {"https://a.example/dlm", "http://b:1"},
		"":                                   nil,
		" , ":                                nil,
		"http://[::1]:7070,http://127.0.0.1:7072///": {"http://[::1]:7070", "http://127.0.0.1:7072"},
	} {
		if got := ParseEndpoints(in); !slices.Equal(got, want) {
			t.Errorf("ParseEndpoints(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidateEndpoint(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:7070", "https://dlm.example"} {
		if err := validateEndpoint(ok); err != nil {
			t.Errorf("validateEndpoint(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"127.0.0.1:7070", "ftp://x", "http://", "::"} {
		if validateEndpoint(bad) == nil {
			t.Errorf("validateEndpoint(%q) accepted it", bad)
		}
	}
}

func TestSessionAckedBelow(t *testing.T) {
	s := newSession(1, "secret", time.Second, time.Now())
	if got := s.ackedBelow(); got != 1 {
		t.Fatalf("fresh session acks below %d, want 1", got)
	}
	a, b, c := s.begin(), s.begin(), s.begin()
	if a != 1 || b != 2 || c != 3 {
		t.Fatalf("sequence numbers %d %d %d, want 1 2 3", a, b, c)
	}
	if got := s.ackedBelow(); got != 1 {
		t.Errorf("with 1..3 in flight, acked below %d, want 1", got)
	}
	s.end(b)
	if got := s.ackedBelow(); got != 1 {
		t.Errorf("with 1 and 3 in flight, acked below %d, want 1", got)
	}
	s.end(a)
	if got := s.ackedBelow(); got != 3 {
		t.Errorf("with 3 in flight, acked below %d, want 3", got)
	}
	s.end(c)
	if got := s.ackedBelow(); got != 4 {
		t.Errorf("with nothing in flight, acked below %d, want 4 (the next number)", got)
	}
	s.end(c) // finishing twice is harmless
	if got := s.begin(); got != 4 {
		t.Errorf("next number %d, want 4", got)
	}
}

func TestSessionLeaseTracking(t *testing.T) {
	t0 := time.Now()
	s := newSession(1, "x", 300*time.Millisecond, t0)
	if silence, lease := s.silentFor(t0.Add(100 * time.Millisecond)); silence != 100*time.Millisecond || lease != 300*time.Millisecond {
		t.Errorf("silentFor = %v, %v", silence, lease)
	}
	s.renewed(t0.Add(50*time.Millisecond), time.Second)
	s.renewed(t0.Add(10*time.Millisecond), 0) // a late answer to an older request
	if silence, lease := s.silentFor(t0.Add(100 * time.Millisecond)); silence != 50*time.Millisecond || lease != time.Second {
		t.Errorf("after renewals silentFor = %v, %v; want 50ms, 1s", silence, lease)
	}
}
