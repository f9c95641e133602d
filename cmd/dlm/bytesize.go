package main

import (
	"fmt"
	"strconv"
	"strings"
)

// byteSize is a flag holding a byte count written as 1048576, 64MiB, 1GiB,
// 512KiB (or KB/MB/GB, read as powers of 1024 too: nobody sizes disks in
// this flag to the byte).
type byteSize struct{ n *int64 }

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"TB", 1 << 40},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

func (b byteSize) String() string {
	if b.n == nil {
		return ""
	}
	v := *b.n
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v != 0 && v%u.mult == 0 {
			return strconv.FormatInt(v/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(v, 10)
}

func (b byteSize) Set(s string) error {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return fmt.Errorf("%q is not a size (examples: 1048576, 512KiB, 64MiB, 1GiB)", s)
	}
	*b.n = v * mult
	return nil
}

// humanBytes rounds a byte count for people: 78.2 GiB.
func humanBytes(v int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v >= u.mult {
			return fmt.Sprintf("%.1f %s", float64(v)/float64(u.mult), u.suffix)
		}
	}
	return fmt.Sprintf("%d bytes", v)
}
