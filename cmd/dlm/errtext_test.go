package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestErrLineSaysEachPartOnce(t *testing.T) {
	err := errors.New("append: dlm: service unavailable: OpenSession failed after 9 attempts: dlm: service unavailable: no leader known: an election is under way,\nor the cluster has no majority")
	want := "append: service unavailable: OpenSession failed after 9 attempts: no leader known: an election is under way, or the cluster has no majority"
	if got := errLine(err); got != want {
		t.Errorf("errLine =\n%q, want\n%q", got, want)
	}
}

// With no majority, a client command reports the service's reason ("no
// leader known") in one line, not the last refused connection to a dead
// node, and says "dlm:" once.
func TestNoMajorityErrorNamesTheReason(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.awaitLeader()
	survivor := c.others(leader)[1]
	leader.Kill()
	c.others(leader)[0].Kill()
	pollUntil(t, 30*time.Second, survivor.ID+" knowing no leader", func() (bool, string) {
		st, err := survivor.status()
		if err != nil {
			return false, err.Error()
		}
		return st.GetNode().GetLeaderUrl() == "", "leader " + st.GetNode().GetLeaderUrl()
	})
	// The survivor is listed first, the dead nodes after it: the last
	// attempt is as likely to be a refused connection as an answer.
	servers := survivor.URL()
	for _, n := range c.nodes {
		if n != survivor {
			servers += "," + n.URL()
		}
	}
	cmd := exec.Command(dlmBinary, "append", "--server", servers, "--retry", "3s", "--file", "file_1", "x")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("append succeeded without a majority")
	}
	msg := stderr.String()
	t.Logf("dlm append said: %s", msg)
	if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "dlm: ") || strings.Count(msg, "dlm:") != 1 {
		t.Errorf("want one line with one dlm: head, got:\n%s", msg)
	}
	if !strings.Contains(msg, "no leader known") || strings.Contains(msg, "connection refused") {
		t.Errorf("want the service's reason, not a dial error, got:\n%s", msg)
	}
}
