package robustness

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// optionalFaults are cluster faults that only -lead selects: they expect a
// behaviour the server does not have yet (issue 8: corruption detection),
// and join faultKinds once it does.
var optionalFaults = []string{"corrupt-log"}

// corruptLog stops a follower, changes one byte of a record in its Raft
// log (one of the latest committed section's, most likely beyond its last
// snapshot, so that a restart replays it), and restarts it. The node must
// refuse to serve what it cannot verify, and say so in Status's
// storage_fault, rather than apply the changed bytes; the cluster goes on
// without it. A refusing node is wiped and restarted, the documented
// repair, and must rejoin. A node that serves although its log was
// changed is left running: if it applied the bytes, the final comparison
// of the replicas shows it.
func (c *cluster) corruptLog(ctx context.Context, rng *rand.Rand, h *history) {
	l := c.leader(ctx)
	var target *node
	for _, k := range rng.Perm(len(c.nodes)) {
		if c.nodes[k] != l {
			target = c.nodes[k]
			break
		}
	}
	target.kill()
	where := target.flipRecord(h)
	if where == "" {
		h.addFault("corrupt-log-nothing-found", "%s: no committed record in its log", target.id)
		c.restart(ctx, target)
		return
	}
	c.restart(ctx, target)
	refused := ""
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && refused == ""; {
		if st, err := target.status(ctx); err == nil {
			refused = st.GetNode().GetStorageFault()
		}
		if refused == "" && target.alive() {
			pollPause(context.WithoutCancel(ctx), 100*time.Millisecond)
		} else if !target.alive() {
			break
		}
	}
	if refused == "" {
		kind := "corrupt-log-not-refused"
		if !target.alive() {
			kind = "corrupt-log-exited"
		}
		h.addFault(kind, "%s: %s", target.id, where)
		if !target.alive() {
			c.restart(ctx, target)
		}
		return
	}
	h.addFault("corrupt-log-refused", "%s: %s: %s", target.id, where, refused)
	target.kill()
	if err := os.RemoveAll(target.data); err != nil {
		h.addViolation("wipe %s: %v", target.id, err)
	}
	c.restart(ctx, target)
	if err := c.awaitRejoin(context.WithoutCancel(ctx), target, 30*time.Second); err != nil {
		h.addViolation("%s did not rejoin after its data was wiped: %v", target.id, err)
	}
}

// flipRecord changes one byte of the newest committed record found in the
// node's Raft log segments, and says where.
func (nd *node) flipRecord(h *history) string {
	h.mu.Lock()
	var recs []string
	for i := len(h.sections) - 1; i >= 0 && len(recs) < 64; i-- {
		if s := h.sections[i]; s.End == committed {
			for _, a := range s.Appends {
				recs = append(recs, a.Data)
			}
		}
	}
	h.mu.Unlock()
	segs, _ := filepath.Glob(filepath.Join(nd.data, "raft", "wal", "*.wal"))
	for _, r := range recs {
		for _, seg := range segs {
			b, err := os.ReadFile(seg)
			if err != nil {
				continue
			}
			i := bytes.LastIndex(b, []byte(r))
			if i < 0 {
				continue
			}
			f, err := os.OpenFile(seg, os.O_WRONLY, 0)
			if err != nil {
				continue
			}
			// The first digit of the record becomes an X: still the same
			// length, no longer a record.
			_, err = f.WriteAt([]byte{'X'}, int64(i))
			f.Close()
			if err == nil {
				return filepath.Base(seg) + ": record " + r[:len(r)-1] + " at byte " + fmt.Sprint(i)
			}
		}
	}
	return ""
}
