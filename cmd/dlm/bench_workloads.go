package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/internal/e2e"
)

// cycleRecord is one whole cycle of one client, with the instants the
// hand-off is measured between.
type cycleRecord struct {
	token                           uint64
	started, granted, release, done time.Time // acquire called, acquire returned, release called, release returned
}

type cycleResult struct {
	records []cycleRecord
	errors  int
	lastErr error
}

// openMany opens n sessions, at most 64 at a time, and fails if any
// fails.
func (b *bench) openMany(ctx context.Context, n int, prefix string, shared bool) ([]*client.Client, error) {
	sessions, failed, err := b.openSome(ctx, n, prefix, shared, nil)
	if failed > 0 {
		b.closeMany(ctx, sessions)
		return nil, fmt.Errorf("bench: open sessions: %d of %d failed: %w", failed, n, err)
	}
	return sessions, nil
}

// openSome opens n sessions, at most 64 at a time, and returns those that
// opened, how many did not and the last error: the workloads of many
// sessions report a server that cannot take them all.
func (b *bench) openSome(ctx context.Context, n int, prefix string, shared bool, opened *atomic.Int64) ([]*client.Client, int, error) {
	sessions := make([]*client.Client, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 64)
	if shared {
		b.growPool(n)
	}
	var wg sync.WaitGroup
	for i := range sessions {
		var hc *http.Client
		if shared {
			hc = b.pool[i/sessionsPerHTTP]
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			sessions[i], errs[i] = b.open(ctx, fmt.Sprintf("%s-%d", prefix, i), hc)
			if opened != nil && errs[i] == nil {
				opened.Add(1)
			}
		})
	}
	wg.Wait()
	var (
		ok      []*client.Client
		failed  int
		lastErr error
	)
	for i, c := range sessions {
		if errs[i] != nil {
			failed++
			lastErr = errs[i]
			continue
		}
		ok = append(ok, c)
	}
	if err := ctx.Err(); err != nil {
		b.closeMany(ctx, ok)
		return nil, n, err
	}
	return ok, failed, lastErr
}

// closeMany closes sessions, at most 64 at a time. An interrupted run
// closes none: thousands of closes to a server that stopped answering
// would hold the interrupt for minutes, and their leases end them anyway.
func (b *bench) closeMany(ctx context.Context, sessions []*client.Client) {
	if ctx.Err() != nil {
		return
	}
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, c := range sessions {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = closeClient(ctx, c)
		})
	}
	wg.Wait()
}

// runCycle runs n clients through cycles (acquire, append 32 B, release)
// for the run's duration. workload cycle reports cycles/s and cycle
// latency; handoff reports the time from one holder's release returning
// to the next waiter's acquire returning.
func (b *bench) runCycle(ctx context.Context, workload string, n int) (*benchLine, error) {
	sessions, err := b.openMany(ctx, n, "bench", false)
	if err != nil {
		return nil, err
	}
	defer b.closeMany(ctx, sessions)

	var done atomic.Int64
	stop := b.progress(fmt.Sprintf("%s clients=%d", workload, n), b.duration, func() string {
		return fmt.Sprintf("%d cycles", done.Load())
	})
	cpu := b.startCPU()
	runCtx, cancel := context.WithTimeout(ctx, b.duration)
	results := make([]cycleResult, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range sessions {
		lock := ""
		if b.locks > 0 && workload == "cycle" {
			lock = benchLockName(i % b.locks)
		}
		wg.Go(func() { results[i] = benchCycles(runCtx, c, i, b.stage, lock, &done) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	cancel()
	stop()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	var (
		records []cycleRecord
		errs    int
		lastErr error
	)
	for _, r := range results {
		records = append(records, r.records...)
		errs += r.errors
		if r.lastErr != nil {
			lastErr = r.lastErr
		}
	}
	cycles := len(records)
	rate := float64(cycles) / elapsed.Seconds()
	l := newBenchLine(workload).add("nodes", b.target.nodes()).add("clients", n).add("stage", b.stage)
	if b.locks > 0 && workload == "cycle" {
		l.add("locks", b.locks)
	}
	l.add("duration_seconds", b.duration.Seconds()).add("cycles", cycles)
	if workload == "cycle" {
		lat := make([]time.Duration, 0, cycles)
		for _, r := range records {
			lat = append(lat, r.done.Sub(r.started))
		}
		slices.Sort(lat)
		// The bounds: one client's cycle can be two durable calls
		// (acquire, append-and-release); a contended hand-off one write
		// and three round trips (release, the waiter's grant, its append).
		bound := 1 / (b.floor.F + 3*b.floor.R).Seconds()
		if n == 1 {
			bound = 1 / (2*b.floor.F + 2*b.floor.R).Seconds()
		}
		l.add("cycles_per_second", rate).add("floor_cycles_per_second", bound).add("vs_floor", rate/bound).
			add("p50_ms", msFloat(percentile(lat, 50))).add("p99_ms", msFloat(percentile(lat, 99))).
			add("p50_floor_units", b.floor.ratio(percentile(lat, 50))).add("p99_floor_units", b.floor.ratio(percentile(lat, 99)))
	} else {
		hand, fromCall, early := handoffs(records)
		l.add("cycles_per_second", rate).add("handoffs", len(hand)).add("grant_before_release_reply", early).
			add("p50_ms", msFloat(percentileFrac(hand, 50))).add("p99_ms", msFloat(percentileFrac(hand, 99))).
			add("p999_ms", msFloat(percentileFrac(hand, 99.9))).
			add("p50_floor_units", b.floor.ratio(percentileFrac(hand, 50))).add("p99_floor_units", b.floor.ratio(percentileFrac(hand, 99))).
			add("from_release_call_p50_ms", msFloat(percentileFrac(fromCall, 50))).add("from_release_call_p99_ms", msFloat(percentileFrac(fromCall, 99))).
			add("from_release_call_p50_floor_units", b.floor.ratio(percentileFrac(fromCall, 50)))
	}
	cpu.addCPU(l, cycles, "cycle")
	l.add("errors", errs)
	if lastErr != nil {
		l.add("last_error", errLine(lastErr))
	}
	return l, nil
}

// handoffs pairs each grant with the release before it, in fencing-token
// order, when the new holder was already waiting as that release returned,
// and returns the sorted times from the release's reply to the grant's.
// A grant may reach its waiter before the release's own reply reaches the
// releaser: those count as zero, and early says how many. fromCall is the
// same pairs timed from the release's call instead, which is never
// negative and holds the release's commit.
func handoffs(records []cycleRecord) (hand, fromCall []time.Duration, early int) {
	byToken := slices.Clone(records)
	slices.SortFunc(byToken, func(a, b cycleRecord) int {
		switch {
		case a.token < b.token:
			return -1
		case a.token > b.token:
			return 1
		}
		return 0
	})
	for i := 1; i < len(byToken); i++ {
		prev, next := byToken[i-1], byToken[i]
		if !next.started.Before(prev.done) {
			continue // not waiting: the lock was free when it asked
		}
		fromCall = append(fromCall, next.granted.Sub(prev.release))
		d := next.granted.Sub(prev.done)
		if d < 0 {
			early++
			d = 0
		}
		hand = append(hand, d)
	}
	slices.Sort(hand)
	slices.Sort(fromCall)
	return hand, fromCall, early
}

// benchLockName is the name of the i-th named lock of cycle --locks.
func benchLockName(i int) string { return fmt.Sprintf("bench-lock-%d", i) }

// benchCycles runs cycles until ctx ends. A cycle that got the lock is
// finished even past the end, so that no section is left open; only whole
// cycles count. With lock set, a cycle takes that named lock and releases
// it, with no append.
func benchCycles(ctx context.Context, c *client.Client, i int, stage bool, lock string, done *atomic.Int64) cycleResult {
	if lock != "" {
		return benchNamedCycles(ctx, c, lock, done)
	}
	var r cycleResult
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
		granted := time.Now()
		finish := context.WithoutCancel(ctx)
		add := lk.Append
		if stage {
			add = func(_ context.Context, file string, data []byte) error { return lk.Stage(file, data) }
		}
		if err := add(finish, file, data); err != nil {
			_ = lk.Abort(finish)
			r.errors++
			r.lastErr = err
			continue
		}
		release := time.Now()
		if err := lk.Release(finish); err != nil {
			r.errors++
			r.lastErr = err
			continue
		}
		r.records = append(r.records, cycleRecord{token: lk.Token(), started: t0, granted: granted, release: release, done: time.Now()})
		done.Add(1)
	}
	return r
}

// benchNamedCycles is benchCycles on a named lock: acquire, release.
func benchNamedCycles(ctx context.Context, c *client.Client, lock string, done *atomic.Int64) cycleResult {
	var r cycleResult
	for ctx.Err() == nil {
		t0 := time.Now()
		lk, err := c.Acquire(ctx, client.LockName(lock))
		if err != nil {
			if ctx.Err() == nil {
				r.errors++
				r.lastErr = err
				pause(ctx)
			}
			continue
		}
		granted := time.Now()
		if err := lk.Release(context.WithoutCancel(ctx)); err != nil {
			r.errors++
			r.lastErr = err
			continue
		}
		r.records = append(r.records, cycleRecord{token: lk.Token(), started: t0, granted: granted, release: granted, done: time.Now()})
		done.Add(1)
	}
	return r
}

// appendSection is the most one append run puts in a section; then it
// releases and takes the lock again, well below the server's limit.
const appendSection = 16 << 20

// runAppend measures appends of one size inside sections of one client:
// the time from the first append to the release's return (the release is
// counted: a client that stages appends sends them with it), acquires not.
func (b *bench) runAppend(ctx context.Context, size int) (*benchLine, error) {
	c, err := b.open(ctx, "bench-append", nil)
	if err != nil {
		return nil, fmt.Errorf("bench: open session: %w", err)
	}
	defer closeClient(ctx, c)
	data := make([]byte, size)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	perSection := max(appendSection/size, 1)
	var (
		appends, sections int
		inside            time.Duration
		count             atomic.Int64
	)
	stop := b.progress(fmt.Sprintf("append size=%d", size), b.duration, func() string {
		return fmt.Sprintf("%d appends", count.Load())
	})
	defer stop()
	cpu := b.startCPU()
	end := time.Now().Add(b.duration)
	for time.Now().Before(end) {
		lk, err := c.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("bench: append: acquire: %w", err)
		}
		file := fmt.Sprintf("file_%d", sections%100)
		t0 := time.Now()
		n := 0
		for ; n < perSection && time.Now().Before(end); n++ {
			if err := lk.Append(ctx, file, data); err != nil {
				_ = lk.Abort(context.WithoutCancel(ctx))
				return nil, fmt.Errorf("bench: append: %w", err)
			}
			count.Add(1)
		}
		if err := lk.Release(ctx); err != nil {
			return nil, fmt.Errorf("bench: append: release: %w", err)
		}
		inside += time.Since(t0)
		appends += n
		sections++
	}
	rate := float64(appends) / inside.Seconds()
	per := time.Duration(float64(time.Second) / rate)
	l := newBenchLine("append").add("nodes", b.target.nodes()).add("size", size).
		add("duration_seconds", b.duration.Seconds()).add("appends", appends).add("sections", sections).
		add("appends_per_second", rate).add("mb_per_second", rate*float64(size)/1e6).
		add("per_append_ms", msFloat(per)).add("per_append_floor_units", b.floor.ratio(per))
	cpu.addCPU(l, appends, "append")
	return l, nil
}

// runSessions opens --count sessions on one shared HTTP client and keeps
// them alive, idle, for the run's duration (at least two keepalive
// periods): the servers' CPU over that window and their RSS.
func (b *bench) runSessions(ctx context.Context) (*benchLine, error) {
	defer b.idleLease()()
	rss0, haveRSS := b.rss()
	var opened atomic.Int64
	stopOpen := b.progress("sessions opening", 0, func() string {
		return fmt.Sprintf("%d/%d open", opened.Load(), b.count)
	})
	t0 := time.Now()
	sessions, openErrs, openErr := b.openSome(ctx, b.count, "idle", true, &opened)
	stopOpen()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	openTime := time.Since(t0)
	defer b.closeMany(ctx, sessions)

	// A window shorter than two keepalive periods would see the sessions
	// sending too few keepalives, or none: they renew lease/3 after opening.
	interval := b.lease / 3 // the client's keepalive period
	window := max(b.duration, 2*interval)
	stop := b.progress(fmt.Sprintf("sessions count=%d", b.count), window, func() string { return "idle" })
	cpu := b.startCPU()
	select {
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	case <-time.After(window):
	}
	stop()
	alive := len(sessions)
	keepalives := int(float64(alive) * window.Seconds() / interval.Seconds())
	l := newBenchLine("sessions").add("nodes", b.target.nodes()).add("count", b.count).add("open_errors", openErrs).
		add("lease_seconds", b.lease.Seconds()).add("duration_seconds", window.Seconds()).
		add("open_seconds", openTime.Seconds()).add("keepalives_per_second", float64(alive)/interval.Seconds())
	if c, wall, ok := cpu.used(); ok {
		l.add("server_cpu_percent", 100*c.Seconds()/wall.Seconds())
		if keepalives > 0 {
			per := c / time.Duration(keepalives)
			l.add("server_cpu_ms_per_keepalive", msFloat(per)).add("cpu_per_keepalive_floor_units", b.floor.ratio(per))
		}
	}
	if rss, ok := b.rss(); ok && haveRSS {
		l.add("rss_mib", mib(rss)).add("rss_before_mib", mib(rss0)).
			add("rss_kib_per_session", float64(rss-rss0)/1024/float64(max(alive, 1)))
	}
	if openErr != nil {
		l.add("last_open_error", errLine(openErr))
	}
	return l, nil
}

// idleLease sets the lease of the many-session workloads, unless given:
// 30s, a keepalive every 10s, as the issue measured. It returns what puts
// the run's lease back.
func (b *bench) idleLease() (restore func()) {
	saved := b.lease
	if b.lease == 0 {
		b.lease = 30 * time.Second
	}
	return func() { b.lease = saved }
}

// runWaiters queues --count sessions behind one holder, one at a time (a
// waiter joins once the one before it is in the queue, so the queue's
// order is known), then releases and lets every waiter take the lock and
// release it at once: RSS with the queue full, whether the grants kept
// the queue's order, and the time from each release's call to the next
// grant's return (its commit included: the reply to the release and the
// grant race each other).
func (b *bench) runWaiters(ctx context.Context) (*benchLine, error) {
	defer b.idleLease()()
	reader, err := b.cf.reader(b.stderr)
	if err != nil {
		return nil, err
	}
	queued := func() (uint64, error) {
		// One session and one waiter on the page: the answer's size and
		// the server's work stay small with thousands queued.
		st, err := reader.StatusPage(ctx, &dlmv1.StatusRequest{Consistent: true, PageSize: 1})
		if err != nil {
			return 0, err
		}
		return st.GetLock().GetQueueLength(), nil
	}
	rss0, haveRSS := b.rss()
	holder, err := b.open(ctx, "holder", b.shared)
	if err != nil {
		return nil, fmt.Errorf("bench: open holder: %w", err)
	}
	defer closeClient(ctx, holder)
	var opened atomic.Int64
	waiters, openErrs, openErr := b.openSome(ctx, b.count, "waiter", true, &opened)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if len(waiters) == 0 {
		return nil, fmt.Errorf("bench: waiters: no session opened: %w", openErr)
	}
	defer b.closeMany(ctx, waiters)
	rssSessions, _ := b.rss()
	lk, err := holder.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: holder: %w", err)
	}

	type grant struct {
		token            uint64
		id               uint64
		granted, release time.Time // acquire returned, release called
		err              error
	}
	grants := make([]grant, len(waiters))
	order := make([]uint64, 0, len(waiters))
	drainCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	var joined atomic.Int64
	stop := b.progress(fmt.Sprintf("waiters count=%d", b.count), 0, func() string {
		return fmt.Sprintf("%d queued", joined.Load())
	})
	for i, w := range waiters {
		wg.Go(func() {
			lk, err := w.Acquire(drainCtx)
			if err != nil {
				grants[i].err = err
				return
			}
			grants[i].granted = time.Now()
			grants[i].token, grants[i].id = lk.Token(), w.ClientID()
			grants[i].release = time.Now()
			grants[i].err = lk.Release(context.WithoutCancel(drainCtx))
		})
		order = append(order, w.ClientID())
		err := e2e.Await(ctx, time.Minute, 2*time.Millisecond, func() (bool, string) {
			n, err := queued()
			if err != nil {
				return false, err.Error()
			}
			return n >= uint64(i+1), fmt.Sprintf("%d queued, waiting for %d", n, i+1)
		})
		if err != nil {
			stop()
			cancel()
			_ = lk.Abort(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("bench: waiters: %w", err)
		}
		joined.Add(1)
	}
	stop()
	rssQueued, _ := b.rss()
	cpu := b.startCPU()
	released := time.Now()
	if err := lk.Release(ctx); err != nil {
		return nil, fmt.Errorf("bench: holder release: %w", err)
	}
	wg.Wait()
	drain := time.Since(released)

	var errs int
	var lastErr error
	ok := grants[:0:0]
	for _, g := range grants {
		if g.err != nil {
			errs++
			lastErr = g.err
			continue
		}
		ok = append(ok, g)
	}
	slices.SortFunc(ok, func(a, b grant) int {
		switch {
		case a.token < b.token:
			return -1
		case a.token > b.token:
			return 1
		}
		return 0
	})
	fifo := errs == 0 && len(ok) == len(order)
	var lat []time.Duration
	prev := released
	for i, g := range ok {
		if fifo && g.id != order[i] {
			fifo = false
		}
		lat = append(lat, max(g.granted.Sub(prev), 0))
		prev = g.release
	}
	first := time.Duration(0)
	if len(lat) > 0 {
		first = lat[0]
	}
	slices.Sort(lat)
	l := newBenchLine("waiters").add("nodes", b.target.nodes()).add("count", b.count).add("open_errors", openErrs).
		add("lease_seconds", b.lease.Seconds()).
		add("fifo", fifo).add("grants", len(ok)).
		add("head_grant_ms", msFloat(first)).add("grant_p50_ms", msFloat(percentile(lat, 50))).
		add("grant_p99_ms", msFloat(percentile(lat, 99))).
		add("grant_p50_floor_units", b.floor.ratio(percentile(lat, 50))).
		add("drain_grants_per_second", float64(len(ok))/drain.Seconds())
	cpu.addCPU(l, len(ok), "grant")
	if haveRSS {
		l.add("rss_before_mib", mib(rss0)).add("rss_sessions_mib", mib(rssSessions)).add("rss_queued_mib", mib(rssQueued)).
			add("rss_kib_per_waiter", float64(rssQueued-rssSessions)/1024/float64(len(waiters)))
	}
	l.add("errors", errs)
	if lastErr != nil {
		l.add("last_error", errLine(lastErr))
	}
	if openErr != nil {
		l.add("last_open_error", errLine(openErr))
	}
	return l, nil
}

// runFailover starts a 3-node cluster of its own and, --rounds times, kills
// its leader with SIGKILL and times the first grant after the kill to a
// session opened before it; the killed node is restarted between rounds.
func (b *bench) runFailover(ctx context.Context, bin, dir string) error {
	t, err := startBenchTarget(ctx, bin, dir, 3, b.stderr)
	if err != nil {
		return err
	}
	defer t.stop()
	saved, savedTarget := b.cf.server, b.target
	b.cf.server, b.target = joinURLs(t.cluster.URLs()), t
	defer func() { b.cf.server, b.target = saved, savedTarget }()

	c, err := b.open(ctx, "bench-failover", nil)
	if err != nil {
		return fmt.Errorf("bench: open session: %w", err)
	}
	defer closeClient(ctx, c)
	var times []time.Duration
	for round := range b.rounds {
		lk, err := c.Acquire(ctx) // warm: the client knows the leader
		if err != nil {
			return fmt.Errorf("bench: failover: acquire before the kill: %w", err)
		}
		if err := lk.Release(ctx); err != nil {
			return fmt.Errorf("bench: failover: release before the kill: %w", err)
		}
		leader, err := t.cluster.AwaitLeader(ctx, 30*time.Second)
		if err != nil {
			return fmt.Errorf("bench: failover: %w", err)
		}
		fmt.Fprintf(b.stderr, "bench: failover round %d: killing leader %s\n", round+1, leader.ID)
		leader.Kill()
		killed := time.Now()
		lk, err = c.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("bench: failover: acquire after the kill: %w", err)
		}
		times = append(times, time.Since(killed))
		if err := lk.Release(ctx); err != nil {
			return fmt.Errorf("bench: failover: release after the kill: %w", err)
		}
		if err := leader.Start(); err != nil {
			return fmt.Errorf("bench: failover: restart %s: %w", leader.ID, err)
		}
		if err := t.cluster.AwaitCaughtUp(ctx, time.Minute, leader); err != nil {
			return fmt.Errorf("bench: failover: %w", err)
		}
	}
	slices.Sort(times)
	l := newBenchLine("failover").add("nodes", 3).add("rounds", len(times)).
		add("first_grant_p50_ms", msFloat(percentile(times, 50))).
		add("first_grant_max_ms", msFloat(times[len(times)-1])).
		add("p50_floor_units", b.floor.ratio(percentile(times, 50)))
	return b.emit(l)
}

func joinURLs(urls []string) string { return strings.Join(urls, ",") }
