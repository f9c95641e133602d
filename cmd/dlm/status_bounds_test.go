package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
)

// status shows whole counts and the first waiters of a big table, and
// --sessions pages through every session.
func TestStatusManySessions(t *testing.T) {
	const sessions, waiting = 1500, 130
	srv := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	work := make(chan int, sessions)
	for i := range sessions {
		work <- i
	}
	close(work)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				s, err := srv.Node.OpenSession(ctx, time.Minute, fmt.Sprintf("s%04d", i))
				if err == nil && i <= waiting {
					// The first acquire gets the lock, the others queue.
					_, err = srv.Node.Acquire(ctx, node.Caller{ClientID: s.ClientID, Secret: s.Secret, Seq: 1}, false, time.Millisecond)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	out := cliMust(t, "", "status", "--server", srv.URL, "--consistent")
	for _, want := range []string{fmt.Sprintf("sessions  %d open", sessions), fmt.Sprintf("… %d more", waiting-100), "100. client"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "101. client") {
		t.Errorf("status lists more than the first 100 waiters:\n%s", out)
	}

	out = cliMust(t, "", "status", "--server", srv.URL, "--sessions")
	for i := range sessions {
		if n := strings.Count(out, fmt.Sprintf("  s%04d  ", i)); n != 1 {
			t.Fatalf("status --sessions lists session s%04d %d times", i, n)
		}
	}

	out = cliMust(t, "", "status", "--server", srv.URL, "--sessions", "--json")
	var st dlmv1.StatusResponse
	if err := protojson.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --sessions --json is not a StatusResponse: %v", err)
	}
	if len(st.GetSessions()) != sessions || st.GetSessionCount() != sessions || st.GetNextPageToken() != "" {
		t.Fatalf("status --sessions --json: %d sessions listed, count %d, next %q", len(st.GetSessions()), st.GetSessionCount(), st.GetNextPageToken())
	}
}
