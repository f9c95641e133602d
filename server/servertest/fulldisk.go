package servertest

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
)

// NewFullDisk returns a file layer over the real file system whose disk
// is not full yet.
func NewFullDisk(writes bool) *FullDisk {
	return &FullDisk{VFS: fs.New(), Writes: writes}
}

// FullDisk is a Raft log file layer (node.Config.LogFS) with a switch that
// makes the disk full. With Writes set, every write and fsync fails too;
// without, only creating a segment does, as on a real full disk, where
// writes land in the preallocated segment and the next segment is what no
// longer fits (its file is created, but it has no blocks, so writing to it
// fails too).
type FullDisk struct {
	types.VFS
	// Writes makes every write and fsync fail too while full.
	Writes bool
	// Full is the switch.
	Full atomic.Bool
	// sparse holds the files created while full, which have no blocks.
	sparse sync.Map
	// Refused counts the failures injected.
	Refused atomic.Int64
}

func (d *FullDisk) enospc(op, name string) error {
	d.Refused.Add(1)
	return &os.PathError{Op: op, Path: name, Err: syscall.ENOSPC}
}

func (d *FullDisk) Create(dir, name string, size uint64) (types.WritableFile, error) {
	if d.Full.Load() {
		// As os.OpenFile then a failed fallocate do: the file stays behind.
		if f, err := d.VFS.Create(dir, name, 0); err == nil {
			f.Close()
			d.sparse.Store(name, true)
		}
		return nil, d.enospc("fallocate", name)
	}
	f, err := d.VFS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	return &fullFile{WritableFile: f, d: d, name: name}, nil
}

func (d *FullDisk) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := d.VFS.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	_, sparse := d.sparse.Load(name)
	return &fullFile{WritableFile: f, d: d, name: name, sparse: sparse}, nil
}

type fullFile struct {
	types.WritableFile
	d      *FullDisk
	name   string
	sparse bool
}

func (f *fullFile) fails() bool { return f.d.Full.Load() && (f.d.Writes || f.sparse) }

func (f *fullFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fails() {
		return 0, f.d.enospc("write", f.name)
	}
	return f.WritableFile.WriteAt(p, off)
}

func (f *fullFile) Sync() error {
	if f.fails() {
		return f.d.enospc("fsync", f.name)
	}
	return f.WritableFile.Sync()
}
