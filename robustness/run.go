package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/dlm/dlm/client/faultinject"
	"github.com/dlm/dlm/internal/e2e"
	"github.com/dlm/dlm/server/lockstate"
)

// config is one run's settings.
type config struct {
	bin      string
	seed     uint64
	duration time.Duration
	workers  int
	mutation string
	// cycle takes the faults in a fixed order instead of at random.
	cycle bool
	// abandoning runs the abandoning client (abandon.go), which checks the
	// client library rather than the server.
	abandoning bool
	// lead are cluster faults the schedule starts with, before the cycled
	// or random ones (so that a short run meets a rare fault for sure).
	lead []string
	// named is the number of named-lock workers (named.go): half of them
	// mostly shared, half mostly exclusive.
	named int
	// namedLocks are the locks they take (nil: namedLocks).
	namedLocks []string
	// kinds are the cluster faults to draw from (nil: faultKinds).
	kinds []string
	// results is where a failing run writes its history and visualization.
	results string
	logf    func(format string, args ...any)
}

// result is what one run found.
type result struct {
	seed       uint64
	mutation   string
	ops        int
	faults     map[string]int
	violations []string
	findings   []string
	dir        string
	named      namedCounts
}

// run starts a cluster, runs the workload under the seeded fault schedule
// for cfg.duration, then checks the history.
func run(ctx context.Context, cfg config) (*result, error) {
	dir, err := os.MkdirTemp("", "dlm-robustness-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// A port taken between choosing and binding it can keep a node from
	// starting: try once more on fresh ports before giving up.
	var c *cluster
	for attempt := 1; ; attempt++ {
		sub := filepath.Join(dir, fmt.Sprintf("try%d", attempt))
		if c, err = startCluster(ctx, cfg.bin, sub, 3, cfg.mutation); err == nil {
			break
		}
		if attempt == 2 {
			return nil, err
		}
		cfg.logf("seed %d: cluster did not start, trying again: %v", cfg.seed, err)
	}
	defer c.close()
	h := newHistory()
	var files []string
	for i := range 8 {
		files = append(files, lockstate.FileName(i))
	}

	// Clients: in-process library clients (the first one without
	// keepalive, so that the schedule can stall it past its lease), and a
	// raw-API late writer.
	var workers []*worker
	var stacks []*stack
	for i := range cfg.workers {
		lease := 2 * time.Second
		if i == 0 {
			lease = time.Second
		}
		w, st, err := newLibWorker(ctx, i, h, c, rand.New(rand.NewPCG(cfg.seed, uint64(i))), files, lease, i == 0)
		if err != nil {
			return nil, fmt.Errorf("client %d: %w", i, err)
		}
		// Closing twice is harmless: this covers an early return.
		defer w.l.(*libLocker).c.Close(context.WithoutCancel(ctx))
		workers = append(workers, w)
		stacks = append(stacks, st)
	}
	stall := make(chan time.Duration, 1)
	workers[0].between = func(i int) {
		if i != 2 {
			return
		}
		select {
		case d := <-stall:
			// Fault schedule: the holder stalls past its lease with a
			// staged append, its calls (and so its lease) paused.
			time.Sleep(d)
		default:
		}
	}
	// A client process with keepalive, stopped by SIGSTOP while it holds
	// the lock with a staged append.
	pl, err := startPeer(c, time.Second)
	if err != nil {
		return nil, err
	}
	defer pl.stop()
	stallPeer := make(chan time.Duration, 1)
	pw := &worker{id: cfg.workers + 1, h: h, l: pl, rd: workers[0].rd, rng: rand.New(rand.NewPCG(cfg.seed, 555)), files: files, maxAppends: 5}
	pw.between = func(i int) {
		if i != 2 {
			return
		}
		select {
		case d := <-stallPeer:
			pl.signal(syscall.SIGSTOP)
			time.Sleep(d) // fault schedule: the process stays stopped
			pl.signal(syscall.SIGCONT)
		default:
		}
	}
	workers = append(workers, pw)
	var al *abandonLocker
	if cfg.abandoning {
		var aw *worker
		aw, al, err = newAbandoner(ctx, cfg.workers+2, h, c, rand.New(rand.NewPCG(cfg.seed, 777)), files, workers[0].rd)
		if err != nil {
			return nil, fmt.Errorf("abandoning client: %w", err)
		}
		defer al.c.Close(context.WithoutCancel(ctx))
		workers = append(workers, aw)
	}
	zst := newStack(c.hostMap())
	z := newZombie(cfg.workers, h, c, zst, rand.New(rand.NewPCG(cfg.seed, 999)), files)
	var named []*namedWorker
	for i := range cfg.named {
		st := newStack(c.hostMap())
		sharedPct := 80
		if i%2 == 1 {
			sharedPct = 20
		}
		locks := cfg.namedLocks
		if locks == nil {
			locks = namedLocks
		}
		named = append(named, newNamedWorker(cfg.workers+3+i, h, c, st, rand.New(rand.NewPCG(cfg.seed, uint64(1000+i))), locks, sharedPct))
		stacks = append(stacks, st)
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.run(runCtx) })
	}
	wg.Go(func() { z.run(runCtx) })
	for _, n := range named {
		wg.Go(func() { n.run(runCtx) })
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	var pg sync.WaitGroup
	pg.Go(func() { pollStatus(pollCtx, c, h) })
	pg.Go(func() { rpcFaults(runCtx, rand.New(rand.NewPCG(cfg.seed, 7)), cfg.cycle, h, stacks) })
	kinds := cfg.kinds
	if kinds == nil {
		kinds = faultKinds
	}
	schedule(runCtx, rand.New(rand.NewPCG(cfg.seed, 1)), cfg.cycle, cfg.lead, kinds, c, h, stall, stallPeer)
	wg.Wait()
	tWork := time.Now()
	for _, st := range stacks {
		st.faults.Clear()
	}
	c.heal()
	for _, nd := range c.nodes {
		if nd.Running() {
			nd.Signal(syscall.SIGCONT)
		}
	}
	// Every late copy of a delayed request is delivered before the end.
	for _, st := range stacks {
		st.faults.Wait()
	}
	for _, w := range workers {
		if l, ok := w.l.(*libLocker); ok {
			l.c.Close(context.WithoutCancel(ctx))
		}
	}
	if al != nil {
		al.c.Close(context.WithoutCancel(ctx))
	}
	pl.stop()
	tStop := time.Now()
	diffs, cerr := c.converge(ctx, 60*time.Second)
	stopPoll()
	pg.Wait()
	tConverge := time.Now()
	defer func() {
		cfg.logf("seed %d: workload ended %v after the deadline; clients stopped in %v, replicas converged in %v, checks took %v",
			cfg.seed, tWork.Sub(h.start)-cfg.duration, tStop.Sub(tWork).Round(time.Millisecond), tConverge.Sub(tStop).Round(time.Millisecond), time.Since(tConverge).Round(time.Millisecond))
	}()

	res := &result{seed: cfg.seed, mutation: cfg.mutation, faults: h.faultCounts()}
	res.ops = len(h.events)
	res.violations = append(res.violations, h.faultViolations()...)
	res.violations = append(res.violations, diffs...)
	if cerr != nil {
		res.violations = append(res.violations, cerr.Error())
	}
	final, err := c.readFiles(files)
	if err != nil {
		return nil, err
	}
	res.violations = append(res.violations, checkFiles(h, final)...)
	res.violations = append(res.violations, checkTokens(h)...)
	res.violations = append(res.violations, checkHolds(h)...)
	res.violations = append(res.violations, c.checkLogs()...)
	if al != nil {
		res.violations = append(res.violations, al.watch.check(al.id)...)
		reqs, sessions, most := al.watch.stats()
		cfg.logf("seed %d: the abandoning client made %d numbered requests in %d sessions (at most %d in one)", cfg.seed, reqs, sessions, most)
	}
	if cfg.named > 0 {
		res.named = countNamed(h)
		cfg.logf("seed %d: named workers: %+v", cfg.seed, res.named)
	}
	res.findings = h.findings
	for _, f := range h.findings {
		cfg.logf("seed %d: finding: %s", cfg.seed, f)
	}
	vizDir := filepath.Join(cfg.results, fmt.Sprintf("seed-%d", cfg.seed))
	if cfg.mutation != "" {
		vizDir = filepath.Join(cfg.results, fmt.Sprintf("%s-seed-%d", cfg.mutation, cfg.seed))
	}
	// A history already known to be broken may take porcupine long to
	// refute; it gets less time.
	timeout := time.Minute
	if len(res.violations) > 0 {
		timeout = 10 * time.Second
	}
	lin, err := checkLinearizable(h, filepath.Join(vizDir, "porcupine.html"), timeout, len(res.violations) > 0)
	if err != nil {
		return nil, err
	}
	switch lin {
	case porcupine.Illegal:
		res.violations = append(res.violations, fmt.Sprintf("the history is not linearizable (see porcupine.html): %s", strings.Join(illegalPartitions(h, 10*time.Second), ", ")))
	case porcupine.Unknown:
		cfg.logf("porcupine timed out on seed %d: counted as not proven", cfg.seed)
	}
	if len(res.violations) > 0 {
		res.dir = vizDir
		if err := os.MkdirAll(vizDir, 0o755); err != nil {
			return nil, err
		}
		if err := h.write(filepath.Join(vizDir, "history.json")); err != nil {
			return nil, err
		}
		os.WriteFile(filepath.Join(vizDir, "violations.txt"), []byte(strings.Join(res.violations, "\n")+"\n"), 0o644)
		for _, nd := range c.nodes {
			if b, err := os.ReadFile(nd.LogPath); err == nil {
				os.WriteFile(filepath.Join(vizDir, filepath.Base(nd.LogPath)), b, 0o644)
			}
		}
	}
	return res, nil
}

// pollStatus asks every node for its own view every 20ms, so that two
// servers that disagree on who holds which token are caught.
func pollStatus(ctx context.Context, c *cluster, h *history) {
	for ctx.Err() == nil {
		for _, nd := range c.nodes {
			inc := nd.Incarnation()
			if nd.Paused() {
				continue
			}
			st, err := nd.status(ctx)
			if err != nil {
				continue
			}
			if st.GetNode().GetRole() == "leader" {
				// A restarted node may announce its real Raft address again.
				c.pinAddresses(ctx, nd, st.GetMembers())
			}
			if inc != nd.Incarnation() {
				continue
			}
			h.addSample(sample{Node: nd.idx, Incarnation: inc, At: h.now(), Applied: st.GetNode().GetAppliedIndex(),
				Holder: st.GetLock().GetHolder(), Token: st.GetLock().GetToken(), LastToken: st.GetLock().GetLastToken()})
		}
		pollPause(ctx, 20*time.Millisecond)
	}
}

// rpcFaults injects dropped, duplicated and delayed RPCs into the clients'
// transports, one every 200-500ms; with cycle, every method meets every
// fault in turn.
func rpcFaults(ctx context.Context, rng *rand.Rand, cycle bool, h *history, stacks []*stack) {
	methods := []string{"AppendFile", "LockRelease", "LockAcquire", "ReadFile", "KeepAlive"}
	if !cycle {
		// Not in the cycle: it would shift which fault each method meets,
		// and the mutation runs rely on the cycle as it is.
		methods = append(methods, "CheckToken")
	}
	for step := 0; ctx.Err() == nil; step++ {
		// Fault schedule: the gap between two injected RPC faults.
		if pollPause(ctx, time.Duration(200+rng.IntN(300))*time.Millisecond) != nil {
			return
		}
		st := stacks[rng.IntN(len(stacks))]
		m, which := methods[rng.IntN(len(methods))], rng.IntN(4)
		if cycle {
			m, which = methods[step%len(methods)], (step/len(methods)+2)%4
		}
		next := st.faults.Calls(m) + 1 + rng.IntN(3)
		var f faultinject.Fault
		var kind string
		switch which {
		case 0:
			f, kind = faultinject.DropRequest, "rpc-drop-request"
		case 1:
			f, kind = faultinject.DropResponse, "rpc-drop-response"
		case 2:
			f, kind = faultinject.Duplicate, "rpc-duplicate"
		default:
			f, kind = faultinject.Delay(time.Duration(100+rng.IntN(1500))*time.Millisecond), "rpc-delay"
		}
		st.faults.Inject(m, next, f)
		h.addFault(kind, "%s call %d", m, next)
	}
}

// faultKinds are the cluster faults of the schedule, in the order a
// cycling schedule takes them.
var faultKinds = []string{
	"stall-holder", "stall-holder-sigstop", "kill-leader", "kill-follower", "kill-snapshot",
	"pause-node", "partition-leader", "partition-pair", "delay-raft", "partition-clients", "delay-clients",
	"restart-cleared-suffix", "disk-full", "corrupt-follower-log",
}

// schedule injects one cluster fault at a time until ctx ends, and leaves
// everything healed and running. The faults are drawn from rng, or, with
// cycle, taken in the order of kinds (so that a short run meets each),
// after the faults of lead.
func schedule(ctx context.Context, rng *rand.Rand, cycle bool, lead, kinds []string, c *cluster, h *history, stall, stallPeer chan<- time.Duration) {
	// Fault schedule: let the workload run before the first fault.
	pollPause(ctx, 500*time.Millisecond)
	pick := func(leader bool) *node {
		if l := c.leader(ctx); l != nil {
			if leader {
				return l
			}
			for _, k := range rng.Perm(len(c.nodes)) {
				if c.nodes[k] != l {
					return c.nodes[k]
				}
			}
		}
		return c.nodes[rng.IntN(len(c.nodes))]
	}
	for step := 0; ctx.Err() == nil; step++ {
		kind := kinds[rng.IntN(len(kinds))]
		switch {
		case step < len(lead):
			kind = lead[step]
		case cycle:
			kind = kinds[(step-len(lead))%len(kinds)]
		}
		hold := time.Duration(500+rng.IntN(2000)) * time.Millisecond
		switch kind {
		case "stall-holder", "stall-holder-sigstop":
			// Both holders have a 1s lease; they stall in their next
			// critical section, after its first append.
			d := 2500 * time.Millisecond
			ch, who := stall, "w0 (no keepalive) pauses"
			if kind == "stall-holder-sigstop" {
				ch, who = stallPeer, "the client process is stopped"
			}
			select {
			case ch <- d:
				h.addFault(kind, "%s for %v in its next section", who, d)
			default:
			}
			pollPause(ctx, d) // fault schedule: give the stall time to happen
		case "kill-leader", "kill-follower":
			target := pick(kind == "kill-leader")
			target.Kill()
			h.addFault(kind, "%s down for %v", target.ID, hold)
			pollPause(ctx, hold) // fault schedule: the node stays down
			c.restart(ctx, target)
		case "kill-snapshot":
			// Kill a node while it writes a snapshot, if one starts within
			// 3s; watch closely (the write takes milliseconds).
			target := c.nodes[rng.IntN(len(c.nodes))]
			caught := false
			// Folders left by earlier kills do not count.
			before := target.SnapshotsInProgress()
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
				if target.snapshotStarted(before) {
					caught = true
					break
				}
				pollPause(ctx, time.Millisecond)
			}
			target.Kill()
			kind = "kill-mid-snapshot"
			if !caught {
				kind = "kill-no-snapshot-seen"
			}
			h.addFault(kind, "%s", target.ID)
			pollPause(ctx, hold) // fault schedule: the node stays down
			c.restart(ctx, target)
		case "pause-node":
			target := pick(rng.IntN(2) == 0)
			target.Signal(syscall.SIGSTOP)
			h.addFault(kind, "%s stopped for %v", target.ID, hold)
			pollPause(ctx, hold) // fault schedule: the node stays stopped
			target.Signal(syscall.SIGCONT)
		case "partition-leader":
			// Isolate the leader from its peers (cut or black hole).
			target := pick(true)
			mode, kind := e2e.LinkCut, "partition-leader-cut"
			if rng.IntN(2) == 0 {
				mode, kind = e2e.LinkBlackhole, "partition-leader-blackhole"
			}
			for _, o := range c.nodes {
				if o != target {
					c.raftLink(o.idx, target.idx).Set(mode, 0)
				}
			}
			h.addFault(kind, "%s for %v", target.ID, hold+time.Second)
			pollPause(ctx, hold+time.Second) // fault schedule: the partition lasts
			c.heal()
		case "partition-pair":
			a, b := rng.IntN(3), rng.IntN(3)
			if a == b {
				b = (a + 1) % 3
			}
			c.raftLink(a, b).Set(e2e.LinkCut, 0)
			h.addFault(kind, "n%d-n%d for %v", a+1, b+1, hold)
			pollPause(ctx, hold) // fault schedule: the partition lasts
			c.heal()
		case "delay-raft":
			d := time.Duration(10+rng.IntN(150)) * time.Millisecond
			for i := range c.nodes {
				for j := i + 1; j < len(c.nodes); j++ {
					c.raftLink(i, j).Set(e2e.LinkOK, d)
				}
			}
			h.addFault(kind, "%v on every link for %v", d, hold)
			pollPause(ctx, hold) // fault schedule: the delay lasts
			c.heal()
		case "partition-clients":
			target := c.nodes[rng.IntN(len(c.nodes))]
			mode, kind := e2e.LinkCut, "partition-clients-cut"
			if rng.IntN(2) == 0 {
				mode, kind = e2e.LinkBlackhole, "partition-clients-blackhole"
			}
			target.clientLink.Set(mode, 0)
			h.addFault(kind, "clients cannot reach %s for %v", target.ID, hold)
			pollPause(ctx, hold) // fault schedule: the partition lasts
			c.heal()
		case "restart-cleared-suffix":
			c.clearedSuffix(ctx, rng, h)
		case "delay-clients":
			d := time.Duration(20+rng.IntN(200)) * time.Millisecond
			target := c.nodes[rng.IntN(len(c.nodes))]
			target.clientLink.Set(e2e.LinkOK, d)
			h.addFault(kind, "%v to %s for %v", d, target.ID, hold)
			pollPause(ctx, hold) // fault schedule: the delay lasts
			c.heal()
		case "disk-full":
			leader, logToo := rng.IntN(2) == 0, rng.IntN(2) == 0
			if cycle {
				// In turn: the leader's disk, a follower's, then both
				// again with every log write failing.
				round := step / len(kinds)
				leader, logToo = round%2 == 0, round/2%2 == 1
			}
			diskFull(ctx, c, h, pick(leader), hold+time.Second, logToo)
		case "corrupt-follower-log":
			corruptFollowerLog(ctx, c, h, rng)
		}
		// Fault schedule: a quiet gap between faults.
		pollPause(ctx, time.Duration(200+rng.IntN(800))*time.Millisecond)
	}
}

// summary is the one line printed at the end: the ordinary runs' totals,
// and how many mutation runs were caught.
func summary(results []*result) string {
	ops, violations, runs, mutRuns, caught, findings := 0, 0, 0, 0, 0, 0
	faults := make(map[string]int)
	for _, r := range results {
		ops += r.ops
		for k, v := range r.faults {
			faults[k] += v
		}
		if r.mutation != "" {
			mutRuns++
			if len(r.violations) > 0 {
				caught++
			}
			continue
		}
		runs++
		violations += len(r.violations)
		findings += len(r.findings)
	}
	kinds := make([]string, 0, len(faults))
	for k := range faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var parts []string
	total := 0
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s=%d", k, faults[k]))
		total += faults[k]
	}
	line := fmt.Sprintf("robustness: runs=%d operations=%d faults=%d (%s) violations=%d", runs+mutRuns, ops, total, strings.Join(parts, " "), violations)
	if findings > 0 {
		line += fmt.Sprintf(" findings=%d", findings)
	}
	if mutRuns > 0 {
		line += fmt.Sprintf(" mutation-runs=%d caught=%d", mutRuns, caught)
	}
	return line
}
