package node

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The data folder holds every session secret (in the log and the
// snapshots) and the files: it is private to the user running dlm.
const (
	dirMode  fs.FileMode = 0o700
	fileMode fs.FileMode = 0o600
)

// tightenModes takes group and other permissions off everything in the data
// folder, so it does not depend on the umask or on the modes the Raft
// libraries choose. It returns dlm's own entries that were looser (the
// folder itself, node-id, files/ and its files), for a warning. Entries under
// raft/ are tightened without a report: raft-wal and the snapshot store
// create each new segment and snapshot readable by all (inside the private
// folder), so they are loose on every start.
func tightenModes(dataDir string) (loose []string, err error) {
	raftPrefix := "raft" + string(filepath.Separator)
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed while walking
		}
		want := fileMode
		if d.IsDir() {
			want = dirMode
		}
		perm := info.Mode().Perm()
		if perm&^want == 0 {
			return nil
		}
		if err := os.Chmod(path, perm&want); err != nil {
			return err
		}
		if rel, _ := filepath.Rel(dataDir, path); !strings.HasPrefix(rel, raftPrefix) {
			loose = append(loose, path+" ("+perm.String()+")")
		}
		return nil
	})
	return loose, err
}
