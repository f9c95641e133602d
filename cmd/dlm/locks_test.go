package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/server/servertest"
)

// dlm locks shows every live lock with its holders, modes, tokens and
// queue length; --json the same for scripts; --history the grants.
func TestLocksListsHoldersModesTokensAndQueues(t *testing.T) {
	srv := servertest.Start(t, nil)
	c1 := newTestClient(t, srv.URL, client.WithName("writer"))
	c2 := newTestClient(t, srv.URL, client.WithName("reader-1"))
	c3 := newTestClient(t, srv.URL, client.WithName("reader-2"))
	c4 := newTestClient(t, srv.URL, client.WithName("waiter"))
	alpha, err := c1.Acquire(t.Context(), client.LockName("alpha"))
	if err != nil {
		t.Fatal(err)
	}
	b1, err := c2.Acquire(t.Context(), client.LockName("beta"), client.Shared())
	if err != nil {
		t.Fatal(err)
	}
	b2, err := c3.Acquire(t.Context(), client.LockName("beta"), client.Shared())
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		lk, err := c4.Acquire(t.Context(), client.LockName("alpha"), client.Timeout(time.Minute))
		if err == nil {
			err = lk.Release(t.Context())
		}
		waited <- err
	}()
	var out string
	pollUntil(t, 20*time.Second, "the waiter in dlm locks", func() (bool, string) {
		out = cliMust(t, "", "locks", "--server", srv.URL)
		return regexp.MustCompile(`alpha\s+exclusive\s+client \d+ \(writer\)\s+` + fmt.Sprint(alpha.Token()) + `\s+\S+\s+1\s+held`).MatchString(out), out
	})
	for _, lk := range []*client.Lock{b1, b2} {
		if !regexp.MustCompile(`beta\s+shared\s+client \d+ \(reader-\d\)\s+` + fmt.Sprint(lk.Token())).MatchString(out) {
			t.Errorf("dlm locks does not show reader token %d:\n%s", lk.Token(), out)
		}
	}
	if !strings.Contains(out, "(default)") {
		t.Errorf("dlm locks does not list the default lock:\n%s", out)
	}
	var resp struct {
		Locks []struct {
			Name    string `json:"name"`
			Holders []struct {
				Token string `json:"token"`
			} `json:"holders"`
		} `json:"locks"`
	}
	if err := json.Unmarshal([]byte(cliMust(t, "", "locks", "--server", srv.URL, "--json")), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Locks) != 3 || resp.Locks[2].Name != "beta" || len(resp.Locks[2].Holders) != 2 {
		t.Errorf("dlm locks --json: %+v", resp)
	}
	if err := alpha.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	hist := cliMust(t, "", "locks", "--server", srv.URL, "--history", "--name", "alpha")
	if !regexp.MustCompile(`alpha\s+` + fmt.Sprint(alpha.Token()) + `\s+exclusive\s+client \d+ \(writer\).*released`).MatchString(hist) {
		t.Errorf("dlm locks --history --name alpha:\n%s", hist)
	}
	if _, _, err := cliRun(t, "", "locks", "--server", srv.URL, "--name", "alpha"); err == nil {
		t.Error("--name without --history was accepted")
	}
}

// The shell takes, lists and releases named and shared locks beside the
// default one; status --lock describes one.
func TestShellNamedLocks(t *testing.T) {
	srv := servertest.Start(t, nil)
	out := cliMust(t, "acquire --lock jobs --shared\nacquire\ntry --lock other\nlocks\nstatus --lock jobs\nappend file_1 x\nrelease --lock jobs\nrelease --lock jobs\nrelease\nquit\n",
		"shell", "--server", srv.URL)
	for _, want := range []string{
		`you hold "jobs" (shared), token`,
		"you hold the lock, token",
		`you hold "other" (exclusive), token`,
		`lock      "jobs"`,
		"staged 1 bytes for file_1",
		`released "jobs" token`,
		"released token",
		`releasing "other"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("shell output lacks %q:\n%s", want, out)
		}
	}
	_, errw, _ := cliRun(t, "release --lock nope\nquit\n", "shell", "--server", srv.URL)
	if !strings.Contains(errw, `you do not hold "nope"`) {
		t.Errorf("release of a lock not held: %q", errw)
	}
	st := cliMust(t, "", "status", "--server", srv.URL, "--lock", "jobs")
	if !strings.Contains(st, "holder    none") {
		t.Errorf("status --lock jobs after the release:\n%s", st)
	}
}
