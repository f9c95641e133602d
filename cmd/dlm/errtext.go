package main

import "strings"

// errLine renders an error as the one line the CLI prints after "dlm: " (or
// the shell after "error: "). Errors from the client library carry a "dlm: "
// head at each level of wrapping, and a retry error repeats the head of the
// failure it wraps; printed as they are, a line reads "dlm: append: dlm:
// service unavailable: … dlm: service unavailable: no leader known". Each
// head is dropped, and a part equal to an earlier one is said once.
func errLine(err error) string {
	if err == nil {
		return ""
	}
	s := strings.ReplaceAll(err.Error(), "dlm: ", "")
	s = strings.Join(strings.Fields(s), " ") // one line
	var parts []string
	seen := make(map[string]bool)
	for p := range strings.SplitSeq(s, ": ") {
		if seen[p] {
			continue
		}
		seen[p] = true
		parts = append(parts, p)
	}
	return strings.Join(parts, ": ")
}
