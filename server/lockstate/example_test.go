package lockstate_test

import (
	"fmt"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
	"github.com/dlm/dlm/server/lockstate"
)

// A critical section: the lock is granted with the index of the granting
// entry as its fencing token, the append is only staged, and the release
// commits it as a write for the caller to put in the file.
func Example() {
	m := lockstate.New(lockstate.DefaultLimits())

	// The leader stamps the time into every command; Raft numbers them.
	opened := m.Apply(1, &raftlogv1.Command{NowUnixMs: 1_700_000_000_000, Op: &raftlogv1.Command_OpenSession{
		OpenSession: &raftlogv1.OpenSession{Secret: "s3cret", LeaseMs: 10_000, Name: "example"},
	}})
	me := func(seq uint64) *raftlogv1.Caller {
		return &raftlogv1.Caller{ClientId: opened.ClientID, Secret: "s3cret", Seq: seq}
	}

	acq := m.Apply(2, &raftlogv1.Command{NowUnixMs: 1_700_000_000_010, Op: &raftlogv1.Command_Acquire{
		Acquire: &raftlogv1.Acquire{Caller: me(1)},
	}})
	token := acq.Outcome.GetToken()
	fmt.Printf("session %d granted=%t token=%d\n", opened.ClientID, acq.Outcome.GetGranted(), token)

	app := m.Apply(3, &raftlogv1.Command{NowUnixMs: 1_700_000_000_020, Op: &raftlogv1.Command_Append{
		Append: &raftlogv1.Append{Caller: me(2), Token: token, File: "file_7", Data: []byte("hello\n"), MaxSectionBytes: 1 << 20},
	}})
	fmt.Printf("staged %d append(s), %d bytes; writes now: %d; file_7 has %d bytes\n",
		app.Outcome.GetAppends(), app.Outcome.GetBytes(), len(app.Writes), m.FileSize("file_7"))

	rel := m.Apply(4, &raftlogv1.Command{NowUnixMs: 1_700_000_000_030, Op: &raftlogv1.Command_Release{
		Release: &raftlogv1.Release{Caller: me(3), Token: token},
	}})
	for _, w := range rel.Writes {
		fmt.Printf("write %s %q\n", w.File, w.Data)
	}
	fmt.Printf("file_7 has %d bytes; lock holder %d\n", m.FileSize("file_7"), m.Lock().Holder)

	// Output:
	// session 1 granted=true token=2
	// staged 1 append(s), 6 bytes; writes now: 0; file_7 has 0 bytes
	// write file_7 "hello\n"
	// file_7 has 6 bytes; lock holder 0
}
