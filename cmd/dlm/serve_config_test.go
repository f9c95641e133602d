package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dlm serve refuses Raft timings and limits that node.Config.Validate
// refuses, naming the flags (not the Config fields) before it writes
// anything to the data folder.
func TestServeRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--heartbeat-timeout", "1ms"}, "--heartbeat-timeout is 1ms: it must be at least 5ms"},
		{[]string{"--heartbeat-timeout", "1s", "--election-timeout", "500ms"}, "--election-timeout is 500ms: it must be at least --heartbeat-timeout (1s)"},
		{[]string{"--leader-lease-timeout", "2s"}, "--leader-lease-timeout is 2s: it must be at most --heartbeat-timeout"},
		{[]string{"--commit-timeout", "0s"}, "--commit-timeout is 0s"},
		{[]string{"--snapshot-interval", "0s"}, "--snapshot-interval is 0s"},
		{[]string{"--snapshot-retain", "0"}, "--snapshot-retain is 0"},
		{[]string{"--lease", "1s", "--max-lease", "500ms"}, "--max-lease is 500ms: it must be at least --lease (1s)"},
		{[]string{"--log-segment-size", "1000"}, "--log-segment-size is 1000"},
		{[]string{"--max-append", "0"}, "--max-append is 0"},
		{[]string{"--lock-delay", "61s"}, "--lock-delay is 1m1s: it must be from 0 to 1m0s"},
		{[]string{"--lock-delay", "-1s"}, "--lock-delay is -1s"},
		{[]string{"--lock-delay", "1500us"}, "--lock-delay is 1.5ms: it must be a whole number of milliseconds"},
		{[]string{"--max-locks", "-1"}, "--max-locks must not be negative"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		_, _, err := cliRun(t, "", append([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %v: %v; want an error saying %q", tc.args, err, tc.want)
		}
		if _, serr := os.Stat(dir); serr == nil {
			t.Errorf("serve %v refused its flags but created %s", tc.args, dir)
		}
	}
}

// The Raft timing flags reach Raft: a node with short timings serves.
func TestServeRaftTimings(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", t.TempDir(), "--heartbeat-timeout", "200ms", "--election-timeout", "300ms", "--leader-lease-timeout", "100ms", "--commit-timeout", "2ms", "--snapshot-retain", "1")
	if got := readFile(t, srv.URL(), "file_0"); got != "" {
		t.Fatalf("a new node's file_0 = %q", got)
	}
}
