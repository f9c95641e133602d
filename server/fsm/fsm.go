package fsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// Observer is told of every applied result, in log order, on the FSM's
// goroutine. It must not block and must not call back into the FSM.
type Observer func(a Applied)

// Applied is what an Observer learns of one applied entry.
type Applied struct {
	Index uint64
	// Data is the entry's data as Raft passed it: on the leader, the
	// proposer's own slice.
	Data   []byte
	Cmd    *raftlogv1.Command
	Result lockstate.Result
	// SectionEnded says the entry ended the critical section of the
	// session it names (a release's or close's caller, an expired
	// session): committed or rolled back, as the command says.
	SectionEnded bool
	// Took is the time the entry took to apply, file writes included.
	Took time.Duration
}

// FSM implements raft.FSM over a lockstate.Machine and a folder of files.
type FSM struct {
	dir    string
	limits lockstate.Limits

	// mu guards the machine and the open files. Apply and Restore hold it
	// for writing; readers for reading.
	mu       sync.RWMutex
	m        *lockstate.Machine
	files    map[string]File
	observer Observer
	// sizes and crcs are each file's length and CRC-32C as written, kept
	// as it writes so that snapshots can carry them (integrity.go).
	sizes map[string]int64
	crcs  map[string]uint32
	// reset is set once the files were emptied to be rebuilt (writes.go).
	reset bool
	// nodes maps member ids to client URLs: cluster addressing, kept beside
	// the lock state rather than in it.
	nodes map[string]string
	// generation counts restores, so that a snapshot persisted across a
	// restore is refused rather than written with the wrong bytes.
	generation uint64

	faults     faults
	fs         FS
	retryFirst time.Duration
	retryMost  time.Duration
	quit       chan struct{}
	quitOnce   sync.Once
}

var _ raft.FSM = (*FSM)(nil)

// Open creates the files folder and opens every file in it. The state is
// empty until Raft restores the snapshot and replays the log, which empties
// the files first (see the crash argument in the package doc).
func Open(dir string, limits lockstate.Limits, opts ...Option) (*FSM, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("fsm: %w", err)
	}
	f := &FSM{
		dir: dir, limits: limits, m: lockstate.New(limits), files: make(map[string]File), nodes: make(map[string]string),
		sizes: make(map[string]int64), crcs: make(map[string]uint32),
		fs: osFS{}, retryFirst: 100 * time.Millisecond, retryMost: 2 * time.Second, quit: make(chan struct{}),
	}
	for _, o := range opts {
		o(f)
	}
	for _, name := range f.m.FileNames() {
		fh, err := f.fs.OpenFile(filepath.Join(dir, name))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("fsm: %w", err)
		}
		f.files[name] = fh
	}
	return f, nil
}

// SetObserver installs the observer. Call it before Raft starts.
func (f *FSM) SetObserver(o Observer) {
	f.mu.Lock()
	f.observer = o
	f.mu.Unlock()
}

// Close closes the files.
func (f *FSM) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, fh := range f.files {
		errs = append(errs, fh.Close())
	}
	return errors.Join(errs...)
}

// Apply applies one committed entry and returns its lockstate.Result.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	start := time.Now()
	if f.Broken() {
		return ErrStorageFault
	}
	cmd, err := decode(l.Data)
	if err != nil {
		// A committed entry that fails its checksum or cannot be decoded
		// means a corrupt log (or a bug); skipping it would diverge from the
		// other replicas, so nothing more is applied.
		f.corrupt(fmt.Sprintf("log entry %d is corrupt (%v)", l.Index, err))
		return ErrStorageFault
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.resetFiles(l.Index) {
		return ErrStorageFault
	}
	if na := cmd.GetNodeAddress(); na != nil {
		f.nodes[na.GetId()] = na.GetClientUrl()
		return lockstate.Result{}
	}
	owner := sectionOwner(cmd)
	held := f.m.HeldToken(owner)
	res := f.m.Apply(l.Index, cmd)
	for _, w := range res.Writes {
		if !f.writeFile(l.Index, w) {
			return ErrStorageFault
		}
	}
	if f.observer != nil {
		f.observer(Applied{Index: l.Index, Data: l.Data, Cmd: cmd, Result: res, SectionEnded: held != 0 && f.m.HeldToken(owner) != held, Took: time.Since(start)})
	}
	return res
}

// sectionOwner is the session whose critical section cmd may end, or 0.
func sectionOwner(cmd *raftlogv1.Command) uint64 {
	switch {
	case cmd.GetRelease() != nil:
		return cmd.GetRelease().GetCaller().GetClientId()
	case cmd.GetCloseSession() != nil:
		return cmd.GetCloseSession().GetCaller().GetClientId()
	case cmd.GetExpireSession() != nil:
		return cmd.GetExpireSession().GetClientId()
	}
	return 0
}

// View runs fn with the machine under the read lock. fn must not keep it.
func (f *FSM) View(fn func(m *lockstate.Machine)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.m)
}

// NodeURL is the client URL recorded for a member, or "".
func (f *FSM) NodeURL(id string) string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.nodes[id]
}

// ReadFile returns up to limit committed bytes of a file from offset; a
// negative offset counts back from the end. It returns the offset actually
// used and the committed size.
func (f *FSM) ReadFile(name string, offset, limit int64) ([]byte, int64, int64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if msg := f.Fault(); msg != "" {
		// The state may be ahead of the files while a write is retried.
		return nil, 0, 0, fmt.Errorf("fsm: %s", msg)
	}
	size := f.m.FileSize(name)
	if offset < 0 {
		offset = max(size+offset, 0)
	}
	offset = min(offset, size)
	n := min(limit, size-offset)
	buf := make([]byte, n)
	if _, err := f.files[name].ReadAt(buf, offset); err != nil {
		return nil, 0, 0, fmt.Errorf("fsm: read %s: %w", name, err)
	}
	return buf, offset, size, nil
}

// Snapshot captures the state; the files' committed prefixes are read by
// Persist, which is safe because files only grow between restores.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.m.State()
	ids := make([]string, 0, len(f.nodes))
	for id := range f.nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, fl := range st.Files {
		fl.Crc32C = proto.Uint32(f.crcs[fl.GetName()])
	}
	for _, id := range ids {
		st.Nodes = append(st.Nodes, &raftlogv1.NodeAddress{Id: id, ClientUrl: f.nodes[id]})
	}
	return &snapshot{fsm: f, state: st, generation: f.generation}, nil
}

// Snapshot format: an 8-byte big-endian length, the State message, then for
// each file in State.files exactly size bytes of its content, in order.

type snapshot struct {
	fsm        *FSM
	state      *raftlogv1.State
	generation uint64
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) write(w io.Writer) error {
	head, err := proto.Marshal(s.state)
	if err != nil {
		return fmt.Errorf("fsm: encode snapshot: %w", err)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := binary.Write(bw, binary.BigEndian, uint64(len(head))); err != nil {
		return err
	}
	if _, err := bw.Write(head); err != nil {
		return err
	}
	for _, fl := range s.state.GetFiles() {
		if err := s.copyFile(bw, fl); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func (s *snapshot) copyFile(w io.Writer, fl *raftlogv1.FileLength) error {
	s.fsm.mu.RLock()
	fh, gen := s.fsm.files[fl.GetName()], s.fsm.generation
	s.fsm.mu.RUnlock()
	if gen != s.generation {
		return errors.New("fsm: files restored while persisting a snapshot")
	}
	return s.fsm.copyChecked(w, fh, fl)
}

func (s *snapshot) Release() {}

// Restore replaces the state and rewrites every file from the snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 1<<20)
	var n uint64
	if err := binary.Read(br, binary.BigEndian, &n); err != nil {
		return fmt.Errorf("fsm: read snapshot: %w", err)
	}
	if n > 1<<32 {
		return fmt.Errorf("fsm: snapshot header of %d bytes", n)
	}
	head := make([]byte, n)
	if _, err := io.ReadFull(br, head); err != nil {
		return fmt.Errorf("fsm: read snapshot: %w", err)
	}
	st := &raftlogv1.State{}
	if err := proto.Unmarshal(head, st); err != nil {
		return fmt.Errorf("fsm: decode snapshot: %w", err)
	}
	m, err := lockstate.Restore(f.limits, st)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.generation++
	for _, fl := range st.GetFiles() {
		if err := f.rewrite(fl, io.LimitReader(br, fl.GetSize())); err != nil {
			f.restoreFailed(err)
			return err
		}
	}
	f.restored()
	f.m = m
	f.nodes = make(map[string]string, len(st.GetNodes()))
	for _, na := range st.GetNodes() {
		f.nodes[na.GetId()] = na.GetClientUrl()
	}
	return nil
}
