package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
)

// Log entries are written as an envelope: a version byte 0x00, the CRC-32C
// (Castagnoli) of the payload, big-endian, then the payload, a Command. No
// protobuf message starts with 0x00 (field number 0 is invalid), so an entry
// written before the envelope existed (a bare Command) is told apart by its
// first byte and still decoded. raft-wal checks only the tail of its log on
// open, so this checksum is what catches a byte flipped in an older entry.
const (
	envelopeV0     = 0x00
	envelopeHeader = 5
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Encode turns a command into a log entry's data.
func Encode(cmd *raftlogv1.Command) ([]byte, error) {
	payload, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode command: %w", err)
	}
	data := make([]byte, envelopeHeader+len(payload))
	data[0] = envelopeV0
	binary.BigEndian.PutUint32(data[1:envelopeHeader], crc32.Checksum(payload, castagnoli))
	copy(data[envelopeHeader:], payload)
	return data, nil
}

// decode checks and decodes a log entry's data.
func decode(data []byte) (*raftlogv1.Command, error) {
	payload := data
	if len(data) > 0 && data[0] == envelopeV0 {
		if len(data) < envelopeHeader {
			return nil, fmt.Errorf("entry of %d bytes is shorter than its checksum header", len(data))
		}
		payload = data[envelopeHeader:]
		want := binary.BigEndian.Uint32(data[1:envelopeHeader])
		if got := crc32.Checksum(payload, castagnoli); got != want {
			return nil, fmt.Errorf("checksum mismatch: the payload's CRC-32C is %08x, the entry records %08x", got, want)
		}
	}
	cmd := &raftlogv1.Command{}
	if err := proto.Unmarshal(payload, cmd); err != nil {
		return nil, fmt.Errorf("undecodable: %w", err)
	}
	return cmd, nil
}

// FaultHandler is told when the FSM finds a storage fault. fatal means the
// state can no longer be trusted (a corrupt log entry, snapshot or file):
// the node must stop taking part in the cluster. A fault that is not fatal
// (a write that failed and is being retried) clears by itself, and the
// handler is told again with msg "" when it does. It runs on the goroutine
// that found the fault and must not call back into the FSM.
type FaultHandler func(msg string, fatal bool)

// ErrStorageFault is what Apply returns, instead of a lockstate.Result, for
// an entry it could not apply because the node's storage is faulty.
var ErrStorageFault = errors.New("fsm: storage fault")

// faults is the FSM's record of storage faults. It has its own
// synchronisation, not the FSM's lock: Apply may hold that lock while it
// waits for a write to succeed, and the fault must be readable meanwhile.
type faults struct {
	msg     atomic.Pointer[string]
	broken  atomic.Bool
	handler atomic.Pointer[FaultHandler]
}

// SetFaultHandler installs h. Call it before Raft starts.
func (f *FSM) SetFaultHandler(h FaultHandler) { f.faults.handler.Store(&h) }

// Fault describes the current storage fault, or is "" when there is none.
func (f *FSM) Fault() string {
	if p := f.faults.msg.Load(); p != nil {
		return *p
	}
	return ""
}

// Broken reports whether a fatal fault was found: the FSM then applies
// nothing more.
func (f *FSM) Broken() bool { return f.faults.broken.Load() }

// corrupt records a fatal fault: the state no longer follows the log, so
// nothing more is applied and nothing is served.
func (f *FSM) corrupt(what string) {
	if f.faults.broken.Swap(true) {
		return // the first fault is the one to report
	}
	f.report(fmt.Sprintf("storage fault: %s. This node no longer serves, votes or applies entries. "+
		"Fix: stop it, move away or wipe its data folder (%s) and start it again so that it rejoins and "+
		"catches up from the other nodes (a single node: restore it from a backup)", what, f.dataDir()), true)
}

// report records msg ("" clears a fault that is not fatal) and tells the
// handler.
func (f *FSM) report(msg string, fatal bool) {
	if msg == "" {
		if f.faults.broken.Load() {
			return
		}
		f.faults.msg.Store(nil)
	} else {
		f.faults.msg.Store(&msg)
	}
	if h := f.faults.handler.Load(); h != nil {
		(*h)(msg, fatal)
	}
}

// copyChecked copies a file's committed prefix into a snapshot and checks
// that the bytes read back are the bytes written: a file changed on disk
// (bit rot, a stray write) must not spread into snapshots and from there to
// other nodes.
func (f *FSM) copyChecked(w io.Writer, fh File, fl *raftlogv1.FileLength) error {
	h := crc32.New(castagnoli)
	if _, err := io.Copy(io.MultiWriter(w, h), io.NewSectionReader(fh, 0, fl.GetSize())); err != nil {
		return fmt.Errorf("fsm: snapshot %s: %w", fl.GetName(), err)
	}
	if fl.Crc32C != nil && h.Sum32() != fl.GetCrc32C() {
		what := fmt.Sprintf("%s in %s no longer holds what was written to it (CRC-32C of its first %d bytes is %08x, written %08x)",
			fl.GetName(), f.dir, fl.GetSize(), h.Sum32(), fl.GetCrc32C())
		f.corrupt(what)
		return fmt.Errorf("fsm: snapshot: %s", what)
	}
	return nil
}

// rewrite replaces a file's content in place from a snapshot, keeping its
// handle, and checks the snapshot's checksum of it when it has one.
func (f *FSM) rewrite(fl *raftlogv1.FileLength, r io.Reader) error {
	name := fl.GetName()
	fh, ok := f.files[name]
	if !ok {
		return fmt.Errorf("fsm: restore: the snapshot has an unknown file %q", name)
	}
	f.reset = true // the files are being rebuilt
	if err := fh.Truncate(0); err != nil {
		return fmt.Errorf("fsm: restore %s: %w", name, err)
	}
	f.sizes[name], f.crcs[name] = 0, 0
	h := crc32.New(castagnoli)
	n, err := io.Copy(io.MultiWriter(fh, h), r)
	if err == nil && n != fl.GetSize() {
		err = fmt.Errorf("the snapshot ends after %d of its %d bytes", n, fl.GetSize())
	}
	if err != nil {
		return fmt.Errorf("fsm: restore %s: %w", name, err)
	}
	f.sizes[name], f.crcs[name] = n, h.Sum32()
	if fl.Crc32C != nil && h.Sum32() != fl.GetCrc32C() {
		return fmt.Errorf("fsm: restore %s: the snapshot's copy is corrupt (CRC-32C %08x, recorded %08x)", name, h.Sum32(), fl.GetCrc32C())
	}
	return nil
}

// restoreFailed records a snapshot that could not be restored: the files
// are half rebuilt, so nothing is served until a restore succeeds (Raft
// tries an older snapshot, or the leader sends its own again).
func (f *FSM) restoreFailed(err error) {
	f.report(fmt.Sprintf("storage fault: restoring a snapshot: %v. The node does not serve until a snapshot is "+
		"restored; if this persists, stop it, wipe its data folder (%s) and let it rejoin, or restore it from a backup", err, f.dataDir()), false)
}

// restored clears the fault of an earlier failed restore.
func (f *FSM) restored() {
	if f.Fault() != "" {
		f.report("", false)
	}
}
