// Command benchplot draws the plots of docs/BENCHMARKS.md from the JSON
// lines of `dlm bench --output json`: cycles/s and cycle p99 against the
// number of clients, one line per system and cluster size. It is a
// separate command, not a `dlm bench` subcommand, so that the plotting
// library and its fonts stay out of the dlm binary.
//
//	go run ./internal/benchplot [-out docs/bench] [-compare OTHER.jsonl] RUN.jsonl...
//	go run ./internal/benchplot -out docs/bench -groups GROUPS.txt
//
// -groups reads the `go test -bench Groups` output of internal/groupsim
// and draws groups.svg: cycles/s against the number of Raft groups
// (docs/SCALING.md).
//
// Lines of other workloads are skipped. A line may name its "system"
// (default "dlm"), so that figures of other lock services (written by hand
// from their own benchmarks, as in docs/bench/elsewhere.jsonl) share the
// axes; several lines for one point (repeated runs) plot their median.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// point is one cycle result: who, how many nodes and clients, and the two
// figures plotted.
type point struct {
	System   string `json:"system"`
	Workload string `json:"workload"`
	// Stage marks dlm cycles whose append rode with the release.
	Stage        bool     `json:"stage"`
	Nodes        int      `json:"nodes"`
	Clients      int      `json:"clients"`
	CyclesPerSec float64  `json:"cycles_per_second"`
	P99Ms        *float64 `json:"p99_ms"`
}

type seriesKey struct {
	system string
	nodes  int
}

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("benchplot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "docs/bench", "folder for the plots (cycles.svg, p99.svg)")
	format := fs.String("format", "svg", "svg, or png to look at them where nothing shows an SVG")
	var compare []string
	fs.Func("compare", "JSON lines of other systems' cycle figures, drawn dashed (repeatable)", func(s string) error {
		compare = append(compare, s)
		return nil
	})
	groups := fs.String("groups", "", "`go test -bench Groups` output of internal/groupsim: draws groups.svg")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *format != "svg" && *format != "png" {
		return fmt.Errorf("-format %q: svg or png", *format)
	}
	if *groups != "" {
		gp, err := readGroups(*groups)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
		if err := drawGroups(gp, filepath.Join(*out, "groups."+*format)); err != nil {
			return err
		}
		if fs.NArg() == 0 && len(compare) == 0 {
			return nil
		}
	}
	if fs.NArg() == 0 {
		return errors.New("no input: give the files of `dlm bench --output json` lines")
	}
	var pts []point
	for _, name := range append(fs.Args(), compare...) {
		p, err := readPoints(name)
		if err != nil {
			return err
		}
		pts = append(pts, p...)
	}
	if len(pts) == 0 {
		return errors.New("no cycle lines in the input")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := drawFigure(pts, "Lock cycles per second (acquire, append 32 B, release)", "cycles/s",
		func(p point) (float64, bool) { return p.CyclesPerSec, p.CyclesPerSec > 0 }, filepath.Join(*out, "cycles."+*format)); err != nil {
		return err
	}
	return drawFigure(pts, "Cycle latency p99", "p99 (ms)",
		func(p point) (float64, bool) {
			if p.P99Ms == nil {
				return 0, false
			}
			return *p.P99Ms, true
		}, filepath.Join(*out, "p99."+*format))
}

// readPoints reads the cycle lines of one file of JSON lines.
func readPoints(name string) ([]point, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pts []point
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // a progress or log line that reached the file
		}
		var p point
		if err := json.Unmarshal(line, &p); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if p.Workload != "cycle" {
			continue
		}
		if p.System == "" {
			p.System = "dlm"
			if p.Stage {
				p.System = "dlm stage+release"
			}
		}
		if p.Nodes == 0 {
			p.Nodes = 1 // a --server run: the cluster's size is not known
		}
		pts = append(pts, p)
	}
	return pts, sc.Err()
}

// drawFigure plots one figure against clients, one line per system and cluster
// size, on a log x axis with a tick at every client count.
func drawFigure(pts []point, title, ylabel string, value func(point) (float64, bool), path string) error {
	byKey := make(map[seriesKey]map[int][]float64)
	var clients []int
	for _, p := range pts {
		v, ok := value(p)
		if !ok {
			continue
		}
		k := seriesKey{p.System, p.Nodes}
		if byKey[k] == nil {
			byKey[k] = make(map[int][]float64)
		}
		byKey[k][p.Clients] = append(byKey[k][p.Clients], v)
		if !slices.Contains(clients, p.Clients) {
			clients = append(clients, p.Clients)
		}
	}
	slices.Sort(clients)
	keys := make([]seriesKey, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	// dlm first, then the others by name; fewer nodes first.
	slices.SortFunc(keys, func(a, b seriesKey) int {
		if (a.system == "dlm") != (b.system == "dlm") {
			if a.system == "dlm" {
				return -1
			}
			return 1
		}
		if a.system != b.system {
			if a.system < b.system {
				return -1
			}
			return 1
		}
		return a.nodes - b.nodes
	})

	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "clients"
	p.Y.Label.Text = ylabel
	p.X.Scale = plot.LogScale{}
	var ticks []plot.Tick
	for _, c := range clients {
		ticks = append(ticks, plot.Tick{Value: float64(c), Label: strconv.Itoa(c)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min = 0
	// The legend is drawn below the axes, where it hides no line.
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	p.Add(plotter.NewGrid())
	for i, k := range keys {
		var xys plotter.XYs
		for _, c := range clients {
			if vs := byKey[k][c]; len(vs) > 0 {
				xys = append(xys, plotter.XY{X: float64(c), Y: median(vs)})
			}
		}
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		s.Color = plotutil.Color(i)
		s.Shape = plotutil.Shape(i)
		if !strings.HasPrefix(k.system, "dlm") {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l, s)
		name := fmt.Sprintf("%s, %d node", k.system, k.nodes)
		if k.nodes != 1 {
			name += "s"
		}
		legend.Add(name, l, s)
	}
	return save(p, legend, len(keys), path)
}

// save writes the plot with its legend under it, in the format the
// file's extension names.
func save(p *plot.Plot, legend plot.Legend, entries int, path string) error {
	width, height := 16*vg.Centimeter, 10*vg.Centimeter
	legendHeight := vg.Length(entries)*legend.TextStyle.Height("M")*0.65 + 0.3*vg.Centimeter
	c, err := draw.NewFormattedCanvas(width, height+legendHeight, strings.TrimPrefix(filepath.Ext(path), "."))
	if err != nil {
		return err
	}
	dc := draw.New(c)
	p.Draw(draw.Crop(dc, 0, 0, legendHeight, 0))
	legend.Draw(draw.Crop(dc, 0.5*vg.Centimeter, 0, 0, -height))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
