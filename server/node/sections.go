package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
	"github.com/dlm/dlm/server/staging"
)

// A critical section's appends cost no Raft write: the leader stages them in
// its memory (server/staging), fenced by the applied state as an Append entry
// would be, and the release carries them into the log in its own entry, after
// any that Append entries of older logs staged. A new leader holds none of
// them; the counts a release carries reveal it (SECTION_INCOMPLETE), and the
// client, which keeps its appends until the release commits, re-sends them.

// DefaultSectionMemory bounds what the leader holds in memory for one
// critical section. Past it, the section moves to the log in one Append
// entry and later appends start again in memory: the release entry then
// stays a few MiB however large the section (up to MaxSectionBytes, 64 MiB
// by default), so that one entry does not hold up replication and
// heartbeats, and a leader holds a bounded amount per held grant.
const DefaultSectionMemory = 4 << 20

// Append stages data for file in the caller's critical section, at its
// 1-based place in the section (0: the next place).
func (n *Node) Append(ctx context.Context, caller Caller, token uint64, file string, data []byte, position uint32) (Section, error) {
	c := caller.log()
	// Refuse what needs no state before anything else.
	var reason dlmv1.ErrorReason
	n.fsm.View(func(m *lockstate.Machine) { reason = m.CheckFile(file) })
	switch {
	case reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED:
		return Section{}, reasonError(reason)
	case len(data) == 0:
		return Section{}, reasonError(dlmv1.ErrorReason_ERROR_REASON_DATA_EMPTY)
	case len(data) > n.cfg.MaxAppendBytes:
		return Section{}, fail(dlmv1.ErrorReason_ERROR_REASON_DATA_TOO_LARGE, "the append has %d bytes; the limit is %d", len(data), n.cfg.MaxAppendBytes)
	}
	if _, err := n.leading(); err != nil {
		return Section{}, err
	}
	epoch := n.sections.Epoch()
	// The session's rules first (secret, seq, room); a seq that an Append
	// entry of an older node recorded is answered from the record.
	cmd := &raftlogv1.Command{Op: &raftlogv1.Command_Append{Append: &raftlogv1.Append{Caller: c, Token: token, File: file}}}
	o, err := n.admitted(cmd)
	if err != nil {
		return Section{}, err
	}
	if o != nil {
		if err := n.verifyLeader(ctx); err != nil {
			return Section{}, err
		}
		n.touch(c)
		return sectionOf(o), n.explainFileLimit(reasonError(dlmv1.ErrorReason(o.GetErrorReason())))
	}
	// A full disk refuses a new append, not a repeat: the check below asks
	// it only for a new one.
	diskErr := n.admit()
	var (
		base     staging.Counts
		fileSize int64
		logFile  uint64
	)
	n.fsm.View(func(m *lockstate.Machine) {
		if reason = m.CheckGrant(c.GetClientId(), c.GetSecret(), token); reason == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			if sharedGrant(m, c.GetClientId(), token) {
				// Apply refuses it too; the memory must never stage it.
				reason = dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_EXCLUSIVE
				return
			}
			lv := m.Lock()
			base = staging.Counts{Appends: uint32(lv.StagedAppends), Bytes: lv.StagedBytes}
			fileSize, logFile = m.FileSize(file), m.StagedFileBytes(file)
		}
	})
	if err := reasonError(reason); err != nil {
		return Section{}, err
	}
	if (position == 0 || mutLoggedAppends) && n.sections.Counts(token, base) == (Section{}) {
		// A client that names no place (one written before places) may
		// repeat an append under its seq and release without counts: its
		// appends go to the log as they always did, where a repeat is known
		// by its seq and a new leader has them.
		if diskErr != nil {
			return Section{}, diskErr
		}
		o, err := n.mutate(ctx, c, &raftlogv1.Command{Op: &raftlogv1.Command_Append{Append: &raftlogv1.Append{
			Caller: c, Token: token, File: file, Data: data, MaxSectionBytes: maxSectionOf(n.cfg), MaxFileBytes: uint64(n.cfg.MaxFileBytes),
		}}})
		if err != nil {
			return Section{}, n.explainFileLimit(err)
		}
		return sectionOf(o), nil
	}
	size := uint64(len(data))
	maxSection, maxFile := uint64(n.cfg.MaxSectionBytes), uint64(n.cfg.MaxFileBytes)
	// The same bounds lockstate.CheckAppend applies to an Append entry,
	// from numbers read before: the memory's lock is never held with the
	// FSM's, which calls into the memory while applying.
	counts, _, err := n.sections.Stage(epoch, token, base, position, file, data, func(section, fileMem uint64) error {
		switch {
		case diskErr != nil:
			return diskErr
		case base.Bytes+section+size > maxSection:
			return reasonError(dlmv1.ErrorReason_ERROR_REASON_SECTION_TOO_LARGE)
		case uint64(fileSize)+logFile+fileMem+size > maxFile:
			return n.explainFileLimit(reasonError(dlmv1.ErrorReason_ERROR_REASON_FILE_TOO_LARGE))
		}
		return nil
	})
	var mv *staging.MoveError
	if errors.As(err, &mv) {
		return n.move(ctx, c, token, file, data, mv)
	}
	if err != nil {
		return Section{}, n.stagingError(err)
	}
	// The grant may have ended between the check and the staging, and its
	// end dropped the section before this append joined it: check again,
	// and drop what was staged for a grant that is over.
	n.fsm.View(func(m *lockstate.Machine) { reason = m.CheckGrant(c.GetClientId(), c.GetSecret(), token) })
	if reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		n.sections.Drop(token)
		return Section{}, reasonError(reason)
	}
	n.touch(c)
	return counts, nil
}

// move writes what the memory holds of the section, then the append, to
// the log in one Append entry guarded by the count of appends the log held
// (so that proposing it twice stages it once), and settles the memory once
// the outcome is known.
func (n *Node) move(ctx context.Context, c *raftlogv1.Caller, token uint64, file string, data []byte, mv *staging.MoveError) (Section, error) {
	base := mv.Base
	op := &raftlogv1.Append{
		Caller: c, Token: token, File: file, Data: data, BaseAppends: &base,
		MaxSectionBytes: uint64(n.cfg.MaxSectionBytes), MaxFileBytes: uint64(n.cfg.MaxFileBytes),
	}
	for _, w := range mv.Writes {
		op.Writes = append(op.Writes, &raftlogv1.Write{File: w.File, Data: w.Data})
	}
	res, err := n.propose(ctx, &raftlogv1.Command{Op: &raftlogv1.Command_Append{Append: op}})
	if err != nil {
		// The entry may still apply. A barrier after it, in this term,
		// settles that: once it applies, the entry has applied or never
		// will. Without one the move stays in flight, and the same append
		// again proposes it again.
		if berr := n.raft.Barrier(10 * time.Second).Error(); berr == nil {
			n.sections.Settle(token, n.loggedSection())
		}
		return Section{}, err
	}
	logged := n.loggedSection()
	n.sections.Settle(token, logged)
	n.touch(c)
	o := res.Outcome
	if r := dlmv1.ErrorReason(o.GetErrorReason()); r == dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE {
		total := logged.Add(n.sections.Counts(token, logged))
		if logged.Appends >= base+uint32(len(mv.Writes))+1 {
			// An earlier proposal of the same move applied: the append
			// is staged.
			return total, nil
		}
		return Section{}, incomplete(total)
	}
	return sectionOf(o), n.explainFileLimit(reasonError(dlmv1.ErrorReason(o.GetErrorReason())))
}

func maxSectionOf(cfg Config) uint64 { return uint64(cfg.MaxSectionBytes) }

// loggedSection is what log entries staged for the held grant.
func (n *Node) loggedSection() Section {
	var lv lockstate.LockView
	n.fsm.View(func(m *lockstate.Machine) { lv = m.Lock() })
	return Section{Appends: uint32(lv.StagedAppends), Bytes: lv.StagedBytes}
}

// stagingError turns the memory's refusals into the API's.
func (n *Node) stagingError(err error) error {
	var (
		gap *staging.GapError
		mm  *staging.MismatchError
	)
	switch {
	case errors.As(err, &gap):
		return incomplete(gap.Staged)
	case errors.As(err, &mm):
		return fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "%s: a place names one append; nothing changed", mm.Error())
	case errors.Is(err, staging.ErrSealed):
		return fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "the critical section is being released: retry")
	case errors.Is(err, staging.ErrNotLeading):
		if _, lerr := n.leading(); lerr != nil {
			return lerr
		}
		return fail(dlmv1.ErrorReason_ERROR_REASON_UNAVAILABLE, "leadership changed: retry")
	}
	return err
}

func incomplete(staged staging.Counts) error {
	return &Error{Reason: dlmv1.ErrorReason_ERROR_REASON_SECTION_INCOMPLETE, Staged: staged,
		Msg: fmt.Sprintf("the leader holds %d appends (%d bytes) of this critical section: re-send from place %d, then release again; nothing changed", staged.Appends, staged.Bytes, staged.Appends+1)}
}

// Release ends the critical section of token (or, with token 0, gives up
// whatever the session has). Unless it aborts, it commits what the section
// holds followed by appends. counts, when not nil, is what the client staged
// before: it must be what the leader holds; when nil, the leader commits only
// a section it saw whole.
func (n *Node) Release(ctx context.Context, caller Caller, token uint64, abort bool, counts *Section, appends []lockstate.Write) (Section, error) {
	return n.ReleaseLock(ctx, caller, nil, token, abort, counts, appends)
}

// ReleaseLock ends the grant token of the lock named lock (nil: the default
// lock), as Release does. Only the default lock held exclusively has a
// critical section: the release of a named lock or of a shared grant
// carries no appends and commits nothing.
func (n *Node) ReleaseLock(ctx context.Context, caller Caller, lock *string, token uint64, abort bool, counts *Section, appends []lockstate.Write) (Section, error) {
	c := caller.log()
	name, err := checkLock(lock)
	if err != nil {
		return Section{}, err
	}
	rel := &raftlogv1.Release{Caller: c, Token: token, Abort: abort, Lock: name}
	cmd := &raftlogv1.Command{Op: &raftlogv1.Command_Release{Release: rel}}
	sectionless := name != lockstate.DefaultLock
	if !sectionless && token != 0 {
		n.fsm.View(func(m *lockstate.Machine) { sectionless = sharedGrant(m, c.GetClientId(), token) })
	}
	if sectionless {
		carries := len(appends) > 0 || (counts != nil && *counts != Section{})
		switch {
		case carries && name != lockstate.DefaultLock:
			return Section{}, fail(dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_DEFAULT_LOCK,
				"the release of lock %q carries appends: files are guarded by the default lock only; nothing changed", name)
		case carries && !abort:
			return Section{}, fail(dlmv1.ErrorReason_ERROR_REASON_APPEND_NEEDS_EXCLUSIVE,
				"the release of a shared grant carries appends: files need the default lock held exclusively; nothing changed")
		}
		o, err := n.mutate(ctx, c, cmd)
		return sectionOf(o), err
	}
	if abort || token == 0 {
		o, err := n.mutate(ctx, c, cmd)
		return sectionOf(o), err
	}
	if err := n.checkAppends(appends); err != nil {
		return Section{}, err
	}
	writes, unseal, err := n.carried(ctx, c, token, counts, appends, false)
	if unseal != nil {
		defer unseal()
	}
	if err != nil {
		return Section{}, err
	}
	rel.Writes, rel.MaxSectionBytes, rel.MaxFileBytes = writes, uint64(n.cfg.MaxSectionBytes), uint64(n.cfg.MaxFileBytes)
	o, err := n.mutate(ctx, c, cmd)
	if err != nil {
		return Section{}, n.explainFileLimit(err)
	}
	return sectionOf(o), nil
}

// Close ends the session, committing a held critical section: the leader
// must have seen it whole (the close carries no counts), else it refuses
// with SECTION_INCOMPLETE and the client releases first.
func (n *Node) Close(ctx context.Context, caller Caller) error {
	c := caller.log()
	cs := &raftlogv1.CloseSession{Caller: c}
	var token uint64
	n.fsm.View(func(m *lockstate.Machine) {
		if m.Authenticate(c.GetClientId(), c.GetSecret()) == dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			token = exclusiveGrant(m, c.GetClientId())
		}
	})
	if token != 0 {
		writes, unseal, err := n.carried(ctx, c, token, nil, nil, true)
		if unseal != nil {
			defer unseal()
		}
		if err != nil {
			return err
		}
		cs.Writes, cs.MaxSectionBytes, cs.MaxFileBytes = writes, uint64(n.cfg.MaxSectionBytes), uint64(n.cfg.MaxFileBytes)
	}
	_, err := n.mutate(ctx, c, &raftlogv1.Command{Op: &raftlogv1.Command_CloseSession{CloseSession: cs}})
	return err
}

// sharedGrant reports whether token is a shared grant of the default lock
// that the session holds: such a grant has no critical section.
func sharedGrant(m *lockstate.Machine, id, token uint64) bool {
	for _, h := range m.Held(id) {
		if h.Lock == lockstate.DefaultLock && h.Token == token {
			return h.Mode == dlmv1.LockMode_LOCK_MODE_SHARED
		}
	}
	return false
}

// exclusiveGrant is the token of the session's exclusive grant of the
// default lock (the one with a critical section), or 0.
func exclusiveGrant(m *lockstate.Machine, id uint64) uint64 {
	for _, h := range m.Held(id) {
		if h.Lock == lockstate.DefaultLock && h.Mode != dlmv1.LockMode_LOCK_MODE_SHARED {
			return h.Token
		}
	}
	return 0
}

// carried is what the entry ending the grant token carries: the memory's
// section, sealed until unseal, then appends. A repeat of a request already
// applied, or a caller who does not hold the grant, gets nothing to carry:
// the entry's own rules answer it (the recorded outcome, or the refusal).
func (n *Node) carried(ctx context.Context, c *raftlogv1.Caller, token uint64, counts *Section, appends []lockstate.Write, closing bool) ([]*raftlogv1.Write, func(), error) {
	if _, err := n.leading(); err != nil {
		return nil, nil, err
	}
	epoch := n.sections.Epoch()
	// A repeat is answered from the record before any count is checked.
	probe := &raftlogv1.Command{Op: &raftlogv1.Command_Release{Release: &raftlogv1.Release{Caller: c, Token: token}}}
	if o, err := n.admitted(probe); err != nil || o != nil {
		return nil, nil, nil
	}
	var (
		reason  dlmv1.ErrorReason
		base    staging.Counts
		logFile = map[string]uint64{}
		size    = map[string]int64{}
	)
	n.fsm.View(func(m *lockstate.Machine) {
		if reason = m.CheckGrant(c.GetClientId(), c.GetSecret(), token); reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			return
		}
		lv := m.Lock()
		base = staging.Counts{Appends: uint32(lv.StagedAppends), Bytes: lv.StagedBytes}
		for _, a := range appends {
			size[a.File], logFile[a.File] = m.FileSize(a.File), m.StagedFileBytes(a.File)
		}
	})
	if reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return nil, nil, nil
	}
	mem, memFile, err := n.sections.Seal(epoch, token, base)
	if err != nil {
		return nil, nil, n.stagingError(err)
	}
	unseal := func() { n.sections.Unseal(token) }
	staged := base
	for _, w := range mem {
		staged = staged.Add(staging.Counts{Appends: 1, Bytes: uint64(len(w.Data))})
	}
	switch {
	case counts != nil && *counts != staged:
		return nil, unseal, incomplete(staged)
	case counts == nil && (closing || len(mem) > 0) && !n.sections.SawWhole(epoch, token):
		// Without counts, the leader vouches only for what it saw: a
		// grant made under it, or, for a release, a section all in the
		// log (a client that sends no counts names no places, so its
		// appends went to the log). Memory holding appends of an older
		// grant means an earlier leader may have held more. A close
		// carries no counts from any client, so it is refused outright,
		// and the client releases first.
		return nil, unseal, incomplete(staged)
	}
	// The appends the request carries, against the same bounds as
	// AppendFile's: apply checks them again, all or none.
	section := staged.Bytes
	added := map[string]uint64{}
	for i, a := range appends {
		l := uint64(len(a.Data))
		section += l
		added[a.File] += l
		switch {
		case section > uint64(n.cfg.MaxSectionBytes):
			return nil, unseal, fail(dlmv1.ErrorReason_ERROR_REASON_SECTION_TOO_LARGE, "append %d of the release takes the critical section to %d bytes; the limit is %d: nothing changed", i+1, section, n.cfg.MaxSectionBytes)
		case uint64(size[a.File])+logFile[a.File]+memFile[a.File]+added[a.File] > uint64(n.cfg.MaxFileBytes):
			return nil, unseal, n.explainFileLimit(&Error{Reason: dlmv1.ErrorReason_ERROR_REASON_FILE_TOO_LARGE,
				Msg: fmt.Sprintf("append %d of the release takes %s past its limit", i+1, a.File)})
		}
	}
	writes := make([]*raftlogv1.Write, 0, len(mem)+len(appends))
	for _, w := range mem {
		writes = append(writes, &raftlogv1.Write{File: w.File, Data: w.Data})
	}
	for _, a := range appends {
		writes = append(writes, &raftlogv1.Write{File: a.File, Data: a.Data})
	}
	return writes, unseal, nil
}

// checkAppends refuses bad appends a release carries before anything else.
func (n *Node) checkAppends(appends []lockstate.Write) error {
	for i, a := range appends {
		var reason dlmv1.ErrorReason
		n.fsm.View(func(m *lockstate.Machine) { reason = m.CheckFile(a.File) })
		at := fmt.Sprintf("append %d of the release", i+1)
		switch {
		case reason != dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED:
			return &Error{Reason: reason, Msg: fmt.Sprintf("%s: no file named %q (file_0 to file_99): nothing changed", at, a.File)}
		case len(a.Data) == 0:
			return &Error{Reason: dlmv1.ErrorReason_ERROR_REASON_DATA_EMPTY, Msg: at + " is empty: nothing changed"}
		case len(a.Data) > n.cfg.MaxAppendBytes:
			return fail(dlmv1.ErrorReason_ERROR_REASON_DATA_TOO_LARGE, "%s has %d bytes; the limit is %d: nothing changed", at, len(a.Data), n.cfg.MaxAppendBytes)
		}
	}
	return nil
}
