package lockstate

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

const filePrefix = "file_"

// FileName is the name of file i.
func FileName(i int) string { return filePrefix + strconv.Itoa(i) }

// FileNames lists every file in numeric order.
func (m *Machine) FileNames() []string {
	names := make([]string, m.limits.Files)
	for i := range names {
		names[i] = FileName(i)
	}
	return names
}

// CheckFile says whether name is one of the files. A name that could reach
// outside the data folder (a path, "..", a control character) is malformed;
// a well-formed name that is not file_0 … file_{n-1} is not found. Only
// names that pass are ever joined to a folder path.
func (m *Machine) CheckFile(name string) dlmv1.ErrorReason {
	if name == "" || len(name) > 64 || strings.ContainsAny(name, `/\`) || strings.Contains(name, "..") {
		return dlmv1.ErrorReason_ERROR_REASON_INVALID_FILE_NAME
	}
	// Control characters (C0, DEL and C1) and broken UTF-8 are never part
	// of a file name; they are malformed, not merely unknown.
	if !utf8.ValidString(name) || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return dlmv1.ErrorReason_ERROR_REASON_INVALID_FILE_NAME
	}
	digits, ok := strings.CutPrefix(name, filePrefix)
	if !ok {
		return dlmv1.ErrorReason_ERROR_REASON_FILE_NOT_FOUND
	}
	i, err := strconv.Atoi(digits)
	// The canonical spelling only: file_03 and file_+3 are other names.
	if err != nil || i < 0 || i >= m.limits.Files || FileName(i) != name {
		return dlmv1.ErrorReason_ERROR_REASON_FILE_NOT_FOUND
	}
	return dlmv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}
