package node

import (
	"unicode"
	"unicode/utf8"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// checkSessionName refuses a name an operator's terminal could take for
// something else: names are shown by dlm status and the dashboard, so they
// are printable text (spaces included, control characters and invalid UTF-8
// not).
func checkSessionName(name string) error {
	if len(name) > 64 {
		return fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "the session name is longer than 64 bytes")
	}
	for i, r := range name {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return fail(dlmv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "the session name has a control or non-printable character at byte %d; names are printable text", i)
		}
	}
	return nil
}
