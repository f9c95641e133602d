package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os/exec"
	"strings"
	"testing"

	"github.com/dlm/dlm/server/servertest"
)

// helpArgs are the help command lines of every command (and verb).
func helpArgs() [][]string {
	var out [][]string
	for _, c := range commands() {
		switch c.name {
		case "members":
			for _, v := range []string{"list", "add", "remove"} {
				out = append(out, []string{c.name, v})
			}
		case "snapshot":
			for _, v := range []string{"save", "verify", "restore"} {
				out = append(out, []string{c.name, v})
			}
		}
		out = append(out, []string{c.name})
	}
	return out
}

// Every command answers dlm help CMD and dlm CMD -h alike: a usage line
// naming it, then (for commands with flags) its flags, and no error.
func TestHelpIsConsistent(t *testing.T) {
	for _, args := range helpArgs() {
		name := strings.Join(args, " ")
		_, viaHelp, err := cliRun(t, "", append([]string{"help"}, args...)...)
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Errorf("dlm help %s: %v", name, err)
		}
		if !strings.HasPrefix(viaHelp, "usage: dlm "+name) {
			t.Errorf("dlm help %s printed %q, want it to start with \"usage: dlm %s\"", name, viaHelp, name)
		}
		_, viaFlag, _ := cliRun(t, "", append(append([]string(nil), args...), "-h")...)
		if viaFlag != viaHelp {
			t.Errorf("dlm %s -h and dlm help %s differ:\n%s\n---\n%s", name, name, viaFlag, viaHelp)
		}
	}
	// The binary exits 0 after help it was asked for.
	if out, err := exec.Command(dlmBinary, "help", "status").CombinedOutput(); err != nil {
		t.Errorf("dlm help status: %v\n%s", err, out)
	}
}

// A bad flag is reported once, on one line, headed by "dlm: " and the
// command's name once (the flag package printed it too, and members and
// snapshot save skipped the command's name).
func TestBadFlagErrorsOnce(t *testing.T) {
	for _, args := range helpArgs() {
		name := strings.Join(args, " ")
		cmd := exec.Command(dlmBinary, append(append([]string(nil), args...), "--no-such-flag")...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err == nil {
			t.Errorf("dlm %s --no-such-flag succeeded", name)
			continue
		}
		msg := stderr.String()
		want := "dlm: " + name + ": flag provided but not defined: -no-such-flag"
		if name == "members" || name == "snapshot" {
			want = "dlm: " + name + ": usage: dlm " + name
		}
		if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, want) || strings.Count(msg, "dlm:") != 1 || strings.Count(msg, name+":") != 1 {
			t.Errorf("dlm %s --no-such-flag printed\n%s\nwant one line starting %q, with dlm: and %s: once", name, msg, want, name)
		}
	}
	_, _, err := cliRun(t, "", "token", "x")
	if err == nil || !strings.HasPrefix(err.Error(), "token: ") || strings.Count(err.Error(), "token:") != 1 {
		t.Errorf("dlm token x: %v", err)
	}
}

// status, members list and bench answer scripts in JSON with --output json.
func TestOutputJSON(t *testing.T) {
	srv := servertest.Start(t, nil)
	for _, tc := range []struct {
		args []string
		key  string // a key the answer must hold
	}{
		{[]string{"status", "--server", srv.URL, "--output", "json"}, "node"},
		{[]string{"status", "--server", srv.URL, "--json"}, "node"},
		{[]string{"members", "list", "--server", srv.URL, "--output", "json"}, "members"},
		{[]string{"bench", "--server", srv.URL, "--clients", "2", "--duration", "300ms", "--output", "json"}, "cycles_per_second"},
	} {
		out := cliMust(t, "", tc.args...)
		var v map[string]any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("dlm %s printed no JSON object (%v):\n%s", strings.Join(tc.args, " "), err, out)
			continue
		}
		if _, ok := v[tc.key]; !ok {
			t.Errorf("dlm %s: no %q in %s", strings.Join(tc.args, " "), tc.key, out)
		}
	}
	if _, _, err := cliRun(t, "", "status", "--server", srv.URL, "--output", "yaml"); err == nil || !strings.Contains(err.Error(), "text or json") {
		t.Errorf("status --output yaml: %v", err)
	}
}

// The completion script offers every command, and each command's flags as
// its help lists them (a flag added to a command shows up by itself).
func TestCompletionBash(t *testing.T) {
	out := cliMust(t, "", "completion", "bash")
	for _, c := range commands() {
		if !strings.Contains(out, " "+c.name+" ") && !strings.Contains(out, "\""+c.name+" ") {
			t.Errorf("the completion script does not offer %s", c.name)
		}
	}
	for _, want := range []string{
		`"members list") words="--ca --cert --data --grpc --key --output --retry --server --token -v"`,
		`"snapshot verify") words=""`,
		"--election-timeout", "--heartbeat-timeout",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the completion script lacks %s:\n%s", want, out)
		}
	}
	if _, _, err := cliRun(t, "", "completion", "fish"); err == nil {
		t.Error("completion fish succeeded")
	}
}
