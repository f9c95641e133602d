package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// CompareStatus lists how the replicated states in the nodes' Status
// answers (sts[i] is nodes[i]'s) differ from the first's: applied index,
// lock, sessions and file sizes.
func CompareStatus(nodes []*Node, sts []*dlmv1.StatusResponse) []string {
	var diffs []string
	a := sts[0]
	for i := 1; i < len(sts); i++ {
		b := sts[i]
		if a.GetNode().GetAppliedIndex() != b.GetNode().GetAppliedIndex() {
			diffs = append(diffs, fmt.Sprintf("applied index %s=%d %s=%d", nodes[0].ID, a.GetNode().GetAppliedIndex(), nodes[i].ID, b.GetNode().GetAppliedIndex()))
			continue
		}
		la, lb := a.GetLock(), b.GetLock()
		if la.GetHolder() != lb.GetHolder() || la.GetToken() != lb.GetToken() || la.GetLastToken() != lb.GetLastToken() ||
			la.GetStagedAppends() != lb.GetStagedAppends() || fmt.Sprint(la.GetQueue()) != fmt.Sprint(lb.GetQueue()) {
			diffs = append(diffs, fmt.Sprintf("lock state %s=%v %s=%v", nodes[0].ID, la, nodes[i].ID, lb))
		}
		if a.GetSessionCount() != b.GetSessionCount() || fmt.Sprint(SessionIDs(a)) != fmt.Sprint(SessionIDs(b)) {
			diffs = append(diffs, fmt.Sprintf("sessions %s=%v %s=%v", nodes[0].ID, SessionIDs(a), nodes[i].ID, SessionIDs(b)))
		}
		if len(a.GetFiles()) != len(b.GetFiles()) {
			diffs = append(diffs, fmt.Sprintf("files %s=%d %s=%d", nodes[0].ID, len(a.GetFiles()), nodes[i].ID, len(b.GetFiles())))
			continue
		}
		for k, f := range a.GetFiles() {
			if g := b.GetFiles()[k]; f.GetName() != g.GetName() || f.GetSize() != g.GetSize() {
				diffs = append(diffs, fmt.Sprintf("file %s size %d on %s, %s size %d on %s", f.GetName(), f.GetSize(), nodes[0].ID, g.GetName(), g.GetSize(), nodes[i].ID))
			}
		}
	}
	return diffs
}

// SessionIDs lists the client ids of the sessions in a Status answer.
func SessionIDs(st *dlmv1.StatusResponse) []uint64 {
	var ids []uint64
	for _, s := range st.GetSessions() {
		ids = append(ids, s.GetClientId())
	}
	return ids
}

// CompareFiles compares every node's DATA/files with the first node's,
// byte for byte, and lists the differences.
func CompareFiles(nodes []*Node) []string {
	ref, err := ReplicaFiles(nodes[0].Data)
	if err != nil {
		return []string{err.Error()}
	}
	var diffs []string
	for _, n := range nodes[1:] {
		got, err := ReplicaFiles(n.Data)
		if err != nil {
			diffs = append(diffs, err.Error())
			continue
		}
		names := make([]string, 0, len(ref)+len(got))
		for name := range ref {
			names = append(names, name)
		}
		for name := range got {
			if _, ok := ref[name]; !ok {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		for _, name := range names {
			want, inRef := ref[name]
			have, inGot := got[name]
			switch {
			case !inGot:
				diffs = append(diffs, fmt.Sprintf("files/%s: %s has it, %s not", name, nodes[0].ID, n.ID))
			case !inRef:
				diffs = append(diffs, fmt.Sprintf("files/%s: %s has it, %s not", name, n.ID, nodes[0].ID))
			case !bytes.Equal(have, want):
				diffs = append(diffs, fmt.Sprintf("files/%s differs: %s has %q, %s %q", name, nodes[0].ID, Clip(want), n.ID, Clip(have)))
			}
		}
	}
	return diffs
}

// Clip shortens b for a log line.
func Clip(b []byte) []byte {
	if len(b) > 80 {
		return append(b[:80:80], "…"...)
	}
	return b
}

// ReplicaFiles reads a data folder's files/ from disk, by name.
func ReplicaFiles(dataDir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(filepath.Join(dataDir, "files"))
	if err != nil {
		return nil, err
	}
	files := make(map[string][]byte, len(entries))
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dataDir, "files", e.Name()))
		if err != nil {
			return nil, err
		}
		files[e.Name()] = b
	}
	return files, nil
}
