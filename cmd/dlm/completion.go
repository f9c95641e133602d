package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// runCompletion prints a bash completion script for dlm: the commands, the
// verbs of members and snapshot, and each command's flags. The flags are
// read from each command's own help, so the script cannot drift from them.
func runCompletion(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("completion", "bash", "Prints a bash completion script: source <(dlm completion bash).", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) != "bash" {
		return fmt.Errorf("completion: give the shell: bash (got %q)", fs.Args())
	}
	var names []string
	var cases strings.Builder
	verbs := map[string][]string{"members": {"list", "add", "remove"}, "snapshot": {"save", "verify", "restore"}}
	for _, c := range commands() {
		names = append(names, c.name)
		if vs, ok := verbs[c.name]; ok {
			fmt.Fprintf(&cases, "  %s) words=%q ;;\n", c.name, strings.Join(vs, " "))
			for _, v := range vs {
				fmt.Fprintf(&cases, "  \"%s %s\") words=%q ;;\n", c.name, v, strings.Join(flagNames(ctx, c.name, v), " "))
			}
			continue
		}
		fmt.Fprintf(&cases, "  %s) words=%q ;;\n", c.name, strings.Join(flagNames(ctx, c.name), " "))
	}
	_, err := fmt.Fprintf(stdout, `# bash completion for dlm; load with: source <(dlm completion bash)
_dlm() {
  local cur=${COMP_WORDS[COMP_CWORD]} cmd=${COMP_WORDS[1]} words
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W %q -- "$cur")); return
  fi
  case "$cmd" in members|snapshot) [ "$COMP_CWORD" -gt 2 ] && cmd="$cmd ${COMP_WORDS[2]}" ;; esac
  case "$cmd" in
%s  help) words=%q ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _dlm dlm
`, strings.Join(append(names, "help"), " "), cases.String(), strings.Join(names, " "))
	return err
}

// flagLine is a flag in PrintDefaults' output: "  -name type".
var flagLine = regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)

// flagNames are the flags of the command args names, as --name, read from
// its help.
func flagNames(ctx context.Context, args ...string) []string {
	var help bytes.Buffer
	_ = run(ctx, append(args, "-h"), strings.NewReader(""), io.Discard, &help)
	var out []string
	for _, m := range flagLine.FindAllStringSubmatch(help.String(), -1) {
		if len(m[1]) == 1 {
			out = append(out, "-"+m[1])
		} else {
			out = append(out, "--"+m[1])
		}
	}
	slices.Sort(out)
	return out
}
