package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// A snapshot file is a fixed-size text header, then the snapshot's bytes as
// the leader streamed them (the state machine's own snapshot format):
//
//	dlm-snapshot 1
//	index 00000000000000001234
//	term 00000000000000000005
//	size 00000000000000056789
//	sha256 <64 hex digits>
//	<empty line>
//	<size bytes>
//
// The header has a fixed size so that save can write the body first and the
// header, whose fields come last on the stream, in place afterwards. The
// sha256 covers the four lines above it and the body, so a flipped byte
// anywhere, header fields included, is caught. `head -6 FILE` shows it.

const snapshotFormat = 1

var snapshotMagic = fmt.Sprintf("dlm-snapshot %d\n", snapshotFormat)

type snapshotHeader struct {
	Index, Term uint64
	Size        int64
	SHA256      [sha256.Size]byte
}

// headerLen is the size of every header.
var headerLen = len(snapshotHeader{}.encode())

// covered is the part of the header the checksum covers.
func (h snapshotHeader) covered() []byte {
	return fmt.Appendf(nil, "%sindex %020d\nterm %020d\nsize %020d\n", snapshotMagic, h.Index, h.Term, h.Size)
}

func (h snapshotHeader) encode() []byte {
	return fmt.Appendf(h.covered(), "sha256 %s\n\n", hex.EncodeToString(h.SHA256[:]))
}

// errCorrupt marks a snapshot file that fails its checks.
var errCorrupt = errors.New("snapshot file is damaged")

// readSnapshotHeader parses a header.
func readSnapshotHeader(r io.Reader) (snapshotHeader, error) {
	var h snapshotHeader
	buf := make([]byte, headerLen)
	if _, err := io.ReadFull(r, buf); err != nil {
		return h, fmt.Errorf("%w: too short for a header (%v)", errCorrupt, err)
	}
	if !bytes.HasPrefix(buf, []byte("dlm-snapshot ")) {
		return h, fmt.Errorf("%w: not a dlm snapshot (no dlm-snapshot header)", errCorrupt)
	}
	var version int
	if _, err := fmt.Sscanf(string(buf), "dlm-snapshot %d\n", &version); err != nil || version != snapshotFormat {
		return h, fmt.Errorf("%w: format version %q: this dlm reads version %d", errCorrupt, bytes.SplitN(buf, []byte("\n"), 2)[0], snapshotFormat)
	}
	var sum string
	if _, err := fmt.Sscanf(string(buf[len(snapshotMagic):]), "index %d\nterm %d\nsize %d\nsha256 %64s\n\n", &h.Index, &h.Term, &h.Size, &sum); err != nil {
		return h, fmt.Errorf("%w: malformed header: %v", errCorrupt, err)
	}
	if n, err := hex.Decode(h.SHA256[:], []byte(sum)); err != nil || n != sha256.Size {
		return h, fmt.Errorf("%w: malformed sha256 in the header", errCorrupt)
	}
	if h.Size < 0 || !bytes.Equal(h.encode(), buf) {
		return h, fmt.Errorf("%w: malformed header", errCorrupt)
	}
	return h, nil
}

// verifySnapshotFile checks a file's header, size and checksum, reading it
// once, and returns its header.
func verifySnapshotFile(path string) (snapshotHeader, error) {
	fh, err := os.Open(path)
	if err != nil {
		return snapshotHeader{}, err
	}
	defer fh.Close()
	h, err := readSnapshotHeader(fh)
	if err != nil {
		return h, err
	}
	sum := sha256.New()
	sum.Write(h.covered())
	n, err := io.Copy(sum, fh)
	if err != nil {
		return h, err
	}
	switch {
	case n != h.Size:
		return h, fmt.Errorf("%w: %d bytes after the header, the header says %d (truncated or extended)", errCorrupt, n, h.Size)
	case !bytes.Equal(sum.Sum(nil), h.SHA256[:]):
		return h, fmt.Errorf("%w: its SHA-256 does not match the header's", errCorrupt)
	}
	return h, nil
}

// snapshotWriter writes a snapshot file next to its final path and puts it
// in place only when finished, never over an existing file.
type snapshotWriter struct {
	path string
	tmp  *os.File
	bw   *bufio.Writer
	body int64
	done bool
}

func createSnapshotFile(path string) (*snapshotWriter, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("%s exists: not overwritten (remove it or choose another name)", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".partial-")
	if err != nil {
		return nil, err
	}
	w := &snapshotWriter{path: path, tmp: tmp, bw: bufio.NewWriterSize(tmp, 1<<20)}
	// A placeholder, overwritten by finish.
	if _, err := w.bw.Write(make([]byte, headerLen)); err != nil {
		w.abort()
		return nil, err
	}
	return w, nil
}

func (w *snapshotWriter) Write(p []byte) (int, error) {
	n, err := w.bw.Write(p)
	w.body += int64(n)
	return n, err
}

// finish writes the header, computing the checksum over what is on disk,
// and links the file into place.
func (w *snapshotWriter) finish(index, term uint64) (snapshotHeader, error) {
	h := snapshotHeader{Index: index, Term: term, Size: w.body}
	if err := w.bw.Flush(); err != nil {
		return h, err
	}
	sum := sha256.New()
	sum.Write(h.covered())
	if _, err := io.Copy(sum, io.NewSectionReader(w.tmp, int64(headerLen), w.body)); err != nil {
		return h, err
	}
	copy(h.SHA256[:], sum.Sum(nil))
	if _, err := w.tmp.WriteAt(h.encode(), 0); err != nil {
		return h, err
	}
	if err := w.tmp.Sync(); err != nil {
		return h, err
	}
	if err := w.tmp.Close(); err != nil {
		return h, err
	}
	// link(2) refuses an existing name, so a file that appeared meanwhile is
	// not overwritten either.
	if err := os.Link(w.tmp.Name(), w.path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return h, fmt.Errorf("%s exists: not overwritten (remove it or choose another name)", w.path)
		}
		return h, err
	}
	w.done = true
	os.Remove(w.tmp.Name())
	if d, err := os.Open(filepath.Dir(w.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return h, nil
}

// abort removes the unfinished file.
func (w *snapshotWriter) abort() {
	if w.done {
		return
	}
	w.tmp.Close()
	os.Remove(w.tmp.Name())
}
