package integration_test

import (
	"context"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/server/servertest"
)

// The leader dies inside a critical section whose appends it held in
// memory: the client's next append finds the new leader lacking them
// (SECTION_INCOMPLETE), sends them again, and the section (appends sent
// before and after the failover, and ones buffered with Stage) commits
// exactly once, in order, under the same grant.
func TestLeaderDiesInsideSectionCommitsOnce(t *testing.T) {
	nodes := startCluster(t, 3)
	leader := awaitLeader(t, nodes)
	var eps []string
	for _, n := range nodes {
		eps = append(eps, n.url)
	}
	c := dial(t, eps, client.WithAttemptTimeout(time.Second))
	lk, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, lk, "file_3", "A")
	mustAppend(t, lk, "file_4", "B")
	if err := lk.Stage("file_3", []byte("C")); err != nil {
		t.Fatal(err)
	}
	leader.stop()
	mustAppend(t, lk, "file_3", "D")
	if err := lk.Stage("file_4", []byte("E")); err != nil {
		t.Fatal(err)
	}
	notLost(t, lk)
	if err := lk.Release(t.Context()); err != nil {
		t.Fatalf("release under the new leader: %v", err)
	}
	for file, want := range map[string]string{"file_3": "ACD", "file_4": "BE"} {
		got, err := c.ReadFile(t.Context(), file)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}

}

// Close commits a held section. After a restart the leader cannot vouch
// for it (SECTION_INCOMPLETE): the client releases, re-sending what the
// leader lacks, then closes.
func TestCloseAfterRestartCommitsTheSection(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newPeer(t, srv)
	lk := mustAcquire(t, c)
	mustAppend(t, lk, "file_6", "kept")
	if err := lk.Stage("file_6", []byte("+staged")); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	r := newPeer(t, srv)
	wantFile(t, r, "file_6", "kept+staged")
}
