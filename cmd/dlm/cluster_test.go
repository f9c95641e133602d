package main

// The replication scenarios of SCENARIOS.md group D, an isolated leader and
// failover timings, against clusters of real `dlm serve` processes on
// loopback: nodes are killed with SIGKILL, stalled with SIGSTOP, restarted
// on the same addresses and data, and every test ends by comparing the files
// of every replica byte for byte.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// newClient opens a session given every node's URL, as an application
// would. Its retry budget rides out a failover.
func (c *testCluster) newClient(ctx context.Context, name string) *client.Client {
	c.t.Helper()
	cl, err := client.New(ctx, c.urls(), client.WithName(name), client.WithRetryBudget(45*time.Second))
	if err != nil {
		c.t.Fatalf("%s: %v", name, err)
	}
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		cl.Close(ctx)
	})
	return cl
}

// readFile reads a file from the leader (linearizable).
func (c *testCluster) readFile(ctx context.Context, name string) string {
	c.t.Helper()
	b, err := c.reader.ReadFile(ctx, name)
	if err != nil {
		c.t.Fatalf("ReadFile %s: %v", name, err)
	}
	return string(b)
}

// awaitQueue waits until n sessions wait in the lock's queue.
func (c *testCluster) awaitQueue(ctx context.Context, n int) {
	c.t.Helper()
	pollUntil(c.t, 10*time.Second, fmt.Sprintf("%d waiting for the lock", n), func() (bool, string) {
		st, err := c.reader.Status(ctx, true)
		if err != nil {
			return false, err.Error()
		}
		q := st.GetLock().GetQueue()
		return len(q) >= n, fmt.Sprintf("queue %v", q)
	})
}

// fileAppend is one append of a critical section.
type fileAppend struct{ file, data string }

// appendsOf appends data times times to each file in turn.
func appendsOf(data string, times int, files ...string) []fileAppend {
	var out []fileAppend
	for _, f := range files {
		for range times {
			out = append(out, fileAppend{f, data})
		}
	}
	return out
}

// sectionResult is how a critical section ended: the token of the grant
// that committed it, and how many grants it took.
type sectionResult struct {
	token    uint64
	attempts int
	err      error
}

// runSection runs one critical section: acquire, the appends, release.
// pause, when set, is called after the grant (0) and after each append (1,
// 2, …) of the first attempt, so that a test acts at exact points. A grant
// lost on the way (its lease ran out while no server answered) committed
// nothing; the section is then done again from the start, at most twice
// more.
func runSection(ctx context.Context, c *client.Client, appends []fileAppend, pause func(int)) sectionResult {
	for attempt := 1; ; attempt++ {
		token, err := sectionOnce(ctx, c, appends, pause)
		lost := errors.Is(err, client.ErrLockExpired) || errors.Is(err, client.ErrSessionExpired)
		if err == nil || !lost || attempt == 3 {
			return sectionResult{token: token, attempts: attempt, err: err}
		}
		pause = nil
	}
}

func sectionOnce(ctx context.Context, c *client.Client, appends []fileAppend, pause func(int)) (uint64, error) {
	lk, err := c.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("acquire: %w", err)
	}
	step := func(i int) {
		if pause != nil {
			pause(i)
		}
	}
	step(0)
	for i, a := range appends {
		if err := lk.Append(ctx, a.file, []byte(a.data)); err != nil {
			lk.Abort(ctx)
			return 0, fmt.Errorf("append %d under token %d: %w", i+1, lk.Token(), err)
		}
		step(i + 1)
	}
	if err := lk.Release(ctx); err != nil {
		return 0, fmt.Errorf("release of token %d: %w", lk.Token(), err)
	}
	return lk.Token(), nil
}

// goSection runs a section in the background.
func goSection(ctx context.Context, c *client.Client, appends []fileAppend, pause func(int)) <-chan sectionResult {
	done := make(chan sectionResult, 1)
	go func() { done <- runSection(ctx, c, appends, pause) }()
	return done
}

// sectionScript stops a background section at its pause points until the
// test goroutine, which injects the faults, lets it go on.
type sectionScript struct {
	ctx    context.Context
	at     chan int
	resume chan struct{}
}

func newScript(ctx context.Context) *sectionScript {
	return &sectionScript{ctx: ctx, at: make(chan int), resume: make(chan struct{})}
}

func (s *sectionScript) pause(i int) {
	select {
	case s.at <- i:
	case <-s.ctx.Done():
		return
	}
	select {
	case <-s.resume:
	case <-s.ctx.Done():
	}
}

// driveSection runs act at each pause point of the section behind done until it
// ends, and returns how it ended; a failed section fails the test.
func driveSection(t *testing.T, s *sectionScript, name string, done <-chan sectionResult, act func(i int)) sectionResult {
	t.Helper()
	for {
		select {
		case i := <-s.at:
			act(i)
			s.resume <- struct{}{}
		case r := <-done:
			if r.err != nil {
				t.Fatalf("%s: %v", name, r.err)
			}
			return r
		case <-s.ctx.Done():
			t.Fatalf("%s did not finish: %v", name, s.ctx.Err())
		}
	}
}

// awaitSection returns how a background section ended; a failed section fails the
// test.
func awaitSection(t *testing.T, ctx context.Context, name string, done <-chan sectionResult) sectionResult {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("%s: %v", name, r.err)
		}
		return r
	case <-ctx.Done():
		t.Fatalf("%s did not finish: %v", name, ctx.Err())
	}
	return sectionResult{}
}

// checkTokensGrow checks that the sections' letters, in the order they
// appear in content, have strictly growing fencing tokens: a later grant,
// under whichever leader, never has a smaller token.
func checkTokensGrow(t *testing.T, content string, tokens map[byte]uint64) {
	t.Helper()
	var order []byte
	for i := range len(content) {
		if !slices.Contains(order, content[i]) {
			order = append(order, content[i])
		}
	}
	for i := 1; i < len(order); i++ {
		if a, b := tokens[order[i-1]], tokens[order[i]]; a >= b {
			t.Fatalf("in %q, %c's section has token %d and the later %c's %d: tokens must grow", content, order[i-1], a, order[i], b)
		}
	}
}

// runsOf splits s into runs of one repeated byte.
func runsOf(s string) []string {
	var runs []string
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] == s[i] {
			j++
		}
		runs = append(runs, s[i:j])
		i = j
	}
	return runs
}

// errorDetail returns the ErrorDetail a service error carries.
func errorDetail(err error) *dlmv1.ErrorDetail {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if ed, ok := v.(*dlmv1.ErrorDetail); ok {
				return ed
			}
		}
	}
	return nil
}

// D1: a follower dies after C1's first append and returns soon.
func TestD1FollowerDownBriefly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	s1 := c.awaitLeader()
	s2 := c.others(s1)[0]
	c1, c2 := c.newClient(ctx, "C1"), c.newClient(ctx, "C2")
	files := []string{"file_1", "file_2", "file_3"}

	var d2 <-chan sectionResult
	s := newScript(ctx)
	r1 := driveSection(t, s, "C1", goSection(ctx, c1, appendsOf("A", 1, files...), s.pause), func(i int) {
		switch i {
		case 0: // C1 holds the lock: C2 waits for it
			d2 = goSection(ctx, c2, appendsOf("B", 1, files...), nil)
			c.awaitQueue(ctx, 1)
		case 1:
			s2.Kill()
		case 2:
			s2.start()
		}
	})
	r2 := awaitSection(t, ctx, "C2", d2)

	want := "AB"
	if r1.attempts > 1 {
		want = "BA" // C1's lease ran out and C1 redid its section after C2
	}
	for _, f := range files {
		if got := c.readFile(ctx, f); got != want {
			t.Fatalf("%s = %q, want %q", f, got, want)
		}
	}
	checkTokensGrow(t, want, map[byte]uint64{'A': r1.token, 'B': r2.token})
	c.awaitReplicasIdentical()
}

// D2: a follower dies after C1's first append and stays down while the
// others carry on long enough for the leader to compact its log past
// everything the follower has; it returns at the end and catches up from a
// snapshot. A client that asks a follower is pointed to the leader.
func TestD2FollowerDownLong(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const trailing = 10
	c := startCluster(t, 3, "--snapshot-threshold", "20", "--trailing-logs", fmt.Sprint(trailing), "--snapshot-interval", "200ms")
	s1 := c.awaitLeader()
	s2, s3 := c.others(s1)[0], c.others(s1)[1]
	c1, c2 := c.newClient(ctx, "C1"), c.newClient(ctx, "C2")
	files := []string{"file_1", "file_2", "file_3"}

	var (
		d2       <-chan sectionResult
		s2Before uint64 // an upper bound of S2's last log index
	)
	s := newScript(ctx)
	r1 := driveSection(t, s, "C1", goSection(ctx, c1, appendsOf("A", 1, files...), s.pause), func(i int) {
		switch i {
		case 0:
			d2 = goSection(ctx, c2, appendsOf("B", 1, files...), nil)
			c.awaitQueue(ctx, 1)
		case 1:
			s2.Kill()
			// Nothing is in flight (C1 waits here, C2 waits in the queue),
			// so S2 had nothing past what the leader has committed.
			s2Before = c.commitIndex(s1)
		}
	})
	r2 := awaitSection(t, ctx, "C2", d2)
	want := "AB"
	if r1.attempts > 1 {
		want = "BA"
	}
	for _, f := range files {
		if got := c.readFile(ctx, f); got != want {
			t.Fatalf("%s = %q, want %q", f, got, want)
		}
	}
	checkTokensGrow(t, want, map[byte]uint64{'A': r1.token, 'B': r2.token})

	// Progress never stops. Sections of 1 MiB appends go on until the
	// leader has snapshotted and deleted the log holding S2's last entry,
	// so that only a snapshot can bring S2 back. raft-wal drops compacted
	// entries a whole segment (64 MiB) at a time and still serves the rest
	// of a segment, hence the volume.
	last, sections := max(r1.token, r2.token), 0
	var logStart uint64
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	pollUntil(t, 60*time.Second, "the leader deleting its log up to S2's last entry", func() (bool, string) {
		leader := c.awaitLeader()
		if logStart = leader.OldestLogIndex(); logStart > s2Before+1 && leader.SnapshotIndex() >= logStart {
			return true, ""
		}
		if sections == 200 {
			t.Fatalf("%d sections with S2 down, and the leader's log still starts at %d", sections, logStart)
		}
		// Big appends until the first segment is full and sealed, then small
		// ones until the next snapshot deletes it.
		data := big
		if len(leader.LogSegments()) > 1 {
			data = "x"
		}
		r := runSection(ctx, []*client.Client{c1, c2}[sections%2], appendsOf(data, 4, "file_10"), nil)
		if r.err != nil {
			t.Fatalf("section %d with S2 down: %v", sections, r.err)
		}
		if r.token <= last {
			t.Fatalf("section %d has token %d after token %d", sections, r.token, last)
		}
		last = r.token
		sections++
		return false, fmt.Sprintf("%d sections, leader %s's log starts at %d, S2 stopped at %d", sections, leader.ID, logStart, s2Before)
	})
	t.Logf("%d sections with S2 down; the leader's log now starts at index %d, S2 stopped at %d", sections, logStart, s2Before)

	// A change asked of a follower is refused with the leader's URL.
	leader := c.awaitLeader()
	follower := s3
	if leader == s3 {
		follower = s1
	}
	_, err := follower.API().Init(ctx, connect.NewRequest(&dlmv1.InitRequest{Name: "asks a follower"}))
	if d := errorDetail(err); connect.CodeOf(err) != connect.CodeUnavailable || d.GetReason() != dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER || d.GetLeaderUrl() != leader.URL() {
		t.Fatalf("Init at follower %s = %v (detail %v), want Unavailable, NOT_LEADER, leader %s", follower.ID, err, d, leader.URL())
	}
	// A client that knows only the follower follows the hint.
	onlyFollower, err := client.New(ctx, []string{follower.URL()}, client.WithName("via follower"), client.WithRetryBudget(20*time.Second))
	if err != nil {
		t.Fatalf("client given only follower %s: %v", follower.ID, err)
	}
	defer onlyFollower.Close(context.Background())
	if r := runSection(ctx, onlyFollower, appendsOf("F", 1, "file_12"), nil); r.err != nil || r.token <= last {
		t.Fatalf("section through follower %s: token %d (last %d), %v", follower.ID, r.token, last, r.err)
	}
	if got := c.readFile(ctx, "file_12"); got != "F" {
		t.Fatalf("file_12 = %q, want F", got)
	}

	s2.start()
	c.awaitReplicasIdentical()
	if snap := s2.SnapshotIndex(); snap < logStart-1 {
		t.Fatalf("S2's latest snapshot is at %d; it should have installed the leader's (at %d or later)", snap, logStart-1)
	}
}

// leaderDiesBetween runs D3 and D4: C1, C2 and C3 each append their letter
// n times to file_0. With killInC2 0, the leader dies right after C1's
// release (D3); otherwise after C2's killInC2-th append (D4).
func leaderDiesBetween(t *testing.T, n, killInC2 int) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	s1 := c.awaitLeader()
	c1, c2, c3 := c.newClient(ctx, "C1"), c.newClient(ctx, "C2"), c.newClient(ctx, "C3")

	var d2, d3 <-chan sectionResult
	s, s2script := newScript(ctx), newScript(ctx)
	c2pause := s2script.pause
	if killInC2 == 0 {
		c2pause = nil
	}
	r1 := driveSection(t, s, "C1", goSection(ctx, c1, appendsOf("A", n, "file_0"), s.pause), func(i int) {
		if i == 0 {
			// C2 queues first, then C3: C2 is served next.
			d2 = goSection(ctx, c2, appendsOf("B", n, "file_0"), c2pause)
			c.awaitQueue(ctx, 1)
			d3 = goSection(ctx, c3, appendsOf("C", n, "file_0"), nil)
			c.awaitQueue(ctx, 2)
		}
	})
	var r2 sectionResult
	if killInC2 == 0 {
		s1.Kill()
		r2 = awaitSection(t, ctx, "C2", d2)
	} else {
		r2 = driveSection(t, s2script, "C2", d2, func(i int) {
			if i == killInC2 {
				s1.Kill()
			}
		})
		t.Logf("C2's section took %d grant(s) across the failover", r2.attempts)
	}
	r3 := awaitSection(t, ctx, "C3", d3)
	if leader := c.awaitLeader(); leader == s1 {
		t.Fatal("the killed node leads")
	}

	got := c.readFile(ctx, "file_0")
	runs := runsOf(got)
	a, b, cc := strings.Repeat("A", n), strings.Repeat("B", n), strings.Repeat("C", n)
	if len(runs) != 3 || runs[0] != a || !(runs[1] == b && runs[2] == cc || runs[1] == cc && runs[2] == b) {
		t.Fatalf("file_0 = %q, want %d A then %d B and %d C in either order, each contiguous", got, n, n, n)
	}
	checkTokensGrow(t, got, map[byte]uint64{'A': r1.token, 'B': r2.token, 'C': r3.token})

	s1.start() // S1 rejoins and catches up
	c.awaitReplicasIdentical()
}

// D3: the leader dies between critical sections.
func TestD3LeaderDiesBetweenSections(t *testing.T) { leaderDiesBetween(t, 5, 0) }

// D4: the leader dies inside C2's critical section.
func TestD4LeaderDiesInsideSection(t *testing.T) { leaderDiesBetween(t, 20, 10) }

// D5: a follower dies and returns; later the leader and that follower die
// together and the last node refuses changes, saying so at once; when one
// returns the service resumes.
func TestD5MajorityDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	s1 := c.awaitLeader()
	s2, s3 := c.others(s1)[0], c.others(s1)[1]
	c1, c2, c3 := c.newClient(ctx, "C1"), c.newClient(ctx, "C2"), c.newClient(ctx, "C3")
	files := []string{"file_1", "file_2", "file_3", "file_4", "file_5"}

	var d2, d3 <-chan sectionResult
	s, s2script := newScript(ctx), newScript(ctx)
	r1 := driveSection(t, s, "C1", goSection(ctx, c1, appendsOf("A", 2, files...), s.pause), func(i int) {
		switch i {
		case 0:
			d2 = goSection(ctx, c2, appendsOf("B", 2, files...), s2script.pause)
			c.awaitQueue(ctx, 1)
			d3 = goSection(ctx, c3, appendsOf("C", 2, files...), nil)
			c.awaitQueue(ctx, 2)
		case 3:
			s2.Kill()
		case 6:
			s2.start()
		}
	})
	r2 := driveSection(t, s2script, "C2", d2, func(i int) {
		if i != 4 {
			return
		}
		c.awaitCaughtUp(s2) // S2 is back in step before the double failure
		s1.Kill()
		s2.Kill()
		refusesChanges(t, ctx, s3)
		s1.start() // one returns: with S3 a majority again
	})
	r3 := awaitSection(t, ctx, "C3", d3)

	first := c.readFile(ctx, files[0])
	runs := runsOf(first)
	if len(first) != 6 || len(runs) != 3 || slices.ContainsFunc(runs, func(r string) bool { return len(r) != 2 }) {
		t.Fatalf("%s = %q, want AA, BB and CC, each contiguous", files[0], first)
	}
	for _, f := range files[1:] {
		if got := c.readFile(ctx, f); got != first {
			t.Fatalf("%s = %q but %s = %q: the order must be the same", f, got, files[0], first)
		}
	}
	checkTokensGrow(t, first, map[byte]uint64{'A': r1.token, 'B': r2.token, 'C': r3.token})
	s2.start()
	c.awaitReplicasIdentical()
}

// refusesChanges checks that a node left without a majority refuses a change
// at once, with Unavailable and a reason, and soon says it knows no leader;
// and that a client given only that node fails with ErrUnavailable within
// its retry budget instead of hanging.
func refusesChanges(t *testing.T, ctx context.Context, n *clusterNode) {
	t.Helper()
	const deadline = 2 * time.Second
	pollUntil(t, 10*time.Second, n.ID+" alone saying it has no leader", func() (bool, string) {
		cctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		start := time.Now()
		_, err := n.API().Init(cctx, connect.NewRequest(&dlmv1.InitRequest{Name: "no majority"}))
		took := time.Since(start)
		d := errorDetail(err)
		switch {
		case err == nil:
			t.Fatalf("%s alone opened a session", n.ID)
		case connect.CodeOf(err) != connect.CodeUnavailable || d == nil || d.GetReason() == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED:
			t.Fatalf("%s alone answered %v (detail %v) after %v; want Unavailable with a reason before the %v deadline", n.ID, err, d, took, deadline)
		case d.GetLeaderUrl() != "":
			return false, fmt.Sprintf("still names leader %s: %v", d.GetLeaderUrl(), err)
		}
		t.Logf("%s alone answers in %v: %v", n.ID, took.Round(time.Millisecond), err)
		return true, ""
	})
	start := time.Now()
	_, err := client.New(ctx, []string{n.URL()}, client.WithRetryBudget(deadline))
	if took := time.Since(start); !errors.Is(err, client.ErrUnavailable) || took > deadline+2*time.Second {
		t.Fatalf("a client of %s alone got %v after %v; want ErrUnavailable within its %v budget", n.ID, err, took, deadline)
	}
}

// The leader is stalled with SIGSTOP while a client holds the lock. A new
// leader serves clients; calls sent to the stalled node get no answer; after
// SIGCONT it steps down, and it never granted or acknowledged anything
// while deposed.
func TestIsolatedLeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	old := c.awaitLeader()
	holder, other := c.newClient(ctx, "holder"), c.newClient(ctx, "other")
	lk, err := holder.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Append(ctx, "file_0", []byte("H1.")); err != nil {
		t.Fatal(err)
	}
	// A raw session on the old leader, to send it changes of its own.
	init, err := old.API().Init(ctx, connect.NewRequest(&dlmv1.InitRequest{Name: "raw", LeaseMs: 20000}))
	if err != nil {
		t.Fatal(err)
	}
	raw := init.Msg
	acquire := func(seq uint64) *connect.Request[dlmv1.LockAcquireRequest] {
		return connect.NewRequest(&dlmv1.LockAcquireRequest{ClientId: raw.GetClientId(), Secret: raw.GetSecret(), Seq: seq, Try: true})
	}

	old.Pause()
	stalledAt := time.Now()
	// A change sent to the stalled node gets nothing.
	cctx, ccancel := context.WithTimeout(ctx, time.Second)
	_, err = old.API().LockAcquire(cctx, acquire(1))
	ccancel()
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("acquire at the stalled leader = %v, want no answer (deadline exceeded)", err)
	}
	// Another waits in its socket to be read when the node wakes up.
	late := make(chan error, 1)
	go func() {
		lctx, lcancel := context.WithTimeout(ctx, 30*time.Second)
		defer lcancel()
		res, err := old.API().LockAcquire(lctx, acquire(2))
		if err == nil {
			err = fmt.Errorf("answered %v", res.Msg)
		}
		late <- err
	}()

	leader := c.awaitLeader()
	if leader == old {
		t.Fatal("the stalled node still leads")
	}
	t.Logf("%s leads %v after %s was stalled", leader.ID, time.Since(stalledAt).Round(time.Millisecond), old.ID)
	// The holder carries on under the new leader, with the same grant.
	if err := lk.Append(ctx, "file_0", []byte("H2.")); err != nil {
		t.Fatalf("holder's append under the new leader: %v", err)
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatalf("holder's release under the new leader: %v", err)
	}
	r := runSection(ctx, other, appendsOf("Y.", 1, "file_0"), nil)
	if r.err != nil {
		t.Fatalf("other client: %v", r.err)
	}
	if r.token <= lk.Token() {
		t.Fatalf("the new leader granted token %d after token %d", r.token, lk.Token())
	}

	old.Resume()
	woke := time.Now()
	pollUntil(t, 10*time.Second, "the old leader stepping down", func() (bool, string) {
		st, err := old.status()
		if err != nil {
			return false, err.Error()
		}
		n := st.GetNode()
		return n.GetRole() == "follower" && n.GetLeaderUrl() == leader.URL(), fmt.Sprintf("role %s, leader %q", n.GetRole(), n.GetLeaderUrl())
	})
	t.Logf("%s follows %s %v after SIGCONT", old.ID, leader.ID, time.Since(woke).Round(time.Millisecond))
	select {
	case err := <-late:
		if d := errorDetail(err); connect.CodeOf(err) != connect.CodeUnavailable || d.GetReason() != dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER {
			t.Fatalf("the acquire the stalled leader read on waking = %v (detail %v), want Unavailable NOT_LEADER", err, d)
		}
	case <-ctx.Done():
		t.Fatal("the acquire sent to the stalled leader got no answer after it woke")
	}

	if got := c.readFile(ctx, "file_0"); got != "H1.H2.Y." {
		t.Fatalf("file_0 = %q, want H1.H2.Y.", got)
	}
	st, err := c.reader.Status(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if lock := st.GetLock(); lock.GetHolder() != 0 || lock.GetLastToken() != r.token {
		t.Fatalf("lock = %v, want free with last token %d (the raw session never got it)", lock, r.token)
	}
	c.awaitReplicasIdentical()
}

// The leader is killed with SIGKILL ten times in a row; each time a client
// acquires through the new leader. Fencing tokens grow across every
// failover, and the time from the kill to the first grant is logged.
func TestClusterFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	w := c.newClient(ctx, "W")
	const runs = 10
	var (
		toGrant, toLeader []time.Duration
		want              strings.Builder
		last              uint64
	)
	for run := range runs {
		leader := c.awaitLeader()
		survivors := c.others(leader)
		leader.Kill()
		killed := time.Now()
		elected := make(chan time.Duration, 1)
		go func() { elected <- awaitElected(ctx, survivors, killed) }()

		lk, err := w.Acquire(ctx)
		if err != nil {
			t.Fatalf("run %d: acquire after killing the leader: %v", run, err)
		}
		toGrant = append(toGrant, time.Since(killed))
		toLeader = append(toLeader, <-elected)
		if lk.Token() <= last {
			t.Fatalf("run %d: token %d after token %d", run, lk.Token(), last)
		}
		last = lk.Token()
		record := fmt.Sprintf("%d;", last)
		if err := lk.Append(ctx, "file_0", []byte(record)); err != nil {
			t.Fatalf("run %d: append: %v", run, err)
		}
		if err := lk.Release(ctx); err != nil {
			t.Fatalf("run %d: release: %v", run, err)
		}
		want.WriteString(record)
		leader.start()
	}
	if got := c.readFile(ctx, "file_0"); got != want.String() {
		t.Fatalf("file_0 = %q, want %q", got, want.String())
	}
	c.awaitReplicasIdentical()
	t.Logf("kill -9 of the leader to the first grant by the new one, %d runs: p50 %v, max %v (each: %v)",
		runs, percentileOf(toGrant, 50), percentileOf(toGrant, 100), roundAll(toGrant))
	t.Logf("kill -9 of the leader to a new leader named by the survivors: p50 %v, max %v",
		percentileOf(toLeader, 50), percentileOf(toLeader, 100))
}

// awaitElected polls the survivors until one of them leads, and returns the
// time since killed (or the time it gave up, bounded).
func awaitElected(ctx context.Context, survivors []*clusterNode, killed time.Time) time.Duration {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Since(killed) < 20*time.Second {
		for _, n := range survivors {
			if st, err := n.status(); err == nil && st.GetNode().GetRole() == "leader" {
				return time.Since(killed)
			}
		}
		select {
		case <-ctx.Done():
			return time.Since(killed)
		case <-tick.C:
		}
	}
	return time.Since(killed)
}

func percentileOf(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100].Round(time.Millisecond)
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// Members of a fixed --peers cluster announce their client URLs through the
// leader, so any node lists every member with its URL (and `dlm members
// list` shows them), without any membership change.
func TestMembersListEveryClientURL(t *testing.T) {
	c := startCluster(t, 3)
	follower := c.others(c.awaitLeader())[0]
	pollUntil(t, 20*time.Second, "every member's URL known to a follower", func() (bool, string) {
		st, err := follower.status()
		if err != nil {
			return false, err.Error()
		}
		for _, m := range st.GetMembers() {
			if m.GetClientUrl() == "" || m.GetSuffrage() != "voter" {
				return false, fmt.Sprint(st.GetMembers())
			}
		}
		return len(st.GetMembers()) == 3, fmt.Sprint(st.GetMembers())
	})
	out, errOut, err := cliRun(t, "", "members", "list", "--server", follower.URL())
	if err != nil {
		t.Fatalf("members list: %v\n%s", err, errOut)
	}
	for _, n := range c.nodes {
		if !strings.Contains(out, n.URL()) {
			t.Fatalf("members list lacks %s:\n%s", n.URL(), out)
		}
	}
}
