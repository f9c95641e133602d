//go:build dlm_faults

package node

import (
	"os"
	"syscall"

	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"

	"github.com/dlm/dlm/server/fsm"
)

// A disk that fills and empties on demand, for the robustness suite's
// disk-full fault. Never built without the dlm_faults tag.
//
// DLM_FAULT_DISK names a control file: while it exists, the node's file
// writes (through the FSM's file layer) and the creation of a Raft log
// segment fail with ENOSPC, and its free space reads 0, so the leader's
// admission answers DISK_FULL. As on a real full disk, writes into the
// current, preallocated segment still succeed, unless the file says "log":
// then every log write and fsync fails too. Removing the file frees the
// disk.
func injectDiskFault(cfg *Config) {
	ctl := os.Getenv("DLM_FAULT_DISK")
	if ctl == "" {
		return
	}
	full := func() bool {
		_, err := os.Stat(ctl)
		return err == nil
	}
	logFull := func() bool {
		b, err := os.ReadFile(ctl)
		return err == nil && string(b) == "log"
	}
	free := cfg.FreeSpace
	cfg.FreeSpace = func(dir string) (int64, error) {
		if full() {
			return 0, nil
		}
		return free(dir)
	}
	cfg.files = fullFiles{full: full}
	vfs := cfg.LogFS
	if vfs == nil {
		vfs = fs.New()
	}
	cfg.LogFS = &fullLog{VFS: vfs, full: full, writes: logFull}
}

func enospc(op, name string) error {
	return &os.PathError{Op: op, Path: name, Err: syscall.ENOSPC}
}

// fullFiles opens the FSM's files as the FSM does, with writes that fail
// while the disk is full. Truncation still works, as it frees blocks.
type fullFiles struct{ full func() bool }

func (f fullFiles) OpenFile(path string) (fsm.File, error) {
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return fullFile{File: fh, full: f.full}, nil
}

type fullFile struct {
	*os.File
	full func() bool
}

func (f fullFile) Write(p []byte) (int, error) {
	if f.full() {
		return 0, enospc("write", f.Name())
	}
	return f.File.Write(p)
}

// fullLog is the Raft log's file layer on a disk that may be full: as on
// a real full disk, creating a segment leaves an empty file behind and
// fails; writes fail when writes says so.
type fullLog struct {
	types.VFS
	full, writes func() bool
}

func (d *fullLog) Create(dir, name string, size uint64) (types.WritableFile, error) {
	if d.full() {
		if f, err := d.VFS.Create(dir, name, 0); err == nil {
			f.Close()
		}
		return nil, enospc("fallocate", name)
	}
	f, err := d.VFS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	return &fullSegment{WritableFile: f, full: d.writes, name: name}, nil
}

func (d *fullLog) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := d.VFS.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	return &fullSegment{WritableFile: f, full: d.writes, name: name}, nil
}

type fullSegment struct {
	types.WritableFile
	full func() bool
	name string
}

func (f *fullSegment) WriteAt(p []byte, off int64) (int, error) {
	if f.full() {
		return 0, enospc("write", f.name)
	}
	return f.WritableFile.WriteAt(p, off)
}

func (f *fullSegment) Sync() error {
	if f.full() {
		return enospc("fsync", f.name)
	}
	return f.WritableFile.Sync()
}
