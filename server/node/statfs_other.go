//go:build !linux && !darwin

package node

import "errors"

func statfsFree(string) (int64, error) {
	return 0, errors.New("free space is not known on this system")
}
