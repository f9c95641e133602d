package main

import (
	"strconv"
	"unicode"
)

// printable returns s as is when every character is printable, and quoted
// with Go escapes otherwise: session names, member ids and addresses come
// from the replicated state, which a client wrote, and must not reach the
// operator's terminal as escape sequences or forged lines.
func printable(s string) string {
	for _, r := range s {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
