package robustness

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// record is one line of a file: worker, section, index.
type recordID struct{ w, s, i int }

func recordData(w, s, i int) string { return fmt.Sprintf("%d:%d:%d\n", w, s, i) }

func parseRecord(line string) (recordID, bool) {
	f := strings.Split(line, ":")
	if len(f) != 3 {
		return recordID{}, false
	}
	var r recordID
	var err error
	if r.w, err = strconv.Atoi(f[0]); err != nil {
		return r, false
	}
	if r.s, err = strconv.Atoi(f[1]); err != nil {
		return r, false
	}
	if r.i, err = strconv.Atoi(f[2]); err != nil {
		return r, false
	}
	return r, true
}

type sectionKey struct{ w, s int }

// placed is where a record was found: file and line number.
type placed struct {
	file string
	line int
}

// checkFiles checks the final files against the sections: every committed
// section exactly once, contiguous and in order in each of its files;
// nothing from an aborted section or a stale append; an undecided section
// all or nothing. It resolves each undecided section to committed (with
// the content found) or aborted, for the linearizability check.
func checkFiles(h *history, files map[string][]byte) []string {
	var v []string
	found := make(map[recordID]placed)
	perSection := make(map[sectionKey][]recordID)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		data := string(files[name])
		if data != "" && !strings.HasSuffix(data, "\n") {
			v = append(v, fmt.Sprintf("%s ends with a torn record %q", name, tail(data)))
		}
		for ln, line := range strings.Split(strings.TrimSuffix(data, "\n"), "\n") {
			if line == "" && data == "" {
				continue
			}
			r, ok := parseRecord(line)
			if !ok {
				v = append(v, fmt.Sprintf("%s line %d is not a record: %q", name, ln+1, line))
				continue
			}
			if prev, dup := found[r]; dup {
				v = append(v, fmt.Sprintf("record %q appears twice: %s line %d and %s line %d", strings.TrimSpace(line), prev.file, prev.line, name, ln+1))
				continue
			}
			found[r] = placed{name, ln + 1}
			perSection[sectionKey{r.w, r.s}] = append(perSection[sectionKey{r.w, r.s}], r)
		}
	}
	known := make(map[sectionKey]*section)
	for _, s := range h.sections {
		known[sectionKey{s.Worker, s.Section}] = s
	}
	for k, recs := range perSection {
		if _, ok := known[k]; !ok {
			v = append(v, fmt.Sprintf("records of section w%d s%d that no client ran: %d of them, first at %v", k.w, k.s, len(recs), found[recs[0]]))
		}
	}
	for _, s := range h.sections {
		recs := perSection[sectionKey{s.Worker, s.Section}]
		name := fmt.Sprintf("w%d section %d (token %d, %s)", s.Worker, s.Section, s.Token, s.End)
		switch s.End {
		case aborted:
			if len(recs) > 0 {
				v = append(v, fmt.Sprintf("%s: %d of its records appear, first at %v", name, len(recs), found[recs[0]]))
			}
			continue
		case undecided:
			if len(recs) == 0 {
				s.End = aborted
				continue
			}
			if s.Refused != "" {
				h.findings = append(h.findings, fmt.Sprintf("%s committed, but its client was told: %s", name, s.Refused))
			}
		}
		// Committed, or undecided and (partly) present: every append whose
		// outcome the client knew must be there, contiguous and in order.
		if problem := placedInOrder(s, recs, found); problem != "" {
			v = append(v, name+": "+problem)
		}
		if s.End == undecided {
			// Resolve: the section committed what the files show.
			var got []appended
			sort.Slice(recs, func(a, b int) bool { return recs[a].i < recs[b].i })
			for _, r := range recs {
				got = append(got, appended{File: found[r].file, Data: recordData(r.w, r.s, r.i)})
			}
			s.Appends = got
		}
	}
	return v
}

// placedInOrder checks that a section's appends sit in their files, each
// file's share on consecutive lines in the order appended.
func placedInOrder(s *section, recs []recordID, found map[recordID]placed) string {
	want := make(map[recordID]string)
	for _, a := range s.Appends {
		r, _ := parseRecord(strings.TrimSpace(a.Data))
		want[r] = a.File
	}
	if s.End == committed && len(recs) != len(s.Appends) {
		return fmt.Sprintf("%d records appear, %d were appended", len(recs), len(s.Appends))
	}
	byFile := make(map[string][]recordID)
	for _, a := range s.Appends {
		r, _ := parseRecord(strings.TrimSpace(a.Data))
		p, ok := found[r]
		if !ok {
			if s.End == committed {
				return fmt.Sprintf("record %d (for %s) is missing", r.i, a.File)
			}
			continue
		}
		if p.file != a.File {
			return fmt.Sprintf("record %d was appended to %s but is in %s", r.i, a.File, p.file)
		}
		byFile[a.File] = append(byFile[a.File], r)
	}
	for _, r := range recs {
		if _, ok := want[r]; !ok && s.End == committed {
			return fmt.Sprintf("record %d at %v was never acknowledged", r.i, found[r])
		}
	}
	for f, rs := range byFile {
		for k := 1; k < len(rs); k++ {
			if found[rs[k]].line != found[rs[k-1]].line+1 {
				return fmt.Sprintf("in %s, record %d (line %d) does not follow record %d (line %d)", f, rs[k].i, found[rs[k]].line, rs[k-1].i, found[rs[k-1]].line)
			}
		}
	}
	return ""
}

// checkTokens checks the fencing tokens: each grant's token is new and
// larger than every grant that finished before it began; a consistent
// Status never shows a last token below one already granted; and every
// server's view of which session holds which token agrees with the others
// and with the clients.
func checkTokens(h *history) []string {
	var v []string
	var grants []event
	var statuses []event
	for _, e := range h.events {
		switch {
		case e.Kind == "acquire" && e.Result == ok:
			grants = append(grants, e)
		case e.Kind == "status" && e.Result == ok:
			statuses = append(statuses, e)
		}
	}
	byToken := make(map[uint64]event)
	for _, g := range grants {
		if prev, dup := byToken[g.Token]; dup && (prev.Worker != g.Worker || prev.Session != g.Session) {
			v = append(v, fmt.Sprintf("token %d granted twice: to w%d (session %d) and to w%d (session %d)", g.Token, prev.Worker, prev.Session, g.Worker, g.Session))
		}
		byToken[g.Token] = g
	}
	// Real-time order: a grant that ended before another began has the
	// smaller token. Sorting by return time keeps this near-linear.
	sorted := append([]event(nil), grants...)
	sort.Slice(sorted, func(a, b int) bool { return sorted[a].Return < sorted[b].Return })
	var maxDone uint64
	var maxDoneBy event
	j := 0
	byCall := append([]event(nil), grants...)
	sort.Slice(byCall, func(a, b int) bool { return byCall[a].Call < byCall[b].Call })
	for _, g := range byCall {
		for j < len(sorted) && sorted[j].Return < g.Call {
			if sorted[j].Token > maxDone {
				maxDone, maxDoneBy = sorted[j].Token, sorted[j]
			}
			j++
		}
		reentrant := g.Token == maxDone && g.Session == maxDoneBy.Session
		if g.Token <= maxDone && !reentrant {
			v = append(v, fmt.Sprintf("w%d was granted token %d after w%d's grant of token %d had returned", g.Worker, g.Token, maxDoneBy.Worker, maxDone))
		}
	}
	// A consistent Status is a linearizable read of the default lock's last
	// token (a named lock's grants have tokens of their own, above it).
	j, maxDone = 0, 0
	sort.Slice(statuses, func(a, b int) bool { return statuses[a].Call < statuses[b].Call })
	for _, st := range statuses {
		for j < len(sorted) && sorted[j].Return < st.Call {
			if sorted[j].Lock == "" {
				maxDone = max(maxDone, sorted[j].Token)
			}
			j++
		}
		if st.LastToken < maxDone {
			v = append(v, fmt.Sprintf("a consistent Status by w%d reported last token %d after token %d had been granted", st.Worker, st.LastToken, maxDone))
		}
	}
	// Every server's samples: one holder per token, tokens that never go
	// back within one process's life.
	holderOf := make(map[uint64]uint64)
	type life struct{ node, inc int }
	lastSeen := make(map[life]sample)
	for _, s := range h.samples {
		if s.Token != 0 {
			if prev, ok := holderOf[s.Token]; ok && prev != s.Holder {
				v = append(v, fmt.Sprintf("token %d held by session %d on one server and by session %d on n%d", s.Token, prev, s.Holder, s.Node+1))
			}
			holderOf[s.Token] = s.Holder
		}
		l := life{s.Node, s.Incarnation}
		if p, ok := lastSeen[l]; ok && (s.LastToken < p.LastToken || s.Applied < p.Applied) {
			v = append(v, fmt.Sprintf("n%d went back: last token %d -> %d, applied %d -> %d", s.Node+1, p.LastToken, s.LastToken, p.Applied, s.Applied))
		}
		lastSeen[l] = s
	}
	for _, g := range grants {
		if holder, ok := holderOf[g.Token]; ok && g.Session != 0 && holder != g.Session {
			v = append(v, fmt.Sprintf("w%d's session %d was granted token %d, but a server shows session %d holding it", g.Worker, g.Session, g.Token, holder))
		}
	}
	// Stale appends and releases must be refused.
	for _, e := range h.events {
		if e.Stale && e.Result == ok {
			v = append(v, fmt.Sprintf("w%d's %s with the stale token %d was accepted", e.Worker, e.Kind, e.Token))
		}
	}
	return v
}

// checkLinearizable runs porcupine on the history. When it finds the
// history illegal, or always is set (another check failed), it writes the
// visualization to vizPath.
func checkLinearizable(h *history, vizPath string, timeout time.Duration, always bool) (porcupine.CheckResult, error) {
	ops := operations(h)
	res, info := porcupine.CheckOperationsVerbose(dlmModel, ops, timeout)
	if res == porcupine.Illegal || always {
		if err := os.MkdirAll(filepath.Dir(vizPath), 0o755); err != nil {
			return res, err
		}
		if err := porcupine.VisualizePath(dlmModel, info, vizPath); err != nil {
			return res, err
		}
	}
	return res, nil
}

// illegalPartitions names the model's partitions (a lock, or a file) that
// porcupine refutes on their own, to say which part of dlm broke, within
// budget in all (a partition it cannot decide in time is left out).
func illegalPartitions(h *history, budget time.Duration) []string {
	byKey := make(map[string][]porcupine.Operation)
	for _, op := range operations(h) {
		k := op.Input.(input).key
		byKey[k] = append(byKey[k], op)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	// Locks first: they are what a broken server gets wrong most often.
	sort.Slice(keys, func(a, b int) bool {
		if la, lb := isLockKey(keys[a]), isLockKey(keys[b]); la != lb {
			return la
		}
		return keys[a] < keys[b]
	})
	deadline := time.Now().Add(budget)
	var bad []string
	for _, k := range keys {
		left := time.Until(deadline)
		if left <= 0 {
			bad = append(bad, "(out of time)")
			break
		}
		if res, _ := porcupine.CheckOperationsVerbose(dlmModel, byKey[k], left); res == porcupine.Illegal {
			bad = append(bad, k)
		}
	}
	return bad
}
