package robustness

import (
	"context"
	endian "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/internal/e2e"
)

// corruptFollowerLog stops a follower with SIGKILL, flips one byte inside
// the data of a committed entry of its Raft log that its next start will
// apply again, and starts it. It must refuse: report a storage fault
// before it applies that entry, within a bounded time, and serve no read;
// the other two must go on committing. Then its data folder is wiped and
// it starts again with the same flags, catches up from the leader, and the
// final comparison of the replicas includes it.
//
// Clients are cut off from every node while the follower is down: with
// no new entries the leader does not compact its log past the follower's
// end, so the follower catches up from its own log (applying the corrupt
// entry) rather than from a snapshot that would replace it.
func corruptFollowerLog(ctx context.Context, c *cluster, h *history, rng *rand.Rand) {
	bg := context.WithoutCancel(ctx)
	healClients := func() {
		for _, nd := range c.nodes {
			nd.clientLink.Set(e2e.LinkOK, 0)
		}
	}
	var (
		target *node
		fl     flipped
		why    error
	)
	// Wait (briefly) until a follower has applied entries past its newest
	// snapshot: right after it caught up by snapshot it has none. A
	// snapshot may still complete between that check and the kill; then
	// the follower is started again and another try made.
	order := rng.Perm(len(c.nodes))
	deadline, kills := time.Now().Add(10*time.Second), 0
	for target == nil {
		if time.Now().After(deadline) || kills == 3 {
			h.addFault("corrupt-follower-log-skipped", "no follower to corrupt: %v", why)
			h.addFinding("corrupt-follower-log skipped: no follower had a committed entry to corrupt within 10s or 3 tries: %v", why)
			return
		}
		for _, k := range order {
			nd := c.nodes[k]
			st, err := nd.status(bg)
			if err != nil || st.GetNode().GetRole() != "follower" {
				continue
			}
			applied := st.GetNode().GetAppliedIndex()
			if _, _, why = corruptible(nd.Data, applied); why != nil {
				continue
			}
			for _, o := range c.nodes {
				o.clientLink.Set(e2e.LinkCut, 0)
			}
			nd.Kill()
			kills++
			fl, why = flipCommittedEntry(nd.Data, applied, rng)
			c.restart(bg, nd)
			if why == nil {
				target = nd
				break
			}
			healClients()
			break
		}
		if target == nil {
			pollPause(bg, 100*time.Millisecond)
		}
	}
	inc := target.Incarnation()
	h.addFault("corrupt-follower-log", "%s: entry %d (applied %d, snapshot %d), byte %d of %s", target.ID, fl.index, fl.applied, fl.snapshot, fl.offset, fl.segment)

	// It must refuse. (Raft counts an entry applied once it is handed to
	// the state machine, so the applied index in Status may pass the
	// corrupt entry shortly before the fault is found.)
	refused := false
	var last uint64
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !refused; pollPause(bg, 20*time.Millisecond) {
		if st, err := target.status(bg); err == nil {
			refused, last = st.GetNode().GetStorageFault() != "", st.GetNode().GetAppliedIndex()
		}
	}
	healClients()
	switch {
	case !refused:
		h.addViolation("corrupt-follower-log: %s did not report a storage fault within 15s of starting with entry %d corrupted (applied index %d)", target.ID, fl.index, last)
	default:
		// It serves no data, and the other two go on without it.
		_, err := target.API().ReadFile(bg, connect.NewRequest(&dlmv1.ReadFileRequest{File: "file_0"}))
		if err == nil {
			h.addViolation("corrupt-follower-log: %s answered a read despite its storage fault", target.ID)
		}
		// The probe commits entries of its own (a session each, which
		// expires unused), so the check does not depend on the workload,
		// which may have reached its deadline or be held off by RPC faults.
		from := c.othersApplied(bg, target)
		went := false
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); pollPause(bg, 100*time.Millisecond) {
			c.commitProbe(bg, target)
			if c.othersApplied(bg, target) >= from+5 {
				went = true
				break
			}
		}
		if !went {
			h.addViolation("corrupt-follower-log: the other nodes committed fewer than 5 entries in 20s while %s refused", target.ID)
		}
		if st, err := target.status(bg); err != nil || st.GetNode().GetStorageFault() == "" {
			h.addViolation("corrupt-follower-log: %s stopped reporting its storage fault (%v)", target.ID, err)
		}
	}
	if !target.Running() || target.Incarnation() != inc {
		h.addViolation("corrupt-follower-log: %s exited instead of refusing (see its log)", target.ID)
	}
	// The documented fix: wipe its data folder and start it again.
	target.Kill()
	if err := os.RemoveAll(target.Data); err != nil {
		h.addViolation("corrupt-follower-log: wiping %s: %v", target.Data, err)
	}
	c.restart(bg, target)
	if want := c.othersApplied(bg, target); !awaitServing(bg, target, want, 30*time.Second) {
		h.addViolation("corrupt-follower-log: %s, wiped, did not catch up to index %d within 30s", target.ID, want)
	}
}

// flipped is where a byte of a log entry was flipped.
type flipped struct {
	index, applied, snapshot uint64
	segment                  string
	offset                   int64
}

// walEntry is one entry found in a raft-wal segment file.
type walEntry struct {
	index    uint64
	typ      uint64
	dataOff  int64
	data     []byte
	segment  string
	lastSeen bool // in the tail segment's last committed batch, or after it
}

// flipCommittedEntry flips one bit of a record's digit in the data of an
// append entry of the log in dataDir that is above the newest snapshot (a
// start applies it again) and at most applied (committed). It avoids the last committed
// batch of the tail segment: raft-wal checks that batch's CRC on open and
// drops it silently as a torn write, and a bad frame header is read as the
// end of the log; sealed segments and earlier batches are not checked,
// which is what the FSM's own entry checksum is there for.
func flipCommittedEntry(dataDir string, applied uint64, rng *rand.Rand) (flipped, error) {
	cands, snap, err := corruptible(dataDir, applied)
	if err != nil {
		return flipped{}, err
	}
	e := cands[rng.IntN(len(cands))]
	digits := recordDigits(e.data)
	off := e.dataOff + int64(digits[rng.IntN(len(digits))])
	f, err := os.OpenFile(e.segment, os.O_RDWR, 0)
	if err != nil {
		return flipped{}, err
	}
	defer f.Close()
	// A digit stays a digit: the entry still decodes, as another record,
	// so only the FSM's checksum can tell.
	b := []byte{e.data[off-e.dataOff] ^ 0x01}
	if _, err := f.WriteAt(b, off); err != nil {
		return flipped{}, err
	}
	return flipped{index: e.index, applied: applied, snapshot: snap, segment: filepath.Base(e.segment), offset: off}, f.Sync()
}

// corruptible lists the entries flipCommittedEntry may choose from, in
// index order, and the newest snapshot's index.
func corruptible(dataDir string, applied uint64) ([]walEntry, uint64, error) {
	snap, err := newestSnapshot(filepath.Join(dataDir, "raft", "snapshots"))
	if err != nil {
		return nil, 0, err
	}
	all, err := filepath.Glob(filepath.Join(dataDir, "raft", "wal", "*.wal"))
	if err != nil {
		return nil, 0, err
	}
	// A segment whose creation failed on a full disk is left behind empty:
	// it is not the tail.
	var segs []string
	for _, seg := range all {
		if isSegment(seg) {
			segs = append(segs, seg)
		}
	}
	if len(segs) == 0 {
		return nil, 0, fmt.Errorf("no log segments in %s", dataDir)
	}
	sort.Strings(segs) // by base index: the tail is last
	byIndex := make(map[uint64]walEntry)
	for i, seg := range segs {
		es, err := walEntries(seg, i == len(segs)-1)
		if err != nil {
			return nil, 0, err
		}
		for _, e := range es {
			byIndex[e.index] = e // a later segment's copy wins
		}
	}
	var cands []walEntry
	for _, e := range byIndex {
		// Type 0 is a Raft command; data starting 0x00 carries the FSM's
		// checksum envelope (a version byte and a CRC-32C).
		if e.index > snap && e.index <= applied && !e.lastSeen && e.typ == 0 && len(e.data) > 5 && e.data[0] == 0 &&
			len(recordDigits(e.data)) > 0 {
			cands = append(cands, e)
		}
	}
	if len(cands) == 0 {
		return nil, 0, fmt.Errorf("no committed command entry between the snapshot at %d and the applied index %d outside the tail batch", snap, applied)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].index < cands[j].index })
	return cands, snap, nil
}

// recordRE matches a record of the workload (recordData).
var recordRE = regexp.MustCompile(`[0-9]+:[0-9]+:[0-9]+\n`)

// recordDigits are the offsets in data, past the checksum header, of the
// digits of the records it carries.
func recordDigits(data []byte) []int {
	var at []int
	for _, m := range recordRE.FindAllIndex(data[5:], -1) {
		for i := m[0]; i < m[1]; i++ {
			if c := data[5+i]; c >= '0' && c <= '9' {
				at = append(at, 5+i)
			}
		}
	}
	return at
}

// newestSnapshot is the index of the newest complete snapshot, 0 if none.
func newestSnapshot(dir string) (uint64, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var newest uint64
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "meta.json"))
		if err != nil {
			continue
		}
		var meta struct{ Index uint64 }
		if json.Unmarshal(b, &meta) == nil {
			newest = max(newest, meta.Index)
		}
	}
	return newest, nil
}

// raft-wal v0.4.2's segment format (segment/format.go): a 32-byte file
// header, then frames of an 8-byte header (type, 3 zero bytes, length or,
// for a commit, a CRC, little-endian) and a payload padded to 8 bytes. An
// entry's payload is the binary codec's: uvarint index, term and type,
// then the data with a uvarint length.
const (
	walMagic       = 0x58eb6b0d
	walFileHeader  = 32
	walFrameHeader = 8
	walFrameEntry  = 1
	walFrameIndex  = 2
	walFrameCommit = 3
)

// isSegment says whether the file starts with a segment header.
func isSegment(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var head [walFileHeader]byte
	if _, err := f.ReadAt(head[:], 0); err != nil {
		return false
	}
	return endian.LittleEndian.Uint32(head[:4]) == walMagic
}

// walEntries reads the entries of one segment file; in the tail segment,
// those of its last committed batch and after it are marked lastSeen.
func walEntries(path string, tail bool) ([]walEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var (
		es       []walEntry
		batch    []int // es positions of the current batch
		lastDone []int // es positions of the last committed batch
	)
	for off := walFileHeader; off+walFrameHeader <= len(b); {
		typ, n := b[off], int(endian.LittleEndian.Uint32(b[off+4:off+8]))
		switch typ {
		case walFrameCommit:
			lastDone, batch = batch, nil
			off += walFrameHeader
			continue
		case walFrameEntry, walFrameIndex:
		default:
			off = len(b) // zeros: the end of what was written
			continue
		}
		start, end := off+walFrameHeader, off+walFrameHeader+n
		if end > len(b) {
			break
		}
		if typ == walFrameEntry {
			p := b[start:end]
			idx, k1 := endian.Uvarint(p)
			_, k2 := endian.Uvarint(p[max(k1, 0):])
			lt, k3 := endian.Uvarint(p[max(k1+k2, 0):])
			at := k1 + k2 + k3
			dl, k4 := endian.Uvarint(p[max(at, 0):])
			if k1 > 0 && k2 > 0 && k3 > 0 && k4 > 0 && at+k4+int(dl) <= len(p) {
				d := start + at + k4
				batch = append(batch, len(es))
				es = append(es, walEntry{index: idx, typ: lt, dataOff: int64(d), data: b[d : d+int(dl)], segment: path})
			}
		}
		off = end + (walFrameHeader-n%walFrameHeader)%walFrameHeader
	}
	if tail {
		for _, i := range append(lastDone, batch...) {
			es[i].lastSeen = true
		}
	}
	return es, nil
}
