package lockstate_test

import (
	"slices"
	"strings"
	"testing"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/lockstate"
)

func TestCheckFile(t *testing.T) {
	m := lockstate.New(lockstate.DefaultLimits())
	for _, tc := range []struct {
		name string
		want dlmv1.ErrorReason
	}{
		{"file_0", rNone},
		{"file_7", rNone},
		{"file_10", rNone},
		{"file_99", rNone},

		// Well formed, but not one of the files: only the canonical
		// spelling of 0…99 names a file.
		{"file_100", rFileNotFound},
		{"file_03", rFileNotFound},
		{"file_00", rFileNotFound},
		{"file_-1", rFileNotFound},
		{"file_+3", rFileNotFound},
		{"file_ 3", rFileNotFound},
		{"file_", rFileNotFound},
		{"file_x", rFileNotFound},
		{"File_1", rFileNotFound},
		{"file_1 ", rFileNotFound},
		{"file_١", rFileNotFound}, // Arabic-Indic digit one
		{"foo", rFileNotFound},
		{".", rFileNotFound},
		{"file_99999999999999999999999", rFileNotFound},

		// Malformed: could reach outside the data folder or confuse a
		// terminal.
		{"", rInvalidFile},
		{"..", rInvalidFile},
		{"../etc/passwd", rInvalidFile},
		{"file_1/..", rInvalidFile},
		{"a/b", rInvalidFile},
		{"/file_1", rInvalidFile},
		{`a\b`, rInvalidFile},
		{`..\file_1`, rInvalidFile},
		{"file..1", rInvalidFile},
		{"file_1\x00", rInvalidFile},
		{"file_1\n", rInvalidFile},
		{"\tfile_1", rInvalidFile},
		{"file_\x1b[2J", rInvalidFile},
		{"file_1\x7f", rInvalidFile},
		{"file_1\u0085", rInvalidFile}, // C1 control (next line)
		{"file_1\xff", rInvalidFile},   // not UTF-8
		{strings.Repeat("f", 65), rInvalidFile},
	} {
		if got := m.CheckFile(tc.name); got != tc.want {
			t.Errorf("CheckFile(%q) = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestFileNames(t *testing.T) {
	m := lockstate.New(lockstate.Limits{Files: 3, MaxOutstanding: 1})
	if got, want := m.FileNames(), []string{"file_0", "file_1", "file_2"}; !slices.Equal(got, want) {
		t.Errorf("FileNames() = %q, want %q", got, want)
	}
	if got := m.CheckFile("file_3"); got != rFileNotFound {
		t.Errorf("CheckFile(file_3) with 3 files = %s", got)
	}
	names := lockstate.New(lockstate.DefaultLimits()).FileNames()
	if len(names) != 100 || names[0] != "file_0" || names[99] != "file_99" {
		t.Errorf("default files %q … %q (%d)", names[0], names[len(names)-1], len(names))
	}
	for _, n := range names {
		if m.CheckFile(n) == rInvalidFile {
			t.Errorf("%s is malformed", n)
		}
		if size := m.FileSize(n); size != 0 {
			t.Errorf("new %s has %d bytes", n, size)
		}
	}
}
