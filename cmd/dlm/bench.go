package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/dlm/dlm/client"
)

// benchData is what one cycle appends: 32 bytes, so that files grow at a
// known rate.
const benchData = 32

// runBench measures whole lock cycles per second: N sessions each loop
// acquire → append 32 bytes → release, contending for the one lock, for a
// fixed time. It prints one result line.
func runBench(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "[flags]", "Runs N clients through lock cycles and prints cycles/s and cycle latency.", stderr)
	cf := addClientFlags(fs)
	workload := fs.String("workload", "cycle", "what each client repeats; cycle = acquire, append 32 bytes to file_(client%100), release")
	clients := fs.Int("clients", 8, "number of concurrent clients, each with its own session")
	duration := fs.Duration("duration", 10*time.Second, "how long to run")
	lease := fs.Duration("lease", 0, "session lease (0: the server's default)")
	output := addOutputFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *workload != "cycle":
		return fmt.Errorf("bench: unknown workload %q (supported: cycle)", *workload)
	case *clients < 1:
		return errors.New("bench: --clients must be at least 1")
	case *duration <= 0:
		return errors.New("bench: --duration must be positive")
	}

	sessions := make([]*client.Client, *clients)
	for i := range sessions {
		c, err := cf.open(ctx, stderr, client.WithName(fmt.Sprintf("bench-%d", i)), client.WithLease(*lease))
		if err != nil {
			for _, o := range sessions[:i] {
				_ = closeClient(ctx, o)
			}
			return fmt.Errorf("bench: open session %d: %w", i, err)
		}
		sessions[i] = c
	}
	defer func() {
		var wg sync.WaitGroup
		for _, c := range sessions {
			wg.Go(func() { _ = closeClient(ctx, c) })
		}
		wg.Wait()
	}()

	runCtx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	results := make([]benchResult, len(sessions))
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range sessions {
		wg.Go(func() { results[i] = benchCycles(runCtx, c, i) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return ctx.Err()
	}

	var (
		latencies []time.Duration
		errs      int
		lastErr   error
	)
	for _, r := range results {
		latencies = append(latencies, r.latencies...)
		errs += r.errors
		if r.lastErr != nil {
			lastErr = r.lastErr
		}
	}
	slices.Sort(latencies)
	if *output == outputJSON {
		res := benchReport{
			Workload: *workload, Clients: *clients, DurationSeconds: duration.Seconds(),
			Cycles: len(latencies), CyclesPerSecond: float64(len(latencies)) / elapsed.Seconds(),
			P50Ms: msFloat(percentile(latencies, 50)), P99Ms: msFloat(percentile(latencies, 99)), Errors: errs,
		}
		if lastErr != nil {
			res.LastError = errLine(lastErr)
		}
		return writeJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "%s clients=%d duration=%v cycles=%d %.1f cycles/s p50=%s p99=%s errors=%d\n",
		*workload, *clients, *duration, len(latencies), float64(len(latencies))/elapsed.Seconds(),
		ms(percentile(latencies, 50)), ms(percentile(latencies, 99)), errs)
	if lastErr != nil {
		fmt.Fprintf(stderr, "last error: %v\n", lastErr)
	}
	return nil
}

// benchReport is bench's result for --output json.
type benchReport struct {
	Workload        string  `json:"workload"`
	Clients         int     `json:"clients"`
	DurationSeconds float64 `json:"duration_seconds"`
	Cycles          int     `json:"cycles"`
	CyclesPerSecond float64 `json:"cycles_per_second"`
	P50Ms           float64 `json:"p50_ms"`
	P99Ms           float64 `json:"p99_ms"`
	Errors          int     `json:"errors"`
	LastError       string  `json:"last_error,omitempty"`
}

func msFloat(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type benchResult struct {
	latencies []time.Duration
	errors    int
	lastErr   error
}

// benchCycles runs cycles until ctx ends. A cycle that got the lock is
// finished even past the end, so that no section is left open; only whole
// cycles count.
func benchCycles(ctx context.Context, c *client.Client, i int) benchResult {
	var r benchResult
	file := fmt.Sprintf("file_%d", i%100)
	for n := 0; ctx.Err() == nil; n++ {
		data := fmt.Appendf(nil, "%-*s\n", benchData-1, fmt.Sprintf("bench c%d #%d", i, n))[:benchData]
		data[benchData-1] = '\n'
		t0 := time.Now()
		lk, err := c.Acquire(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.errors++
				r.lastErr = err
				pause(ctx)
			}
			continue
		}
		finish := context.WithoutCancel(ctx)
		if err := lk.Append(finish, file, data); err != nil {
			_ = lk.Abort(finish)
			r.errors++
			r.lastErr = err
			continue
		}
		if err := lk.Release(finish); err != nil {
			r.errors++
			r.lastErr = err
			continue
		}
		r.latencies = append(r.latencies, time.Since(t0))
	}
	return r
}

// pause keeps a client whose calls fail at once from spinning.
func pause(ctx context.Context) {
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// percentile returns the p-th percentile (nearest rank) of sorted values.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100
	return sorted[max(rank, 1)-1]
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
