package main

// Storage faults outside the modeled ones (issue 8): a node whose log
// suffix was cleared restarts; a byte flipped or cut in a copy of a real
// data folder is caught and never served; a corrupt follower refuses while
// its cluster goes on.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/internal/e2e"
)

// records are the appends seedFolder commits, one section each.
func records() []string {
	var out []string
	for i := 100; i < 110; i++ {
		out = append(out, fmt.Sprintf("s%d,", i))
	}
	return out
}

// seedFolder runs a single node, commits records() to file_0 and kills it,
// leaving a real data folder to damage copies of.
func seedFolder(t *testing.T, ctx context.Context, args ...string) (dir string, n *clusterNode) {
	t.Helper()
	dir = t.TempDir()
	n = singleNode(t, dir, args...)
	n.start()
	cl, err := client.New(ctx, []string{n.URL()}, client.WithRetryBudget(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range records() {
		section(t, ctx, cl, r)
	}
	cl.Close(ctx)
	return dir, n
}

// copyFolder copies a (stopped) node's data folder.
func copyFolder(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// flipIn flips one bit of the first occurrence of needle in every file
// matching pattern that holds it, and returns those files.
func flipIn(t *testing.T, pattern string, needle []byte, at int) []string {
	t.Helper()
	paths, _ := filepath.Glob(pattern)
	var hit []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, needle)
		if i < 0 {
			continue
		}
		b[i+at] ^= 0x01
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		hit = append(hit, p)
	}
	if len(hit) == 0 {
		t.Fatalf("%q is in no file matching %s", needle, pattern)
	}
	return hit
}

// awaitFault waits until the node reports a storage fault and returns it.
func awaitFault(t *testing.T, n *clusterNode) string {
	t.Helper()
	var fault string
	pollUntil(t, 20*time.Second, n.ID+" reporting a storage fault", func() (bool, string) {
		st, err := n.status()
		if err != nil {
			return false, err.Error()
		}
		fault = st.GetNode().GetStorageFault()
		return fault != "", "role " + st.GetNode().GetRole()
	})
	return fault
}

// health asks the gRPC health service (through the Connect protocol, in
// JSON) how the node's LockService is.
func health(t *testing.T, n *clusterNode) string {
	t.Helper()
	res, err := n.HTTPClient().Post(n.URL()+"/grpc.health.v1.Health/Check", "application/json", strings.NewReader(`{"service":"dlm.v1.LockService"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// refusesWithFault checks that the node answers a read and a new session
// with STORAGE_FAULT naming what, and reports itself NOT_SERVING.
func refusesWithFault(t *testing.T, n *clusterNode, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := n.API().ReadFile(ctx, connect.NewRequest(&dlmv1.ReadFileRequest{File: "file_0"}))
	if d := errorDetail(err); d.GetReason() != dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT || !strings.Contains(err.Error(), what) {
		t.Fatalf("ReadFile on a faulty node = %v (%v), want STORAGE_FAULT naming %q", err, res, what)
	}
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("code %v, want Unavailable", connect.CodeOf(err))
	}
	_, err = n.API().Init(ctx, connect.NewRequest(&dlmv1.InitRequest{Name: "x"}))
	if d := errorDetail(err); d.GetReason() != dlmv1.ErrorReason_ERROR_REASON_STORAGE_FAULT {
		t.Fatalf("Init on a faulty node = %v, want STORAGE_FAULT", err)
	}
	if h := health(t, n); !strings.Contains(h, "NOT_SERVING") {
		t.Fatalf("health of a faulty node = %s", h)
	}
}

// A byte flipped in a committed entry's payload ("s105," read as "s115,")
// is caught by the entry's checksum when the node replays its log: it
// reports a storage fault naming the entry and never serves the bytes.
func TestCorruptLogEntryIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir, seed := seedFolder(t, ctx)
	seed.Kill()
	cp := copyFolder(t, dir)
	flipIn(t, filepath.Join(cp, "raft", "wal", "*.wal"), []byte("s105,"), 2)

	n := singleNode(t, cp)
	n.start()
	fault := awaitFault(t, n)
	for _, want := range []string{"log entry ", "checksum", cp} {
		if !strings.Contains(fault, want) {
			t.Fatalf("fault %q does not say %q", fault, want)
		}
	}
	refusesWithFault(t, n, "log entry ")
	want := strings.Join(records(), "")
	if got := onDisk(t, cp, "file_0"); strings.Contains(got, "s115,") || !strings.HasPrefix(want, got) {
		t.Fatalf("file_0 on disk = %q: not a prefix of %q", got, want)
	}
	if st, err := n.status(); err != nil || st.GetNode().GetRole() != "shutdown" {
		t.Fatalf("the faulty node's role = %q (%v), want shutdown", st.GetNode().GetRole(), err)
	}
	if strings.Contains(n.Log(), "panic") {
		t.Fatal("the node panicked")
	}
	t.Logf("fault: %s", fault)
}

// The newest log segment is cut off inside the last record's entry:
// raft-wal drops the torn tail batches on open. The node either starts with a shorter log and
// serves a prefix of what was committed, or refuses clearly; it never
// serves other bytes and never panics.
func TestTruncatedLogTailStartsOrRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir, seed := seedFolder(t, ctx)
	seed.Kill()
	cp := copyFolder(t, dir)
	segs, _ := filepath.Glob(filepath.Join(cp, "raft", "wal", "*.wal"))
	slices.Sort(segs)
	last := segs[len(segs)-1]
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	// Cut inside the entry that carries the last record's append: the
	// batches from there on are torn.
	cut := bytes.LastIndex(b, []byte("s109,"))
	if cut < 0 {
		t.Fatal("the last record is not in the newest segment")
	}
	if err := os.Truncate(last, int64(cut+2)); err != nil {
		t.Fatal(err)
	}

	n := singleNode(t, cp)
	if err := n.Launch(); err != nil {
		log := n.Log()
		if strings.Contains(log, "panic") || !strings.Contains(log, "log") {
			t.Fatalf("refused without a clear message: %v\n%s", err, log)
		}
		t.Logf("refused: %s", strings.TrimSpace(log))
		return
	}
	want := strings.Join(records(), "")
	got := awaitRead(t, n, "file_0")
	if !strings.HasPrefix(want, got) || len(got)%len("s100,") != 0 {
		t.Fatalf("file_0 = %q: not a prefix of whole records of %q", got, want)
	}
	t.Logf("started; file_0 holds %d of %d records", len(got)/len("s100,"), len(records()))
}

// A byte flipped in a snapshot's copy of file_0: hashicorp/raft's snapshot
// checksum (and dlm's per-file CRC-32C behind it) catch it. The node either
// falls back to an older snapshot and the log, serving exactly what was
// committed, or refuses to start naming the snapshot file; it never serves
// the flipped byte.
func TestCorruptSnapshotIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir, seed := seedFolder(t, ctx, "--snapshot-threshold", "4", "--snapshot-interval", "50ms")
	pollUntil(t, 20*time.Second, "a snapshot holding s105,", func() (bool, string) {
		metas, _ := filepath.Glob(filepath.Join(dir, "raft", "snapshots", "*", "state.bin"))
		for _, m := range metas {
			if b, err := os.ReadFile(m); err == nil && bytes.Contains(b, []byte("s105,")) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d snapshots", len(metas))
	})
	seed.Kill()
	cp := copyFolder(t, dir)
	hit := flipIn(t, filepath.Join(cp, "raft", "snapshots", "*", "state.bin"), []byte("s105,"), 2)
	before, err := e2e.ReplicaFiles(cp)
	if err != nil {
		t.Fatal(err)
	}

	n := singleNode(t, cp)
	if err := n.Launch(); err != nil {
		log := n.Log()
		if !strings.Contains(log, "state.bin") || !strings.Contains(log, "CRC mismatch") || strings.Contains(log, "panic") {
			t.Fatalf("refused without naming the snapshot file: %v\n%s", err, log)
		}
		// A failed start leaves the files as it found them.
		after, err := e2e.ReplicaFiles(cp)
		if err != nil {
			t.Fatal(err)
		}
		for name, b := range before {
			if !bytes.Equal(after[name], b) {
				t.Fatalf("the failed start changed %s from %q to %q", name, e2e.Clip(b), e2e.Clip(after[name]))
			}
		}
		t.Logf("refused (%d corrupt snapshots): %s", len(hit), strings.TrimSpace(log))
		return
	}
	got := awaitRead(t, n, "file_0")
	if want := strings.Join(records(), ""); got != want {
		t.Fatalf("file_0 = %q after falling back, want %q", got, want)
	}
	t.Logf("fell back past %d corrupt snapshots", len(hit))
}

// awaitRead reads a file from a node once it serves reads (a restarted
// leader first catches up).
func awaitRead(t *testing.T, n *clusterNode, name string) string {
	t.Helper()
	var data string
	pollUntil(t, 20*time.Second, n.ID+" serving reads", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		res, err := n.API().ReadFile(ctx, connect.NewRequest(&dlmv1.ReadFileRequest{File: name}))
		if err != nil {
			return false, err.Error()
		}
		data = string(res.Msg.GetData())
		return true, ""
	})
	return data
}

// A leader appends an entry it cannot commit (both followers are stalled),
// then is stalled itself while the followers elect a new leader and commit
// other entries; on waking, it clears its log suffix ("clearing log
// suffix") and takes the new leader's entries. Killed with SIGKILL and
// restarted, it must start and catch up: with raft-wal v0.4.0 its log no
// longer opened ("sealed segment has no index block", upstream raft-wal
// #31) and the node could never start again.
func TestRestartAfterClearedLogSuffix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	old := c.awaitLeader()
	cl := c.newClient(ctx, "writer")
	section(t, ctx, cl, "before,")

	// The followers are killed, not stalled: a stalled one would read the
	// leader's entry from its socket on waking and keep it. The old leader
	// then appends a session to its own log but can never commit it. On a
	// busy machine it may step down before the call reaches it: then the
	// followers come back and it is tried again, a bounded number of times.
	followers := c.others(old)
	for attempt := 1; ; attempt++ {
		for _, f := range followers {
			f.Kill()
		}
		uctx, ucancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := old.API().Init(uctx, connect.NewRequest(&dlmv1.InitRequest{Name: "uncommitted", LeaseMs: 20000}))
		ucancel()
		if err == nil {
			t.Fatal("a session opened with both followers down")
		}
		if d := errorDetail(err); d.GetReason() != dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER || strings.Contains(err.Error(), "leadership lost") {
			break // proposed: in the old leader's log
		}
		if attempt == 3 {
			t.Fatalf("%s stepped down before it could append an entry, %d times: %v", old.ID, attempt, err)
		}
		for _, f := range followers {
			f.start()
		}
		old = c.awaitLeader()
		followers = c.others(old)
	}
	old.Pause()
	for _, f := range followers {
		f.start()
	}
	leader := c.awaitLeader()
	section(t, ctx, cl, "after,")
	old.Resume()
	pollUntil(t, 20*time.Second, old.ID+" clearing its log suffix", func() (bool, string) {
		return strings.Contains(old.Log(), "clearing log suffix"), "not in its log yet"
	})
	c.awaitCaughtUp(old)

	old.Kill()
	old.start()
	c.awaitReplicasIdentical()
	if got := onDisk(t, old.Data, "file_0"); got != "before,after," {
		t.Fatalf("%s's file_0 = %q after restarting, want before,after,", old.ID, got)
	}
	t.Logf("%s led, cleared its suffix under %s, restarted and caught up", old.ID, leader.ID)
}

// A stopped follower's log is corrupted (a byte flipped in a committed
// entry's payload) and it is restarted: it finds the fault while catching
// up, leaves Raft and refuses every call with STORAGE_FAULT, while the two
// others go on serving; wiping its data folder and restarting it brings it
// back with byte-identical files.
func TestCorruptFollowerRefusesClusterGoesOn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	leader := c.awaitLeader()
	cl := c.newClient(ctx, "writer")
	for _, r := range records() {
		section(t, ctx, cl, r)
	}
	f := c.others(leader)[0]
	c.awaitCaughtUp(f)
	f.Kill()
	flipIn(t, filepath.Join(f.Data, "raft", "wal", "*.wal"), []byte("s105,"), 2)
	f.start()
	fault := awaitFault(t, f)
	if !strings.Contains(fault, "log entry ") || !strings.Contains(fault, f.Data) {
		t.Fatalf("fault %q does not name the entry and the data folder", fault)
	}
	refusesWithFault(t, f, "log entry ")
	if out := cliMust(t, "", "status", "--server", f.URL()); !strings.Contains(out, "FAULT") || !strings.Contains(out, "storage fault: log entry ") {
		t.Fatalf("dlm status of the faulty node does not show the fault:\n%s", out)
	}
	// The cluster's table (every listed server about itself) marks it too.
	if out := cliMust(t, "", "status", "--server", strings.Join(c.urls(), ",")); !strings.Contains(out, "storage fault (") {
		t.Fatalf("dlm status of the cluster does not mark the faulty node:\n%s", out)
	}

	section(t, ctx, cl, "later,")
	want := strings.Join(records(), "") + "later,"
	if got := c.readFile(ctx, "file_0"); got != want {
		t.Fatalf("file_0 = %q, want %q", got, want)
	}
	if got := onDisk(t, f.Data, "file_0"); strings.Contains(got, "s115,") {
		t.Fatalf("the faulty follower wrote the corrupt record: %q", got)
	}

	// The documented fix: wipe its data folder and start it again.
	f.Kill()
	if err := os.RemoveAll(f.Data); err != nil {
		t.Fatal(err)
	}
	f.start()
	c.awaitReplicasIdentical()
}

// Log segments are preallocated at --log-segment-size (8 MiB by default,
// not raft-wal's 64 MiB), so a small disk can hold a node; a size out of
// range is refused before anything starts.
func TestLogSegmentSize(t *testing.T) {
	segmentSizes := func(n *clusterNode) []int64 {
		segs, _ := filepath.Glob(filepath.Join(n.Data, "raft", "wal", "*.wal"))
		var sizes []int64
		for _, s := range segs {
			if fi, err := os.Stat(s); err == nil {
				sizes = append(sizes, fi.Size())
			}
		}
		return sizes
	}
	def := singleNode(t, t.TempDir())
	def.start()
	small := singleNode(t, t.TempDir(), "--log-segment-size", "1048576")
	small.start()
	if got := segmentSizes(def); len(got) != 1 || got[0] != 8<<20 {
		t.Fatalf("default segment sizes %v, want one of 8 MiB", got)
	}
	if got := segmentSizes(small); len(got) != 1 || got[0] != 1<<20 {
		t.Fatalf("segment sizes with --log-segment-size 1048576: %v", got)
	}
	_, errOut, err := cliRun(t, "", "serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--log-segment-size", "1000")
	if err == nil || !strings.Contains(err.Error()+errOut, "--log-segment-size") {
		t.Fatalf("serve with a 1000-byte segment = %v %s", err, errOut)
	}
}
