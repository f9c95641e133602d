package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// A member that does not answer shows as unreachable, not as a follower.
func TestStatusMarksDeadMemberUnreachable(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.awaitLeader()
	dead, alive := c.others(leader)[0], c.others(leader)[1]
	// A member's client URL is recorded through the leader after it
	// starts; status can ask only members whose URL it knows.
	pollUntil(t, 20*time.Second, "every member's client URL recorded", func() (bool, string) {
		st, err := leader.status()
		if err != nil {
			return false, err.Error()
		}
		for _, m := range st.GetMembers() {
			if m.GetClientUrl() == "" {
				return false, m.GetId() + " has none"
			}
		}
		return true, ""
	})
	dead.Kill()
	member := func(out, id string) string {
		m := regexp.MustCompile(`(?m)^member\s+` + id + ` \S+ (\S+) at`).FindStringSubmatch(out)
		if m == nil {
			return ""
		}
		return m[1]
	}
	// Through the leader, and through a follower.
	for _, via := range []*clusterNode{leader, alive} {
		var out string
		pollUntil(t, 10*time.Second, "status through "+via.ID, func() (bool, string) {
			out = cliMust(t, "", "status", "--server", via.URL(), "--retry", "2s")
			return strings.Contains(out, "member"), out
		})
		for id, want := range map[string]string{leader.ID: "leader", alive.ID: "follower", dead.ID: "unreachable"} {
			if got := member(out, id); got != want {
				t.Errorf("through %s, member %s is %q, want %q:\n%s", via.ID, id, got, want, out)
			}
		}
	}
}
