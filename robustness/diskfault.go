package robustness

import (
	"context"
	"os"
	"path/filepath"
	"time"
)

// diskFullFile is the node's control file for the disk-full fault: the
// binary is built with the dlm_faults tag and started with DLM_FAULT_DISK
// naming it; while it exists, the node's file writes and new log segments
// (and, if it says "log", every Raft log write) fail with ENOSPC and its
// free space reads 0 (server/node/diskfault_on.go).
func (nd *node) diskFullFile() string {
	return filepath.Join(filepath.Dir(nd.Data), nd.ID+".disk-full")
}

// diskFull fills target's disk for hold, then frees it. The node must stay
// up throughout (a panic or exit on a failed write is a violation), say
// that its disk is full while it is, and serve again by itself once space
// returns: no fault reported, a leader known, and everything the others
// had applied when space returned applied too. Clients meanwhile get
// DISK_FULL, STORAGE_FAULT or NOT_LEADER; what they are told is checked
// with the rest of the history.
func diskFull(ctx context.Context, c *cluster, h *history, target *node, hold time.Duration, logToo bool) {
	// The checks run to their end even when the run's time is up, so
	// that the disk is freed and a dead node is not restarted unseen by
	// the final convergence.
	bg := context.WithoutCancel(ctx)
	role := "follower"
	if c.leader(bg) == target {
		role = "leader"
	}
	inc := target.Incarnation()
	ctl := target.diskFullFile()
	// With logToo every log write fails, as if its segments were not
	// preallocated; otherwise only the files and a new segment do.
	mode, what := "", "files and new log segments"
	if logToo {
		mode, what = "log", "files and every log write"
	}
	if err := os.WriteFile(ctl, []byte(mode), 0o644); err != nil {
		h.addViolation("disk-full: cannot create %s: %v", ctl, err)
		return
	}
	h.addFault("disk-full", "%s (%s) for %v: %s fail", target.ID, role, hold, what)
	sawFull := false
	for deadline := time.Now().Add(hold); time.Now().Before(deadline); {
		if st, err := target.status(bg); err == nil && st.GetNode().GetFreeBytes() == 0 {
			sawFull = true
		}
		if !target.Running() {
			break
		}
		pollPause(bg, 100*time.Millisecond)
	}
	os.Remove(ctl)
	if !target.Running() || target.Incarnation() != inc {
		h.addViolation("disk-full: %s exited while its disk was full (see its log)", target.ID)
		return
	}
	if !sawFull {
		h.addViolation("disk-full: %s never reported 0 free bytes while its disk was full: is the dlm_faults hook built in?", target.ID)
	}
	want := c.othersApplied(bg, target)
	if !awaitServing(bg, target, want, 30*time.Second) {
		h.addViolation("disk-full: %s did not serve again within 30s of its disk being freed (applied index %d expected)", target.ID, want)
	}
	if !target.Running() || target.Incarnation() != inc {
		h.addViolation("disk-full: %s exited after its disk was freed (see its log)", target.ID)
	}
}
