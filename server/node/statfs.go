//go:build linux || darwin

package node

import "syscall"

// statfsFree is the space an unprivileged process may still use on the
// volume holding dir (Bavail, not Bfree: the root reserve is not ours).
func statfsFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
