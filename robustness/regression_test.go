package robustness

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/client/faultinject"
)

// A release whose first answer was lost, retried only after the session's
// lease ran out, must still report the commit it made: the outcome table
// outlives the session. (Found by this suite as an undecided release that
// committed although the client was told LOCK_EXPIRED.)
func TestReleaseRetriedAfterExpiryReportsTheCommit(t *testing.T) {
	bin := binary(t, false)
	dir := t.TempDir()
	ctx := context.Background()
	c, err := startCluster(ctx, bin, dir, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	st := newStack(c.hostMap())
	gate := make(chan struct{})
	var cl *client.Client
	defer func() {
		close(gate)
		// The session has expired by now; Close still stops its keepalive
		// goroutine, which leakcheck would otherwise find running.
		if cl != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			cl.Close(ctx)
			cancel()
		}
	}()
	cl, err = client.New(ctx, c.urls(), client.WithHTTPClient(st.hc), client.WithLease(time.Second),
		client.WithRetryBudget(10*time.Second), client.WithAttemptTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	lk, err := cl.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Append(ctx, "file_3", []byte("committed?\n")); err != nil {
		t.Fatal(err)
	}
	// The client cannot renew its lease (its keepalives are held), the
	// first release's answer is lost, and its retries arrive after the
	// lease has run out.
	st.faults.Inject("KeepAlive", 0, faultinject.Hold(gate))
	n := st.faults.Calls("LockRelease")
	st.faults.Inject("LockRelease", n+1, faultinject.DropResponse)
	for k := 2; k <= 4; k++ {
		st.faults.Inject("LockRelease", n+k, faultinject.Delay(3*time.Second))
	}
	err = lk.Release(ctx)
	data, rerr := cl.ReadFile(ctx, "file_3")
	if rerr != nil {
		t.Fatal(rerr)
	}
	if string(data) != "committed?\n" {
		t.Fatalf("file_3 = %q: the first release attempt did not commit, so this run tests nothing", data)
	}
	if err != nil {
		t.Fatalf("Release = %v (ErrLockExpired: %v), yet its section is in the file", err, errors.Is(err, client.ErrLockExpired))
	}
}
