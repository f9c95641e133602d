package fsm_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/fsm"
	"github.com/dlm/dlm/server/lockstate"
)

// encoded applies commands as the node writes them: in the checksummed
// envelope.
type encoded struct {
	t     *testing.T
	f     *fsm.FSM
	index uint64
}

func (e *encoded) entry(cmd *raftlogv1.Command) *raft.Log {
	e.t.Helper()
	data, err := fsm.Encode(cmd)
	if err != nil {
		e.t.Fatal(err)
	}
	e.index++
	return &raft.Log{Index: e.index, Type: raft.LogCommand, Data: data}
}

func (e *encoded) apply(cmd *raftlogv1.Command) any {
	e.t.Helper()
	return e.f.Apply(e.entry(cmd))
}

func openSession() *raftlogv1.Command {
	return &raftlogv1.Command{Op: &raftlogv1.Command_OpenSession{OpenSession: &raftlogv1.OpenSession{Secret: "s", LeaseMs: 1000}}}
}

// section runs one critical section of session 1 through the envelope.
func (e *encoded) section(seq uint64, file string, data ...string) uint64 {
	e.t.Helper()
	res := e.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Acquire{Acquire: &raftlogv1.Acquire{Caller: caller(1, seq)}}}).(lockstate.Result)
	token := res.Outcome.GetToken()
	for _, d := range data {
		seq++
		e.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Append{Append: &raftlogv1.Append{
			Caller: caller(1, seq), Token: token, File: file, Data: []byte(d), MaxSectionBytes: 1 << 20,
		}}})
	}
	seq++
	if r, ok := e.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Release{Release: &raftlogv1.Release{Caller: caller(1, seq), Token: token}}}).(lockstate.Result); !ok || r.Outcome.GetErrorReason() != 0 {
		e.t.Fatalf("release: %v", r.Outcome)
	}
	return seq + 1
}

// Entries in the envelope and bare ones from before it both apply.
func TestEnvelopeAndLegacyEntriesApply(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	legacy := &applier{t: t, f: f}
	legacy.apply(openSession())
	e := &encoded{t: t, f: f, index: legacy.index}
	e.section(1, "file_3", "new ", "entries")
	legacy.index = e.index
	legacy.section(10, "file_3", " and old")
	if b, _ := os.ReadFile(filepath.Join(dir, "file_3")); string(b) != "new entries and old" {
		t.Fatalf("file_3 = %q", b)
	}
	if f.Fault() != "" {
		t.Fatalf("fault %q", f.Fault())
	}
}

// A byte flipped in an entry's payload is caught by its checksum: nothing
// of it is applied or written, the fault names the entry, and nothing after
// it is applied either.
func TestCorruptEntryIsAStorageFault(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	e := &encoded{t: t, f: f}
	e.apply(openSession())
	seq := e.section(1, "file_0", "s100,")
	e.apply(&raftlogv1.Command{Op: &raftlogv1.Command_Acquire{Acquire: &raftlogv1.Acquire{Caller: caller(1, seq)}}})
	app := e.entry(&raftlogv1.Command{Op: &raftlogv1.Command_Append{Append: &raftlogv1.Append{
		Caller: caller(1, seq+1), Token: 2, File: "file_0", Data: []byte("s200,"), MaxSectionBytes: 1 << 20,
	}}})
	i := bytes.Index(app.Data, []byte("s200,"))
	app.Data[i+1] ^= 0x01 // "s300," on the wire
	if got := f.Apply(app); !errors.Is(got.(error), fsm.ErrStorageFault) {
		t.Fatalf("corrupt entry applied: %v", got)
	}
	fault := f.Fault()
	if !strings.Contains(fault, "log entry "+itoa(app.Index)) || !strings.Contains(fault, "checksum") || !strings.Contains(fault, "wipe") {
		t.Fatalf("fault %q does not name entry %d, the checksum and the fix", fault, app.Index)
	}
	if !f.Broken() {
		t.Fatal("a corrupt entry is not fatal")
	}
	rel := e.entry(&raftlogv1.Command{Op: &raftlogv1.Command_Release{Release: &raftlogv1.Release{Caller: caller(1, seq+2), Token: 2}}})
	if got := f.Apply(rel); !errors.Is(got.(error), fsm.ErrStorageFault) {
		t.Fatalf("an entry after the corrupt one applied: %v", got)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "file_0")); string(b) != "s100," {
		t.Fatalf("file_0 = %q", b)
	}
	if _, _, _, err := f.ReadFile("file_0", 0, 100); err == nil {
		t.Fatal("a broken FSM still serves reads")
	}
}

func itoa(i uint64) string { return strconv.FormatUint(i, 10) }

// Snapshots carry each file's CRC-32C: a file changed on disk after it was
// written is refused when persisting, and a snapshot whose copy of a file
// is corrupt is refused when restoring.
func TestSnapshotFileChecksums(t *testing.T) {
	src := t.TempDir()
	f := open(t, src)
	e := &encoded{t: t, f: f}
	e.apply(openSession())
	e.section(1, "file_9", "0123456789")
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var good sink
	if err := snap.Persist(&good); err != nil {
		t.Fatal(err)
	}

	// Restoring a corrupt copy fails and reports it; a good one clears it.
	dst := t.TempDir()
	g := open(t, dst)
	bad := bytes.Clone(good.Bytes())
	i := bytes.Index(bad, []byte("0123456789"))
	bad[i+4] ^= 0x20
	if err := g.Restore(io.NopCloser(bytes.NewReader(bad))); err == nil || !strings.Contains(err.Error(), "file_9") {
		t.Fatalf("restore of a corrupt copy = %v, want an error naming file_9", err)
	}
	if !strings.Contains(g.Fault(), "file_9") {
		t.Fatalf("fault after a failed restore = %q", g.Fault())
	}
	if _, _, _, err := g.ReadFile("file_9", 0, 100); err == nil {
		t.Fatal("reads served after a failed restore")
	}
	if err := g.Restore(io.NopCloser(bytes.NewReader(good.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if g.Fault() != "" {
		t.Fatalf("fault kept after a good restore: %q", g.Fault())
	}
	if b, _, _, err := g.ReadFile("file_9", 0, 100); err != nil || string(b) != "0123456789" {
		t.Fatalf("file_9 = %q, %v", b, err)
	}

	// A byte changed on disk under the FSM: the next snapshot refuses it.
	fh, err := os.OpenFile(filepath.Join(src, "file_9"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteAt([]byte("X"), 3)
	fh.Close()
	snap, err = f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err == nil || !s.cancelled {
		t.Fatalf("persist of a changed file = %v (cancelled %v)", err, s.cancelled)
	}
	if !strings.Contains(f.Fault(), "file_9") || !f.Broken() {
		t.Fatalf("fault after persisting a changed file = %q (broken %v)", f.Fault(), f.Broken())
	}
}
