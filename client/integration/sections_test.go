package integration_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/faultinject"
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

// Close of a session whose Lock has appends buffered with Stage, with no
// leader change: the close commits them with the rest of the section.
func TestCloseCommitsStagedAppends(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newPeer(t, srv)
	lk := mustAcquire(t, c)
	mustAppend(t, lk, "file_7", "sent")
	if err := lk.Stage("file_7", []byte("+staged")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	wantFile(t, newPeer(t, srv), "file_7", "sent+staged")
}

// A Close whose release cannot get through does not close either: a close
// would commit the section without what Stage buffered.
func TestCloseWithoutReleaseCommitsNothing(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newPeer(t, srv, client.WithLease(time.Second), client.WithRetryBudget(time.Second),
		client.WithAttemptTimeout(200*time.Millisecond))
	lk := mustAcquire(t, c)
	mustAppend(t, lk, "file_8", "sent")
	if err := lk.Stage("file_8", []byte("+staged")); err != nil {
		t.Fatal(err)
	}
	c.net.Inject("LockRelease", 0, faultinject.DropRequest)
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	if err := c.Close(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("close with every release dropped = %v, want ErrUnavailable", err)
	}
	// The lease ends the grant, with nothing committed.
	r := newPeer(t, srv)
	lk2 := mustAcquire(t, r)
	mustRelease(t, lk2)
	if got, err := r.ReadFile(t.Context(), "file_8"); err == nil && len(got) > 0 {
		t.Errorf("file_8 = %q after a close that failed, want nothing", got)
	}
}

// An append buffered with Stage whose outcome stays unknown when the next
// Append sends it is carried by the release once, not twice.
func TestStagedAppendInDoubtCommitsOnce(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newPeer(t, srv, client.WithRetryBudget(time.Second), client.WithAttemptTimeout(200*time.Millisecond))
	lk := mustAcquire(t, c)
	if err := lk.Stage("file_9", []byte("S")); err != nil {
		t.Fatal(err)
	}
	c.net.Inject("AppendFile", 0, faultinject.DropResponse)
	if err := lk.Append(t.Context(), "file_9", []byte("Y")); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("append with every answer dropped = %v, want ErrUnavailable", err)
	}
	c.net.Clear()
	mustRelease(t, lk)
	wantFile(t, c, "file_9", "S")
}

// After a Release whose outcome is unknown (it committed; the answer was
// lost), Stage and Append are refused: the repeat is answered from the
// first release, and would lose them without a word.
func TestStageAfterReleaseInDoubtIsRefused(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newPeer(t, srv, client.WithRetryBudget(time.Second), client.WithAttemptTimeout(200*time.Millisecond))
	lk := mustAcquire(t, c)
	mustAppend(t, lk, "file_12", "A")
	c.net.Inject("LockRelease", 0, faultinject.DropResponse)
	if err := lk.Release(t.Context()); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("release with every answer dropped = %v, want ErrUnavailable", err)
	}
	c.net.Clear()
	if err := lk.Stage("file_12", []byte("B")); !errors.Is(err, client.ErrReleaseInDoubt) {
		t.Errorf("stage after a release in doubt = %v, want ErrReleaseInDoubt", err)
	}
	if err := lk.Append(t.Context(), "file_12", []byte("C")); !errors.Is(err, client.ErrReleaseInDoubt) {
		t.Errorf("append after a release in doubt = %v, want ErrReleaseInDoubt", err)
	}
	mustRelease(t, lk)
	wantFile(t, c, "file_12", "A")
}

// After a restart the leader lacks the section: the next append is refused
// (SECTION_INCOMPLETE) and the re-send of what it lacks fails in doubt. The
// repeat of the caller's append goes to its place, not to a new one.
func TestRepeatAfterResendInDoubtKeepsItsPlace(t *testing.T) {
	srv := servertest.Start(t, nil)
	c := newPeer(t, srv, client.WithRetryBudget(time.Second), client.WithAttemptTimeout(200*time.Millisecond))
	lk := mustAcquire(t, c)
	mustAppend(t, lk, "file_13", "A")
	srv.Restart()
	// AppendFile call 2 is B's (refused: the leader has no place 1), call 3
	// and on re-send A: every one of them is lost.
	for n := 3; n < 200; n++ {
		c.net.Inject("AppendFile", n, faultinject.DropRequest)
	}
	if err := lk.Append(t.Context(), "file_13", []byte("B")); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("append whose re-send is lost = %v, want ErrUnavailable", err)
	}
	c.net.Clear()
	mustAppend(t, lk, "file_13", "B")
	mustRelease(t, lk)
	wantFile(t, c, "file_13", "AB")
}
