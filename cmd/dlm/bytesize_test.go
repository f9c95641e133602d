package main

import "testing"

func TestByteSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "512KiB": 512 << 10, "64MiB": 64 << 20, "64 MiB": 64 << 20,
		"1GiB": 1 << 30, "2G": 2 << 30, "3MB": 3 << 20, "7B": 7,
	} {
		var n int64
		if err := (byteSize{&n}).Set(in); err != nil || n != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, n, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "MiB", "12XB", "99999999999TiB"} {
		var n int64
		if err := (byteSize{&n}).Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, n)
		}
	}
	n := int64(192 << 20)
	if got := (byteSize{&n}).String(); got != "192MiB" {
		t.Errorf("String() = %q, want 192MiB", got)
	}
}
