package integration_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/internal/e2e"
)

// The benchmarks below run `dlm serve` as its own process, so that its CPU
// time and resident memory, read from /proc, are the server's alone, and
// drive it with the Go client from this process. Run them with, e.g.:
//
//	go test -run '^$' -bench 'PulseSessions|NoWaitWaiters' -benchtime 1x ./client/integration/
//
// DLM_BENCH_N sets the number of sessions or waiters (default 10000),
// DLM_BENCH_WINDOW the CPU measuring window (default 20s: two keepalive
// periods of a 30s lease).

var (
	benchBinOnce sync.Once
	benchBin     string
	benchBinErr  error
)

func benchServer(b *testing.B) *e2e.Node {
	b.Helper()
	benchBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dlm-bench-bin")
		if err != nil {
			benchBinErr = err
			return
		}
		benchBin, benchBinErr = e2e.Build(dir)
	})
	if benchBinErr != nil {
		b.Fatalf("build dlm: %v", benchBinErr)
	}
	c := e2e.NewSingle(benchBin, b.TempDir(), "--init-rate", "0", "--max-sessions", "0")
	if err := c.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Kill)
	return c.Node("n1")
}

func benchN(b *testing.B) int {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("DLM_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	return n
}

// procCPU is the process's user and system CPU time.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command's closing parenthesis; utime and stime
	// are the 14th and 15th of the whole line, in clock ticks (100 Hz).
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// procRSS is the process's resident memory in bytes.
func procRSS(b *testing.B, pid int) int64 {
	b.Helper()
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// openClients opens n sessions, a few at a time, the i-th with opts(i).
func openClients(b *testing.B, url string, n int, opts func(i int) []client.Option) []*client.Client {
	b.Helper()
	cs := make([]*client.Client, n)
	var (
		wg     sync.WaitGroup
		next   atomic.Int64
		failed atomic.Value
	)
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				c, err := client.New(ctx, []string{url}, opts(i)...)
				cancel()
				if err != nil {
					failed.Store(err)
					return
				}
				cs[i] = c
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatalf("open sessions: %v", err)
	}
	b.Cleanup(func() {
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c.Close(ctx)
			})
		}
		wg.Wait()
	})
	return cs
}

// BenchmarkPulseSessions keeps N idle sessions (30s leases, a keepalive
// every 10s) alive over the process's Pulse stream and reports the server's
// CPU use and resident memory.
func BenchmarkPulseSessions(b *testing.B) {
	window := 20 * time.Second
	if v, err := time.ParseDuration(os.Getenv("DLM_BENCH_WINDOW")); err == nil && v > 0 {
		window = v
	}
	for range b.N {
		srv := benchServer(b)
		n := benchN(b)
		pid := srv.Pid()
		rss0 := procRSS(b, pid)
		cs := openClients(b, srv.URL(), n, func(int) []client.Option { return []client.Option{client.WithLease(30 * time.Second)} })
		// Let the opening burst settle, then measure whole keepalive periods.
		time.Sleep(2 * time.Second)
		cpu0, t0 := procCPU(b, pid), time.Now()
		time.Sleep(window)
		cpu := procCPU(b, pid) - cpu0
		elapsed := time.Since(t0)
		rss := procRSS(b, pid)
		st, err := cs[0].Status(context.Background(), true)
		if err != nil {
			b.Fatal(err)
		}
		if int(st.GetSessionCount()) != n {
			b.Fatalf("%d sessions alive, want %d", st.GetSessionCount(), n)
		}
		pct := 100 * cpu.Seconds() / elapsed.Seconds()
		b.ReportMetric(pct, "server-cpu-%")
		b.ReportMetric(float64(rss)/(1<<20), "server-rss-MiB")
		b.ReportMetric(float64(rss-rss0)/(1<<20), "rss-growth-MiB")
		b.Logf("%d sessions: server CPU %.1f%% of one core over %v, RSS %.1f MiB (%.1f MiB at start)", n, pct, elapsed.Round(time.Second), float64(rss)/(1<<20), float64(rss0)/(1<<20))
	}
}

// position records the queue position a waiting client logs when the
// service first answers "queued": as nobody leaves the queue before the
// release, it is the waiter's exact place in it.
type position struct {
	p      atomic.Int64
	once   sync.Once
	queued chan struct{}
}

func (h *position) Enabled(context.Context, slog.Level) bool { return true }
func (h *position) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "dlm: waiting for the lock" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "position" && a.Value.Kind() == slog.KindUint64 {
			h.p.CompareAndSwap(0, int64(a.Value.Uint64()))
			h.once.Do(func() { close(h.queued) })
		}
		return true
	})
	return nil
}
func (h *position) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *position) WithGroup(string) slog.Handler      { return h }

// BenchmarkNoWaitWaiters queues N waiters behind one holder, reports the
// server's memory growth, then releases and checks that the lock passes
// through the queue in exactly its order.
func BenchmarkNoWaitWaiters(b *testing.B) {
	for range b.N {
		srv := benchServer(b)
		n := benchN(b)
		pid := srv.Pid()
		rss0 := procRSS(b, pid)
		holder := openClients(b, srv.URL(), 1, func(int) []client.Option { return nil })[0]
		lk, err := holder.Acquire(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		pos := make([]*position, n)
		for i := range pos {
			pos[i] = &position{queued: make(chan struct{})}
		}
		cs := openClients(b, srv.URL(), n, func(i int) []client.Option {
			return []client.Option{client.WithLease(30 * time.Second), client.WithLogger(slog.New(pos[i]))}
		})
		rssSessions := procRSS(b, pid)
		type grant struct {
			i     int
			order int64
			err   error
		}
		var order atomic.Int64
		grants := make(chan grant, n)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		var released sync.WaitGroup
		defer released.Wait()
		// A few waiters join at a time, as they would over a while: ten
		// thousand first requests at once would only measure Raft's queue.
		joining := make(chan struct{}, 64)
		for i, c := range cs {
			released.Add(1)
			joining <- struct{}{}
			go func() {
				defer released.Done()
				go func() {
					select {
					case <-pos[i].queued:
					case <-ctx.Done():
					}
					<-joining
				}()
				lk, err := c.Acquire(ctx)
				if err != nil {
					grants <- grant{i: i, err: err}
					return
				}
				g := grant{i: i, order: order.Add(1)}
				grants <- g
				if err := lk.Release(ctx); err != nil {
					b.Errorf("release: %v", err)
				}
			}()
		}
		// Its own connection: the waiters' requests fill theirs.
		reader, err := client.NewReader([]string{srv.URL()})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for {
			st, err := reader.Status(ctx, false)
			if err != nil {
				b.Fatal(err)
			}
			if st.GetLock().GetQueueLength() == uint64(n) {
				break
			}
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("only %d of %d waiters queued", st.GetLock().GetQueueLength(), n)
			}
			time.Sleep(100 * time.Millisecond)
		}
		queued := time.Since(start)
		time.Sleep(2 * time.Second)
		rss := procRSS(b, pid)
		b.ReportMetric(float64(rss)/(1<<20), "server-rss-MiB")
		b.ReportMetric(float64(rss-rss0)/(1<<20), "rss-growth-MiB")
		b.ReportMetric(float64(rss-rssSessions)/float64(n), "waiting-B/waiter")
		b.Logf("%d waiters queued in %v: server RSS %.1f MiB (%.1f at start, %.1f with the sessions open)", n, queued.Round(time.Millisecond), float64(rss)/(1<<20), float64(rss0)/(1<<20), float64(rssSessions)/(1<<20))
		t0 := time.Now()
		if err := lk.Release(ctx); err != nil {
			b.Fatal(err)
		}
		got := make([]grant, 0, n)
		for range n {
			select {
			case g := <-grants:
				if g.err != nil {
					b.Fatalf("waiter %d: %v", g.i, g.err)
				}
				got = append(got, g)
			case <-ctx.Done():
				b.Fatalf("%d of %d grants", len(got), n)
			}
		}
		for _, g := range got {
			if p := pos[g.i].p.Load(); p != g.order {
				b.Fatalf("waiter %d queued at position %d was granted %d-th: not FIFO", g.i, p, g.order)
			}
		}
		b.ReportMetric(float64(n)/time.Since(t0).Seconds(), "handoffs/s")
		b.Logf("FIFO kept for %d grants (%v)", n, time.Since(t0).Round(time.Millisecond))
	}
}
