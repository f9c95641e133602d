package main

// Backups and disaster recovery against real `dlm serve` processes: a
// snapshot saved under load and restored into a new cluster, damaged
// snapshot files refused, and a cluster brought back from one survivor after
// the other two were killed and wiped.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/internal/e2e"
	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/servertest"
)

// loadWriters runs critical sections from several clients until stopped.
// Section S of writer w appends "S.0;" and "S.1;" to file_0 and "S.2;" to
// file_w, so a section is whole only if it is in both files. Every attempt
// has a new id, so "exactly once" is checkable by id.
type loadWriters struct {
	mu      sync.Mutex
	acked   map[string]time.Time // section id → when its release was acknowledged
	stop    chan struct{}
	cancel  context.CancelFunc
	clients []*client.Client
	wg      sync.WaitGroup
	errs    chan error
}

func startWriters(t *testing.T, ctx context.Context, urls []string, n int) *loadWriters {
	t.Helper()
	lw := &loadWriters{acked: make(map[string]time.Time), stop: make(chan struct{}), errs: make(chan error, n)}
	// Halting cancels the sections in flight, so that it never waits out a
	// retry budget against servers that are gone.
	ctx, lw.cancel = context.WithCancel(ctx)
	for w := 1; w <= n; w++ {
		// A short lease: a section cut short by halt ends soon after, even
		// when no server was there to hear the close.
		c, err := client.New(ctx, urls, client.WithName(fmt.Sprintf("w%d", w)), client.WithRetryBudget(10*time.Second), client.WithLease(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		lw.clients = append(lw.clients, c)
		lw.wg.Add(1)
		go func() {
			defer lw.wg.Done()
			for i := 0; i < 10000; i++ {
				select {
				case <-lw.stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				appends := []fileAppend{{"file_0", id + ".0;"}, {"file_0", id + ".1;"}, {fmt.Sprintf("file_%d", w), id + ".2;"}}
				if _, err := sectionOnce(ctx, c, appends, nil); err != nil {
					select {
					case <-lw.stop:
						return // failures while the test injects faults are expected
					default:
					}
					if ctx.Err() != nil || errors.Is(err, client.ErrLockExpired) || errors.Is(err, client.ErrSessionExpired) {
						continue
					}
					lw.errs <- fmt.Errorf("%s: %w", id, err)
					return
				}
				lw.mu.Lock()
				lw.acked[id] = time.Now()
				lw.mu.Unlock()
			}
		}()
	}
	return lw
}

// halt stops the writers and fails the test if one failed.
func (lw *loadWriters) halt(t *testing.T) {
	t.Helper()
	close(lw.stop)
	lw.cancel()
	lw.wg.Wait()
	for _, c := range lw.clients {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.Close(ctx) // best effort: the servers may be gone
		cancel()
	}
	select {
	case err := <-lw.errs:
		t.Fatal(err)
	default:
	}
}

// ackedBefore lists the sections acknowledged before at.
func (lw *loadWriters) ackedBefore(at time.Time) []string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	var ids []string
	for id, when := range lw.acked {
		if when.Before(at) {
			ids = append(ids, id)
		}
	}
	return ids
}

func (lw *loadWriters) count() int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return len(lw.acked)
}

// awaitAcked waits until at least n sections are acknowledged.
func (lw *loadWriters) awaitAcked(t *testing.T, n int) {
	t.Helper()
	pollUntil(t, 20*time.Second, fmt.Sprintf("%d sections acknowledged", n), func() (bool, string) {
		select {
		case err := <-lw.errs:
			t.Fatal(err)
		default:
		}
		c := lw.count()
		return c >= n, fmt.Sprintf("%d acknowledged", c)
	})
}

// checkSections checks files written by loadWriters: every section in them
// is whole and appears once, and every id in want is there. It returns how
// many sections the files hold.
func checkSections(t *testing.T, files map[string][]byte, writers int, want []string) int {
	t.Helper()
	records := func(name string) []string {
		s := strings.TrimSuffix(string(files[name]), ";")
		if s == "" {
			return nil
		}
		return strings.Split(s, ";")
	}
	sections := make(map[string]bool)
	f0 := records("file_0")
	if len(f0)%2 != 0 {
		t.Fatalf("file_0 holds %d records: a section is cut", len(f0))
	}
	for i := 0; i < len(f0); i += 2 {
		id, ok := strings.CutSuffix(f0[i], ".0")
		if !ok || f0[i+1] != id+".1" {
			t.Fatalf("file_0 records %d and %d are %q and %q: not one whole section", i, i+1, f0[i], f0[i+1])
		}
		if sections[id] {
			t.Fatalf("section %s is in file_0 twice", id)
		}
		sections[id] = true
	}
	inOwn := 0
	for w := 1; w <= writers; w++ {
		for _, r := range records(fmt.Sprintf("file_%d", w)) {
			id, ok := strings.CutSuffix(r, ".2")
			if !ok || !strings.HasPrefix(id, fmt.Sprintf("w%d-", w)) {
				t.Fatalf("file_%d holds a stray record %q", w, r)
			}
			if !sections[id] {
				t.Fatalf("section %s is in file_%d but not in file_0: half a section", id, w)
			}
			sections[id] = false // seen in both files; a second sighting fails below
			inOwn++
		}
	}
	for id, onlyFile0 := range sections {
		if onlyFile0 {
			t.Fatalf("section %s is in file_0 but not in its own file: half a section (or twice in its own)", id)
		}
	}
	if inOwn != len(sections) {
		t.Fatalf("%d records in the writers' files for %d sections: a section is there twice", inOwn, len(sections))
	}
	for _, id := range want {
		if _, ok := sections[id]; !ok {
			t.Fatalf("acknowledged section %s is missing", id)
		}
	}
	return len(sections)
}

// readFiles reads files from a server that may still be taking office.
func readFiles(t *testing.T, ctx context.Context, url string, names ...string) map[string][]byte {
	t.Helper()
	r, err := client.NewReader([]string{url}, client.WithRetryBudget(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	files := make(map[string][]byte)
	for _, name := range names {
		if files[name], err = r.ReadFile(ctx, name); err != nil {
			t.Fatalf("ReadFile %s: %v", name, err)
		}
	}
	return files
}

// saveSnapshot runs `dlm snapshot save` and fails the test if it fails.
func saveSnapshot(t *testing.T, path string, servers ...string) string {
	t.Helper()
	return cliMust(t, "", "snapshot", "save", path, "--server", strings.Join(servers, ","))
}

// A snapshot is saved, through a follower, while three clients run critical
// sections on a three-node cluster. Restored into a fresh folder, it boots a
// one-node cluster whose files hold every section acknowledged before the
// save began, each once and whole, byte for byte a prefix of the original
// cluster's files; a follower asked directly answers NOT_LEADER naming the
// leader.
func TestSnapshotSaveUnderLoadAndRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	leader := c.awaitLeader()
	follower := c.others(leader)[0]

	// A follower refuses, naming the leader, before any stream starts.
	s, err := dlmv1connect.NewClusterServiceClient(http.DefaultClient, follower.URL(), connect.WithInterceptors(auth.Bearer(servertest.AdminToken))).SaveSnapshot(ctx, connect.NewRequest(&dlmv1.SaveSnapshotRequest{}))
	if err == nil {
		if s.Receive() {
			t.Fatal("a follower streamed a snapshot")
		}
		err = s.Err()
		s.Close()
	}
	if d := errorDetail(err); connect.CodeOf(err) != connect.CodeUnavailable || d.GetReason() != dlmv1.ErrorReason_ERROR_REASON_NOT_LEADER || d.GetLeaderUrl() != leader.URL() {
		t.Fatalf("SaveSnapshot at a follower: %v (detail %v), want Unavailable NOT_LEADER naming %s", err, d, leader.URL())
	}

	// Some megabytes in file_9 first, so the snapshot streams in many chunks
	// and copies the files while the writers append.
	big := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	filler := c.newClient(ctx, "filler")
	lk, err := filler.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(big); i += 1 << 20 {
		if err := lk.Append(ctx, "file_9", big[i:i+1<<20]); err != nil {
			t.Fatal(err)
		}
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatal(err)
	}

	const writers = 3
	lw := startWriters(t, ctx, c.urls(), writers)
	lw.awaitAcked(t, 20)
	path := filepath.Join(t.TempDir(), "backup.snap")
	began := time.Now()
	out := saveSnapshot(t, path, follower.URL())
	saved := time.Now()
	before := lw.ackedBefore(began)
	lw.awaitAcked(t, lw.count()+10) // the writers were still going
	lw.halt(t)
	t.Logf("%s; %d sections acknowledged before the save, %d during it, %d in all", strings.TrimSpace(out),
		len(before), len(lw.ackedBefore(saved))-len(before), lw.count())

	data := filepath.Join(t.TempDir(), "restored")
	const bump = 1000000
	cliMust(t, "", "snapshot", "restore", path, "--data", data, "--bump-index", fmt.Sprint(bump))
	srv := startServer(t, freeAddr(t), data)
	restored := readFiles(t, ctx, srv.URL(), "file_0", "file_1", "file_2", "file_3")
	if nine := readFiles(t, ctx, srv.URL(), "file_9")["file_9"]; !bytes.Equal(nine, big) {
		t.Fatalf("file_9 restored with %d bytes, not the %d written", len(nine), len(big))
	}
	n := checkSections(t, restored, writers, before)
	if n < len(before) {
		t.Fatalf("%d sections restored, %d acknowledged before the save", n, len(before))
	}
	onDisk, err := e2e.ReplicaFiles(data)
	if err != nil {
		t.Fatal(err)
	}
	c.awaitReplicasIdentical()
	original, err := e2e.ReplicaFiles(leader.Data)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range restored {
		if string(onDisk[name]) != string(b) {
			t.Fatalf("%s on the restored node's disk differs from what it serves", name)
		}
		if !strings.HasPrefix(string(original[name]), string(b)) {
			t.Fatalf("restored %s is not a prefix of the original cluster's (%d bytes, %d)", name, len(b), len(original[name]))
		}
	}

	// The restored service takes new sections, with tokens past any the
	// original cluster issued (--bump-index).
	cl := newClient(t, ctx, srv.URL(), "after")
	r := runSection(ctx, cl, appendsOf("after;", 1, "file_0"), nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if last := c.commitIndex(c.awaitLeader()); r.token <= bump || r.token <= last {
		t.Fatalf("token %d after a restore with --bump-index %d; the original cluster is at index %d", r.token, bump, last)
	}
	if got := readFile(t, srv.URL(), "file_0"); !strings.HasSuffix(got, "after;") {
		t.Fatalf("file_0 after a new section ends %q", got[max(len(got)-20, 0):])
	}
	t.Logf("%d sections restored", n)
}

// The same file restores every member of a new fixed cluster (--peers),
// which elects a leader, serves the saved files on every replica and takes
// new sections; sessions of the saved state are ended, so a held lock of the
// saved state is not held after the restore.
func TestSnapshotRestoreFixedCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src := startServer(t, freeAddr(t), t.TempDir())
	c1 := newClient(t, ctx, src.URL(), "C1")
	section(t, ctx, c1, "A", "B")
	// C2 holds the lock with an append staged when the snapshot is taken.
	c2 := newClient(t, ctx, src.URL(), "C2")
	lk, err := c2.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Append(ctx, "file_0", []byte("staged")); err != nil {
		t.Fatal(err)
	}
	// C4 waits in the queue behind it: ending C2's session grants C4 the
	// lock, and C4's session must end too.
	c4 := newClient(t, ctx, src.URL(), "C4")
	waitCtx, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()
	go c4.Acquire(waitCtx)
	srcReader, err := client.NewReader([]string{src.URL()})
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "C4 queued", func() (bool, string) {
		st, err := srcReader.Status(ctx, true)
		if err != nil {
			return false, err.Error()
		}
		return len(st.GetLock().GetQueue()) == 1, fmt.Sprint(st.GetLock())
	})
	path := filepath.Join(t.TempDir(), "backup.snap")
	saveSnapshot(t, path, src.URL())

	addrs := freeAddrs(t, 6)
	var peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, addrs[2*i+1]))
	}
	var nodes []*clusterNode
	for i := range 3 {
		n := newNode(t, fmt.Sprintf("n%d", i+1), addrs[2*i], filepath.Join(t.TempDir(), "data"))
		n.RaftAddr = addrs[2*i+1]
		out := cliMust(t, "", "snapshot", "restore", path, "--data", n.Data, "--id", n.ID, "--peers", strings.Join(peers, ","))
		if i == 0 {
			t.Log(strings.TrimSpace(out))
		}
		nodes = append(nodes, n)
	}
	c := clusterOf(t, nodes)
	for _, n := range c.nodes {
		n.start()
	}
	leader := c.awaitLeader()
	st, err := c.reader.Status(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if h := st.GetLock().GetHolder(); h != 0 || len(st.GetLock().GetQueue()) != 0 || len(st.GetSessions()) != 0 || len(st.GetMembers()) != 3 {
		t.Fatalf("restored cluster: holder %d, queue %v, sessions %v, members %v; want no holder, no queue, no session, 3 members", h, st.GetLock().GetQueue(), st.GetSessions(), st.GetMembers())
	}
	if got := c.readFile(ctx, "file_0"); got != "AB" {
		t.Fatalf("file_0 = %q, want AB (the staged append of an ended session is not committed)", got)
	}
	c3 := c.newClient(ctx, "C3")
	r := runSection(ctx, c3, appendsOf("C", 1, "file_0"), nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.token <= st.GetLock().GetLastToken() {
		t.Fatalf("new token %d is not past the saved last token %d", r.token, st.GetLock().GetLastToken())
	}
	c.awaitReplicasIdentical()
	if got := c.readFile(ctx, "file_0"); got != "ABC" {
		t.Fatalf("file_0 = %q, want ABC", got)
	}
	t.Logf("leader %s; new section's token %d", leader.ID, r.token)
}

// A snapshot file with any byte flipped, or cut short, or with bytes added,
// is refused by restore and by verify, and nothing is laid down; restore
// refuses a folder that is not empty; save refuses to overwrite a file.
func TestSnapshotFileChecks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := startServer(t, freeAddr(t), t.TempDir())
	section(t, ctx, newClient(t, ctx, srv.URL(), "C1"), "some ", "records")
	dir := t.TempDir()
	path := filepath.Join(dir, "backup.snap")
	saveSnapshot(t, path, srv.URL())
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cliMust(t, "", "snapshot", "verify", path)

	if _, _, err := cliRun(t, "", "snapshot", "save", path, "--server", srv.URL()); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("save over an existing file: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(good) {
		t.Fatal("a refused save changed the existing file")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*partial*")); len(leftovers) > 0 {
		t.Fatalf("partial files left behind: %v", leftovers)
	}

	damaged := map[string][]byte{
		"a flipped byte in the body":                         flip(good, headerLen+len(good[headerLen:])/2),
		"the last byte flipped":                              flip(good, len(good)-1),
		"a flipped digit of the index":                       flip(good, strings.Index(string(good), "index ")+len("index ")+19),
		"a flipped digit of the checksum":                    flip(good, strings.Index(string(good), "sha256 ")+len("sha256 ")),
		"a flipped byte of the magic":                        flip(good, 0),
		"the last byte cut":                                  good[:len(good)-1],
		"a byte added":                                       append(append([]byte(nil), good...), 0),
		"only the header":                                    good[:headerLen],
		"a header cut short":                                 good[:headerLen/2],
		"an empty file":                                      nil,
		"a header of another format (9)":                     []byte(strings.Replace(string(good), "dlm-snapshot 1\n", "dlm-snapshot 9\n", 1)),
		"a checksum that fits a body that is not a snapshot": forged([]byte("no snapshot in here")),
	}
	for what, b := range damaged {
		t.Run(what, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.snap")
			if err := os.WriteFile(bad, b, 0o644); err != nil {
				t.Fatal(err)
			}
			// verify checks integrity only: a body that fits its checksum
			// but is no snapshot is caught by restore, which decodes it.
			if _, _, err := cliRun(t, "", "snapshot", "verify", bad); err == nil && !strings.Contains(what, "not a snapshot") {
				t.Fatal("verify accepted it")
			}
			data := filepath.Join(t.TempDir(), "data")
			_, _, err := cliRun(t, "", "snapshot", "restore", bad, "--data", data)
			if err == nil {
				t.Fatal("restore accepted it")
			}
			if _, serr := os.Stat(data); !errors.Is(serr, os.ErrNotExist) {
				t.Fatalf("restore refused (%v) but laid down %s", err, data)
			}
			if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(data), ".*")); len(leftovers) > 0 {
				t.Fatalf("restore left %v behind", leftovers)
			}
		})
	}

	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cliRun(t, "", "snapshot", "restore", path, "--data", full); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into a folder that is not empty: %v, want a refusal", err)
	}
	if entries, _ := os.ReadDir(full); len(entries) != 1 {
		t.Fatalf("a refused restore changed the folder: %v", entries)
	}
}

// forged is a file whose header and checksum fit body.
func forged(body []byte) []byte {
	h := snapshotHeader{Index: 7, Term: 1, Size: int64(len(body))}
	h.SHA256 = sha256.Sum256(append(h.covered(), body...))
	return append(h.encode(), body...)
}

func flip(b []byte, i int) []byte {
	out := append([]byte(nil), b...)
	out[i] ^= 0x04
	return out
}

// A three-node cluster under load loses both followers for good (kill -9,
// folders deleted) and then its leader. `dlm recover` makes the former
// leader the only member; it serves every section ever acknowledged, once
// and whole, and a fresh node joins it and ends with identical files.
func TestRecoverFromOneSurvivor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	const writers = 2
	lw := startWriters(t, ctx, c.urls(), writers)
	lw.awaitAcked(t, 20)

	// The leader has every committed entry in its log, so it is the member
	// to recover: every acknowledged section is in it.
	survivor := c.awaitLeader()
	for _, n := range c.others(survivor) {
		n.Kill()
		if err := os.RemoveAll(n.Data); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := cliRun(t, "", "recover", "--data", survivor.Data); err == nil || !strings.Contains(err.Error(), "running") {
		t.Fatalf("recover of a running node: %v, want a refusal", err)
	}
	survivor.Kill()
	lw.halt(t)
	acked := lw.ackedBefore(time.Now())

	if _, _, err := cliRun(t, "", "recover", "--data", survivor.Data, "--id", "not-"+survivor.ID); err == nil {
		t.Fatal("recover accepted a folder of another node")
	}
	out := cliMust(t, "", "recover", "--data", survivor.Data, "--id", survivor.ID)
	t.Log(strings.TrimSpace(out))
	survivor.start()
	leader := c.awaitLeader()
	if leader != survivor {
		t.Fatalf("%s leads, want %s", leader.ID, survivor.ID)
	}
	files := readFiles(t, ctx, survivor.URL(), "file_0", "file_1", "file_2")
	n := checkSections(t, files, writers, acked)
	t.Logf("%d sections acknowledged, %d in the recovered files", len(acked), n)

	// A fresh node joins the one-node cluster and catches up byte for byte.
	fresh := newNode(t, "n4", "127.0.0.1:0", t.TempDir(), "--id", "n4", "--join", survivor.URL())
	fresh.RaftAddr = "127.0.0.1:0" // learned at its start
	fresh.start()
	pollUntil(t, 20*time.Second, "n4 a voter", func() (bool, string) {
		st, err := survivor.status()
		if err != nil {
			return false, err.Error()
		}
		for _, m := range st.GetMembers() {
			if m.GetId() == "n4" && m.GetSuffrage() == "voter" {
				return len(st.GetMembers()) == 2, fmt.Sprint(st.GetMembers())
			}
		}
		return false, fmt.Sprint(st.GetMembers())
	})
	cl := newClient(t, ctx, survivor.URL(), "after")
	section(t, ctx, cl, "after;")
	c.nodes = []*clusterNode{survivor, fresh}
	c.awaitReplicasIdentical()
}
