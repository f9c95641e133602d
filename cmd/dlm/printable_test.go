package main

import (
	"bytes"
	"strings"
	"testing"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// TestStatusEscapesReplicatedText prints a status whose names came from the
// replicated state (an older dlm took any name, and members are added by
// clients): no control character may reach the terminal, and no line can be
// forged.
func TestStatusEscapesReplicatedText(t *testing.T) {
	evil := "x\x1b]0;pwned\a\nholder\tnone (forged)"
	st := &dlmv1.StatusResponse{
		Node:     &dlmv1.NodeStatus{Id: "n1", Role: "leader", LeaderUrl: "http://h\x1b[2J"},
		Members:  []*dlmv1.MemberStatus{{Id: "m\x1b[31m", RaftAddress: "a\rb", Leader: true}},
		Sessions: []*dlmv1.SessionStatus{{ClientId: 1, Name: evil}},
		Lock:     &dlmv1.LockStatus{Holder: 1, Token: 5, Queue: []uint64{1}},
	}
	var out bytes.Buffer
	if err := printStatus(&out, st, nil); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, r := range text {
		if r < 0x20 && r != '\n' || r == 0x7f {
			t.Fatalf("status printed control character %q:\n%s", r, text)
		}
	}
	if strings.Count("\n"+text, "\nholder") != 1 {
		t.Fatalf("a name forged a line:\n%s", text)
	}
	if !strings.Contains(text, `\x1b]0;pwned\a\nholder`) {
		t.Fatalf("the name is not shown escaped:\n%s", text)
	}
	if got := printable("worker 7 – Zoë"); got != "worker 7 – Zoë" {
		t.Fatalf("a printable name was changed to %s", got)
	}
}
