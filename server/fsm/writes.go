package fsm

import (
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dlm/dlm/server/lockstate"
)

// File is what the FSM needs of an open file: appends (the handle is opened
// for appending), reads at an offset and truncation.
type File interface {
	io.ReaderAt
	io.Writer
	Truncate(size int64) error
	Close() error
}

// FS opens the files, creating a missing one empty and leaving an existing
// one as it is. Tests replace it to make writes fail.
type FS interface {
	OpenFile(path string) (File, error)
}

type osFS struct{}

func (osFS) OpenFile(path string) (File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
}

// Option adjusts an FSM.
type Option func(*FSM)

// WithFS makes the FSM open its files through fs.
func WithFS(fs FS) Option { return func(f *FSM) { f.fs = fs } }

// WithRetry sets the wait between attempts of a failing write: first, then
// doubling up to most.
func WithRetry(first, most time.Duration) Option {
	return func(f *FSM) { f.retryFirst, f.retryMost = first, most }
}

// Interrupt makes a write being retried give up, so that Raft can shut
// down; the FSM applies nothing more (the next start rebuilds the files
// from the snapshot and the log).
func (f *FSM) Interrupt() {
	f.quitOnce.Do(func() { close(f.quit) })
}

func (f *FSM) dataDir() string { return filepath.Dir(f.dir) }

// resetFiles empties every file, once, before the first entry is applied or
// snapshot restored: the files are rebuilt from the snapshot and the log on
// every start. Doing it then rather than on open leaves the files as they
// were when a start fails before Raft runs (a log that does not open, a port
// in use). Called with f.mu held, on the FSM goroutine.
func (f *FSM) resetFiles(index uint64) bool {
	if f.reset {
		return true
	}
	for _, name := range f.m.FileNames() {
		if !f.retry(index, func() error {
			if err := f.files[name].Truncate(0); err != nil {
				return fmt.Errorf("empty %s before rebuilding it: %w", name, err)
			}
			return nil
		}) {
			return false
		}
		f.sizes[name], f.crcs[name] = 0, 0
	}
	f.reset = true
	return true
}

// writeFile appends one committed write. A write that fails (a full disk,
// an I/O error) is undone by truncating the file back to its committed
// length and retried, with waits growing from retryFirst to retryMost, until
// it succeeds: the entry is committed, every replica must apply it, and
// panicking would only fail again on the same entry after a restart. While
// it fails, the node reports a storage fault and serves nothing. It returns
// false only when interrupted. Called with f.mu held, on the FSM goroutine.
func (f *FSM) writeFile(index uint64, w lockstate.Write) bool {
	fh, size := f.files[w.File], f.sizes[w.File]
	return f.retry(index, func() error {
		n, err := fh.Write(w.Data)
		if err == nil && n != len(w.Data) {
			err = io.ErrShortWrite
		}
		if err == nil {
			f.sizes[w.File] = size + int64(n)
			f.crcs[w.File] = crc32.Update(f.crcs[w.File], castagnoli, w.Data)
			return nil
		}
		err = fmt.Errorf("write of %d bytes to %s: %w", len(w.Data), w.File, err)
		if terr := fh.Truncate(size); terr != nil {
			// The next attempt appends after whatever this one left, so it
			// must not run before the truncation succeeds: keep failing.
			fh = truncateFirst{fh, size}
			return fmt.Errorf("%w; truncating it back to %d bytes: %v", err, size, terr)
		}
		fh = f.files[w.File]
		return err
	})
}

// truncateFirst is a file whose next write must first truncate it.
type truncateFirst struct {
	File
	size int64
}

func (t truncateFirst) Write(p []byte) (int, error) {
	if err := t.Truncate(t.size); err != nil {
		return 0, err
	}
	return t.File.Write(p)
}

// retry runs op until it succeeds, reporting a storage fault while it fails
// and clearing it once it succeeds. The FSM's lock is released during the
// waits, so that Status can still be answered. It returns false when
// interrupted.
func (f *FSM) retry(index uint64, op func() error) bool {
	wait := f.retryFirst
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			if attempt > 1 {
				f.report("", false)
			}
			return true
		}
		f.report(fmt.Sprintf("storage fault: applying log entry %d: %v (attempt %d). Applying is paused and the node "+
			"does not serve; it retries every %v and resumes by itself once the write succeeds: free space on the "+
			"disk of %s or fix the I/O error", index, err, attempt, f.retryMost, f.dir), false)
		f.mu.Unlock()
		select {
		case <-time.After(wait):
		case <-f.quit:
		}
		f.mu.Lock()
		select {
		case <-f.quit:
			f.faults.broken.Store(true)
			return false
		default:
		}
		wait = min(2*wait, f.retryMost)
	}
}
