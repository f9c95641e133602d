package main

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/server/servertest"
)

func TestStatusTable(t *testing.T) {
	srv := servertest.Start(t, nil)
	cliMust(t, "", "append", "--server", srv.URL, "--file", "file_42", "0123456789")
	out := cliMust(t, "", "status", "--server", srv.URL, "--consistent")
	for _, want := range []string{
		"node", "leader", "holder    none", "queue     empty", "file_42 10 B (others empty)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusShowsHolderAndQueue(t *testing.T) {
	srv := servertest.Start(t, nil)
	// A shell holds the lock while status looks: run status from inside it.
	out := cliMust(t, "acquire\nappend file_1 abc\nstatus\nquit\n", "shell", "--server", srv.URL, "--name", "alice")
	for _, want := range []string{"(alice), token", "staged 1 appends (3 bytes)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status in the shell lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	srv := servertest.Start(t, nil)
	out := cliMust(t, "", "status", "--server", srv.URL, "--json")
	var st dlmv1.StatusResponse
	if err := protojson.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json is not a StatusResponse: %v\n%s", err, out)
	}
	if st.GetNode().GetRole() != "leader" || len(st.GetFiles()) != 100 {
		t.Errorf("status --json = role %q, %d files", st.GetNode().GetRole(), len(st.GetFiles()))
	}
	if _, _, err := cliRun(t, "", "status", "--server", srv.URL, "extra"); err == nil {
		t.Error("status accepted an argument")
	}
}

func TestStatusListsEveryServer(t *testing.T) {
	srv := servertest.Start(t, nil)
	down := "http://" + freeAddr(t)
	out := cliMust(t, "", "status", "--server", srv.URL+","+down)
	for _, want := range []string{"LAST CONTACT", srv.URL, "node1", "leader", down, "unreachable"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
