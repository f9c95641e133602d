package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// benchFloor is what this machine allows, measured in the same run: F, one
// durable 32-byte write (fdatasync) on a preallocated file, as raft-wal
// writes its segments; FAppend, the same on a file that grows; R, one
// loopback HTTP/2 unary round trip to a handler that does nothing.
type benchFloor struct {
	F, FAppend, R time.Duration
}

// unit is the least one durable call can cost: one round trip and one
// write. Latencies are also given in these units.
func (f benchFloor) unit() time.Duration { return f.F + f.R }

// ratio is d in floor units.
func (f benchFloor) ratio(d time.Duration) float64 {
	if f.unit() <= 0 {
		return 0
	}
	return float64(d) / float64(f.unit())
}

// measureFloor measures F and R for about d each (at least a few hundred
// samples, so that a short run still has a median).
func measureFloor(ctx context.Context, dir string, d time.Duration) (benchFloor, error) {
	var f benchFloor
	var err error
	if f.F, err = fsyncFloor(dir, d, true); err != nil {
		return f, err
	}
	if f.FAppend, err = fsyncFloor(dir, d, false); err != nil {
		return f, err
	}
	if f.R, err = roundTripFloor(ctx, d); err != nil {
		return f, err
	}
	return f, nil
}

func fsyncFloor(dir string, d time.Duration, prealloc bool) (time.Duration, error) {
	const size = 64 << 20
	file, err := os.CreateTemp(dir, "floor-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(file.Name())
	defer file.Close()
	if prealloc {
		if err := syscall.Fallocate(int(file.Fd()), 0, 0, size); err != nil {
			return 0, fmt.Errorf("preallocate %s: %w", file.Name(), err)
		}
		// The allocation itself is metadata: make it durable first, as
		// raft-wal does when it creates a segment.
		if err := file.Sync(); err != nil {
			return 0, err
		}
	}
	rec := bytes.Repeat([]byte("x"), benchData)
	var samples []time.Duration
	start := time.Now()
	for off := int64(0); off+benchData <= size && (len(samples) < 200 || time.Since(start) < d) && len(samples) < 100000; off += benchData {
		t0 := time.Now()
		if _, err := file.WriteAt(rec, off); err != nil {
			return 0, err
		}
		if err := syscall.Fdatasync(int(file.Fd())); err != nil {
			return 0, err
		}
		samples = append(samples, time.Since(t0))
	}
	slices.Sort(samples)
	return percentile(samples, 50), nil
}

// floorHandler answers Status with an empty message and does nothing
// else: what a call costs the machine when the server's work is free.
type floorHandler struct {
	dlmv1connect.UnimplementedLockServiceHandler
}

func (floorHandler) Status(context.Context, *connect.Request[dlmv1.StatusRequest]) (*connect.Response[dlmv1.StatusResponse], error) {
	return connect.NewResponse(&dlmv1.StatusResponse{}), nil
}

func roundTripFloor(ctx context.Context, d time.Duration) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	mux := http.NewServeMux()
	mux.Handle(dlmv1connect.NewLockServiceHandler(floorHandler{}))
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	hc := benchHTTPClient(nil)
	defer hc.CloseIdleConnections()
	api := dlmv1connect.NewLockServiceClient(hc, "http://"+ln.Addr().String())
	return timeCalls(ctx, d, func(ctx context.Context) error {
		_, err := api.Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{}))
		return err
	})
}

// healthRoundTrip times the server's own health check (gRPC health over
// the Connect protocol, an empty request): R plus what the server adds to
// any call before its handler.
func healthRoundTrip(ctx context.Context, hc *http.Client, url string, d time.Duration) (time.Duration, error) {
	url = strings.TrimRight(url, "/") + "/grpc.health.v1.Health/Check"
	return timeCalls(ctx, d, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, http.NoBody)
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/proto")
		res, err := hc.Do(req)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("health check: %s", res.Status)
		}
		return nil
	})
}

// timeCalls returns the median of call's durations over about d (after a
// few warm-up calls that open the connection).
func timeCalls(ctx context.Context, d time.Duration, call func(context.Context) error) (time.Duration, error) {
	for range 10 {
		if err := call(ctx); err != nil {
			return 0, err
		}
	}
	var samples []time.Duration
	start := time.Now()
	for (len(samples) < 200 || time.Since(start) < d) && len(samples) < 100000 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		t0 := time.Now()
		if err := call(ctx); err != nil {
			return 0, err
		}
		samples = append(samples, time.Since(t0))
	}
	slices.Sort(samples)
	return percentile(samples, 50), nil
}

// floorLine is the floor workload's line.
func (b *bench) floorLine(ctx context.Context) *benchLine {
	f := b.floor
	l := newBenchLine("floor").add("nodes", b.target.nodes()).
		add("f_ms", msFloat(f.F)).add("f_append_ms", msFloat(f.FAppend)).add("r_ms", msFloat(f.R))
	if eps := client.ParseEndpoints(b.cf.server); len(eps) > 0 {
		d, err := healthRoundTrip(ctx, b.shared, eps[0], min(b.duration/4, 2*time.Second))
		if err != nil {
			fmt.Fprintf(b.stderr, "bench: the server's health check: %v\n", err)
		} else {
			l.add("r_server_ms", msFloat(d)).add("r_server_floor_units", float64(d)/float64(f.R))
		}
	}
	// What the targets name: a one-client cycle of two durable
	// calls, a contended hand-off of one write and three round trips.
	return l.add("one_client_cycles_per_second", 1/(2*f.F+2*f.R).Seconds()).
		add("contended_cycles_per_second", 1/(f.F+3*f.R).Seconds())
}

// procCPU is the CPU time (user + system) the processes have used so far.
func procCPU(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			return 0, err
		}
		// The command name may hold spaces: fields are counted after it.
		_, rest, ok := strings.Cut(string(b), ") ")
		if !ok {
			return 0, errors.New("unexpected /proc stat of " + strconv.Itoa(pid))
		}
		f := strings.Fields(rest)
		if len(f) < 13 {
			return 0, errors.New("short /proc stat of " + strconv.Itoa(pid))
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		// USER_HZ is 100 on every Linux architecture Go runs on.
		total += time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return total, nil
}

// procRSS is the largest resident set among the processes.
func procRSS(pids []int) (int64, error) {
	var most int64
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
		if err != nil {
			return 0, err
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("VmRSS of %d: %w", pid, err)
				}
				most = max(most, kb<<10)
			}
		}
	}
	return most, nil
}

// cpuMeter measures the servers' CPU over a window; it measures nothing
// when their process ids are unknown.
type cpuMeter struct {
	pids  []int
	start time.Duration
	at    time.Time
}

func (b *bench) startCPU() *cpuMeter {
	m := &cpuMeter{pids: b.target.pids(), at: time.Now()}
	if len(m.pids) == 0 {
		return m
	}
	var err error
	if m.start, err = procCPU(m.pids); err != nil {
		fmt.Fprintf(b.stderr, "bench: server CPU: %v\n", err)
		m.pids = nil
	}
	return m
}

// used is the CPU time since start, ok false when unknown.
func (m *cpuMeter) used() (cpu, wall time.Duration, ok bool) {
	if len(m.pids) == 0 {
		return 0, 0, false
	}
	now, err := procCPU(m.pids)
	if err != nil {
		return 0, 0, false
	}
	return now - m.start, time.Since(m.at), true
}

// addCPU adds the servers' CPU %, and per operation, to l.
func (m *cpuMeter) addCPU(l *benchLine, ops int, per string) {
	cpu, wall, ok := m.used()
	if !ok {
		return
	}
	l.add("server_cpu_percent", 100*cpu.Seconds()/wall.Seconds())
	if ops > 0 {
		l.add("server_cpu_ms_per_"+per, msFloat(cpu)/float64(ops))
	}
}

func (b *bench) rss() (int64, bool) {
	pids := b.target.pids()
	if len(pids) == 0 {
		return 0, false
	}
	r, err := procRSS(pids)
	if err != nil {
		fmt.Fprintf(b.stderr, "bench: server RSS: %v\n", err)
		return 0, false
	}
	return r, true
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
