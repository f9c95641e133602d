package fsm_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/fsm"
	"github.com/dlm/dlm/server/lockstate"
)

// sink is an in-memory raft.SnapshotSink.
type sink struct {
	bytes.Buffer
	cancelled bool
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { s.cancelled = true; return nil }
func (s *sink) Close() error  { return nil }

type applier struct {
	t     *testing.T
	f     *fsm.FSM
	index uint64
}

func (a *applier) apply(cmd *raftlogv1.Command) lockstate.Result {
	a.t.Helper()
	a.index++
	data, err := proto.Marshal(cmd)
	if err != nil {
		a.t.Fatal(err)
	}
	return a.f.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data}).(lockstate.Result)
}

func caller(id, seq uint64) *raftlogv1.Caller {
	return &raftlogv1.Caller{ClientId: id, Secret: "s", Seq: seq}
}

// section commits one critical section of appends by session 1.
func (a *applier) section(seq uint64, file string, data ...string) uint64 {
	a.t.Helper()
	res := a.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Acquire{Acquire: &raftlogv1.Acquire{Caller: caller(1, seq)}}})
	token := res.Outcome.GetToken()
	for _, d := range data {
		seq++
		a.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Append{Append: &raftlogv1.Append{
			Caller: caller(1, seq), Token: token, File: file, Data: []byte(d), MaxSectionBytes: 1 << 20,
		}}})
	}
	seq++
	a.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Release{Release: &raftlogv1.Release{Caller: caller(1, seq), Token: token}}})
	return seq + 1
}

func open(t *testing.T, dir string) *fsm.FSM {
	t.Helper()
	f, err := fsm.Open(dir, lockstate.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestAppliedReleaseWritesFiles(t *testing.T) {
	dir := t.TempDir()
	a := &applier{t: t, f: open(t, dir)}
	a.apply(&raftlogv1.Command{Op: &raftlogv1.Command_OpenSession{OpenSession: &raftlogv1.OpenSession{Secret: "s", LeaseMs: 1000}}})
	a.section(1, "file_7", "hello ", "world")
	if b, _ := os.ReadFile(filepath.Join(dir, "file_7")); string(b) != "hello world" {
		t.Fatalf("file_7 = %q", b)
	}
	data, off, size, err := a.f.ReadFile("file_7", -5, 100)
	if err != nil || string(data) != "world" || off != 6 || size != 11 {
		t.Fatalf("ReadFile tail = %q %d %d %v", data, off, size, err)
	}
	if a.f.NodeURL("n1") != "" {
		t.Fatal("unknown node has a URL")
	}
	a.apply(&raftlogv1.Command{Op: &raftlogv1.Command_NodeAddress{NodeAddress: &raftlogv1.NodeAddress{Id: "n1", ClientUrl: "http://x"}}})
	if a.f.NodeURL("n1") != "http://x" {
		t.Fatal("node address not recorded")
	}
}

// The first applied entry empties the files: whatever a crash left in them
// is rebuilt from the snapshot and the log. Open alone leaves them as they
// are, so that a start that fails before Raft runs changes nothing.
func TestFirstApplyStartsFromEmptyFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "file_1"), []byte("torn write"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &applier{t: t, f: open(t, dir)}
	if b, _ := os.ReadFile(filepath.Join(dir, "file_1")); string(b) != "torn write" {
		t.Fatalf("Open changed file_1 to %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "file_99")); err != nil {
		t.Fatalf("file_99 not created: %v", err)
	}
	a.apply(&raftlogv1.Command{Op: &raftlogv1.Command_OpenSession{OpenSession: &raftlogv1.OpenSession{Secret: "s", LeaseMs: 1000}}})
	if b, _ := os.ReadFile(filepath.Join(dir, "file_1")); len(b) != 0 {
		t.Fatalf("file_1 kept %q after the first apply", b)
	}
}

// A snapshot restored into another folder rebuilds the state and every file
// byte for byte, even after the source files grew past the snapshot.
func TestSnapshotRestoresFilesByteForByte(t *testing.T) {
	src := t.TempDir()
	a := &applier{t: t, f: open(t, src)}
	a.apply(&raftlogv1.Command{Op: &raftlogv1.Command_OpenSession{OpenSession: &raftlogv1.OpenSession{Secret: "s", LeaseMs: 1000}}})
	seq := a.section(1, "file_0", "A", "B")
	seq = a.section(seq, "file_42", string(bytes.Repeat([]byte{0, 1, 2, 255}, 1000)))
	a.apply(&raftlogv1.Command{Op: &raftlogv1.Command_NodeAddress{NodeAddress: &raftlogv1.NodeAddress{Id: "n2", ClientUrl: "http://n2"}}})
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Appends after the snapshot must not leak into it.
	a.section(seq, "file_0", "late")
	var s sink
	if err := snap.Persist(&s); err != nil || s.cancelled {
		t.Fatalf("persist: %v (cancelled %v)", err, s.cancelled)
	}

	dst := t.TempDir()
	os.WriteFile(filepath.Join(dst, "file_0"), []byte("stale junk"), 0o644)
	g := open(t, dst)
	if err := g.Restore(io.NopCloser(bytes.NewReader(s.Bytes()))); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"file_0", "file_42", "file_5"} {
		want, _, _, _ := a.f.ReadFile(name, 0, 1<<20)
		if name == "file_0" {
			want = []byte("AB")
		}
		got, _ := os.ReadFile(filepath.Join(dst, name))
		if !bytes.Equal(got, want) {
			t.Fatalf("%s restored as %d bytes, want %d", name, len(got), len(want))
		}
	}
	if g.NodeURL("n2") != "http://n2" {
		t.Fatal("node addresses not restored")
	}
	var holder uint64
	g.View(func(m *lockstate.Machine) { holder = m.Lock().Holder })
	if holder != 0 {
		t.Fatalf("restored lock held by %d", holder)
	}
}

func TestRestoreRefusesGarbage(t *testing.T) {
	f := open(t, t.TempDir())
	for _, junk := range [][]byte{nil, {0, 0, 0, 0, 0, 0, 0, 9, 1}, bytes.Repeat([]byte{0xff}, 16)} {
		if err := f.Restore(io.NopCloser(bytes.NewReader(junk))); err == nil {
			t.Fatalf("restore of %x succeeded", junk)
		}
	}
}
