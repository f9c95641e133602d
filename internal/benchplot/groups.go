package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// groupPoint is one sub-benchmark result of internal/groupsim's
// BenchmarkGroups: its workload (the part of the name before /G=, if any),
// the number of groups and the cycles per second.
type groupPoint struct {
	mode         string
	groups       int
	cyclesPerSec float64
}

// groupLine matches `go test -bench` result lines of BenchmarkGroups, as
// BenchmarkGroups/G=4-2 or BenchmarkGroups/own/replicas=1/G=4-2 (the
// workload "own/replicas=1").
var groupLine = regexp.MustCompile(`^BenchmarkGroups/(?:(\S+)/)?G=(\d+)(?:-\d+)?\s`)

// readGroups reads the BenchmarkGroups lines of a `go test -bench` output.
func readGroups(name string) ([]groupPoint, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pts []groupPoint
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		m := groupLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		g, _ := strconv.Atoi(m[2])
		fields := strings.Fields(sc.Text())
		cps := -1.0
		for i := 1; i < len(fields); i++ {
			if fields[i] == "cycles/s" {
				if cps, err = strconv.ParseFloat(fields[i-1], 64); err != nil {
					return nil, fmt.Errorf("%s:%d: cycles/s %q: %w", name, n, fields[i-1], err)
				}
			}
		}
		if cps < 0 {
			return nil, fmt.Errorf("%s:%d: a BenchmarkGroups line without cycles/s", name, n)
		}
		pts = append(pts, groupPoint{mode: m[1], groups: g, cyclesPerSec: cps})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(pts) == 0 {
		return nil, fmt.Errorf("%s: no BenchmarkGroups lines", name)
	}
	return pts, nil
}

// drawGroups plots cycles/s against the number of groups (medians of
// repeated runs), one line per workload, each with a dashed line of G times
// its median at G = 1: what perfect scaling would give.
func drawGroups(pts []groupPoint, path string) error {
	byMode := make(map[string]map[int][]float64)
	var modes []string
	var groups []int
	for _, p := range pts {
		if byMode[p.mode] == nil {
			byMode[p.mode] = make(map[int][]float64)
			modes = append(modes, p.mode)
		}
		byMode[p.mode][p.groups] = append(byMode[p.mode][p.groups], p.cyclesPerSec)
		if !slices.Contains(groups, p.groups) {
			groups = append(groups, p.groups)
		}
	}
	slices.Sort(groups)
	p := plot.New()
	p.Title.Text = "Lock cycles per second over G Raft groups in one process"
	p.X.Label.Text = "groups"
	p.Y.Label.Text = "cycles/s"
	p.X.Scale = plot.LogScale{}
	var ticks []plot.Tick
	for _, g := range groups {
		ticks = append(ticks, plot.Tick{Value: float64(g), Label: strconv.Itoa(g)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min = 0
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	p.Add(plotter.NewGrid())
	entries := 0
	for i, mode := range modes {
		var xys, ideal plotter.XYs
		for _, g := range groups {
			if vs := byMode[mode][g]; len(vs) > 0 {
				xys = append(xys, plotter.XY{X: float64(g), Y: median(vs)})
			}
		}
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		l.Color, s.Color, s.Shape = plotutil.Color(i), plotutil.Color(i), plotutil.Shape(i)
		p.Add(l, s)
		name := "measured"
		if mode != "" {
			name = mode + ", measured"
		}
		legend.Add(name, l, s)
		entries++
		if base := byMode[mode][1]; len(base) > 0 {
			for _, g := range groups {
				ideal = append(ideal, plotter.XY{X: float64(g), Y: float64(g) * median(base)})
			}
			il, err := plotter.NewLine(ideal)
			if err != nil {
				return err
			}
			il.Color = plotutil.Color(i)
			il.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			p.Add(il)
			ideal := "G × (G = 1)"
			if mode != "" {
				ideal = mode + ", " + ideal
			}
			legend.Add(ideal, il)
			entries++
		}
	}
	// save's legend height is tuned for a few entries; these have two per
	// workload.
	return save(p, legend, entries+entries/3, path)
}
