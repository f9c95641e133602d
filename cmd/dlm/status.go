package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// runStatus shows the answering node, the lock holder, the queue and the
// files that hold data, as a table for people or as protojson for scripts.
func runStatus(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("status", "[flags]", "Shows the node, the lock holder, the queue and the files.", stderr)
	cf := addClientFlags(fs)
	consistent := fs.Bool("consistent", false, "ask the leader, after it confirms its leadership (otherwise the first server that answers)")
	output := addOutputFlag(fs)
	asJSON := fs.Bool("json", false, "the same as --output json (the StatusResponse as protojson)")
	lock := fs.String("lock", "", "describe this named lock instead of the default one")
	listSessions := fs.Bool("sessions", false, "list every open session (asking for them page by page); without it, status shows the counts and the first waiters")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("status: unexpected argument %q", fs.Arg(0))
	}
	r, err := cf.reader(stderr)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	st, err := r.StatusPage(ctx, &dlmv1.StatusRequest{Consistent: *consistent, Lock: lockField(*lock)})
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if *listSessions {
		if err := allSessions(ctx, r, st); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	if *asJSON || *output == outputJSON {
		return writeProtoJSON(stdout, st)
	}
	copts, err := cf.interceptors()
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	hc, err := cf.tls.httpClient()
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if err := printStatus(stdout, st, probeMembers(ctx, hc, st, copts)); err != nil {
		return err
	}
	if *listSessions {
		if err := printSessions(stdout, st); err != nil {
			return err
		}
	}
	if servers := client.ParseEndpoints(cf.server); len(servers) > 1 {
		return printNodes(ctx, hc, stdout, servers, copts)
	}
	return nil
}

// printNodes asks every listed server about itself, so an operator sees each
// replica's role, progress and last contact with the leader side by side.
func printNodes(ctx context.Context, hc *http.Client, w io.Writer, servers []string, copts []connect.ClientOption) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSERVER\tID\tROLE\tTERM\tCOMMIT\tAPPLIED\tLAST CONTACT")
	for _, url := range servers {
		c := dlmv1connect.NewLockServiceClient(hc, url, copts...)
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := c.Status(actx, connect.NewRequest(&dlmv1.StatusRequest{}))
		cancel()
		if err != nil {
			fmt.Fprintf(tw, "%s\t-\tunreachable\t\t\t\t%v\n", url, connect.CodeOf(err))
			continue
		}
		n := res.Msg.GetNode()
		contact := "never"
		switch {
		case n.GetRole() == "leader":
			contact = "-"
		case n.GetLastContactMs() >= 0:
			contact = (time.Duration(n.GetLastContactMs()) * time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", url, n.GetId(), roleOf(n), n.GetTerm(), n.GetCommitIndex(), n.GetAppliedIndex(), contact)
	}
	return tw.Flush()
}

// roleOf is a node's role as an operator needs to read it: a node with a
// storage fault serves nothing, whatever its Raft role.
func roleOf(n *dlmv1.NodeStatus) string {
	if n.GetStorageFault() != "" {
		return "storage fault (" + n.GetRole() + ")"
	}
	return n.GetRole()
}

// probeMembers asks every member about itself at its client URL, so that a
// node that does not answer shows as unreachable rather than as a follower
// (the answering node's view of the others says only which one leads).
func probeMembers(ctx context.Context, hc *http.Client, st *dlmv1.StatusResponse, copts []connect.ClientOption) map[string]string {
	roles := make(map[string]string)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, m := range st.GetMembers() {
		if m.GetClientUrl() == "" {
			continue // not known yet: keep the answering node's view
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			role := "unreachable"
			if m.GetId() == st.GetNode().GetId() {
				role = st.GetNode().GetRole()
			} else {
				c := dlmv1connect.NewLockServiceClient(hc, m.GetClientUrl(), copts...)
				actx, cancel := context.WithTimeout(ctx, 2*time.Second)
				res, err := c.Status(actx, connect.NewRequest(&dlmv1.StatusRequest{}))
				cancel()
				if err == nil && res.Msg.GetNode().GetId() == m.GetId() {
					role = roleOf(res.Msg.GetNode())
				}
			}
			mu.Lock()
			roles[m.GetId()] = role
			mu.Unlock()
		}()
	}
	wg.Wait()
	return roles
}

// printStatus writes the human table. roles, when not nil, holds each
// member's role as the member itself says, or "unreachable"
// (probeMembers); otherwise a member is a follower if it is not the leader.
func printStatus(w io.Writer, st *dlmv1.StatusResponse, roles map[string]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	n := st.GetNode()
	fmt.Fprintf(tw, "node\t%s (%s, term %d, commit %d, applied %d)\n",
		printable(n.GetId()), n.GetRole(), n.GetTerm(), n.GetCommitIndex(), n.GetAppliedIndex())
	if free := n.GetFreeBytes(); free > 0 {
		fmt.Fprintf(tw, "disk\t%s free\n", humanBytes(free))
	}
	leader := printable(n.GetLeaderUrl())
	if leader == "" {
		leader = "unknown"
	}
	fmt.Fprintf(tw, "leader\t%s\n", leader)
	if f := n.GetStorageFault(); f != "" {
		fmt.Fprintf(tw, "FAULT\t%s\n", f)
	}
	for _, m := range st.GetMembers() {
		role := "follower"
		if m.GetLeader() {
			role = "leader"
		}
		if r, ok := roles[m.GetId()]; ok {
			role = r
		}
		fmt.Fprintf(tw, "member\t%s %s %s at %s\n", printable(m.GetId()), m.GetSuffrage(), role, printable(m.GetRaftAddress()))
	}

	names := make(map[uint64]string)
	for _, s := range st.GetSessions() {
		names[s.GetClientId()] = s.GetName()
	}
	if h := st.GetLock().GetHolder(); h != 0 && st.GetLock().GetHolderName() != "" {
		names[h] = st.GetLock().GetHolderName()
	}
	for _, h := range st.GetLock().GetHolders() {
		if h.GetName() != "" {
			names[h.GetClientId()] = h.GetName()
		}
	}
	who := func(id uint64) string {
		if name := names[id]; name != "" {
			return fmt.Sprintf("client %d (%s)", id, printable(name))
		}
		return fmt.Sprintf("client %d", id)
	}
	l := st.GetLock()
	if l.GetName() != "" {
		fmt.Fprintf(tw, "lock\t%q\n", printable(l.GetName()))
	}
	if l.GetDelayed() {
		fmt.Fprintf(tw, "delay\tin its lock-delay (%v): a holder's lease ran out\n", time.Duration(l.GetDelayMs())*time.Millisecond)
	}
	if l.GetMode() == dlmv1.LockMode_LOCK_MODE_SHARED {
		for _, h := range holdersOf(l) {
			lease := "unknown on this node"
			if h.GetLeaseLeftMs() > 0 {
				lease = (time.Duration(h.GetLeaseLeftMs()) * time.Millisecond).String()
			}
			fmt.Fprintf(tw, "holder\t%s, shared, token %d, lease left %s\n", who(h.GetClientId()), h.GetToken(), lease)
		}
	} else if l.GetHolder() == 0 {
		fmt.Fprintf(tw, "holder\tnone (last token %d)\n", l.GetLastToken())
	} else {
		lease := "unknown on this node"
		if l.GetLeaseLeftMs() > 0 {
			lease = (time.Duration(l.GetLeaseLeftMs()) * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "holder\t%s, token %d, lease left %s, staged %d appends (%d bytes)\n",
			who(l.GetHolder()), l.GetToken(), lease, l.GetStagedAppends(), l.GetStagedBytes())
	}
	if len(l.GetQueue()) == 0 {
		fmt.Fprintln(tw, "queue\tempty")
	} else {
		waiters := make([]string, len(l.GetQueue()))
		for i, id := range l.GetQueue() {
			waiters[i] = fmt.Sprintf("%d. %s", i+1, who(id))
		}
		if more := int(l.GetQueueLength()) - len(waiters); more > 0 {
			waiters = append(waiters, fmt.Sprintf("… %d more", more))
		}
		fmt.Fprintf(tw, "queue\t%s\n", strings.Join(waiters, ", "))
	}
	fmt.Fprintf(tw, "sessions\t%d open\n", sessionCount(st))
	if n := st.GetLockCount(); n > 0 {
		fmt.Fprintf(tw, "locks\t%d live (dlm locks lists them)\n", n)
	}

	var files []string
	for _, f := range st.GetFiles() {
		if f.GetSize() > 0 {
			files = append(files, fmt.Sprintf("%s %d B", f.GetName(), f.GetSize()))
		}
	}
	if len(files) == 0 {
		fmt.Fprintf(tw, "files\tall %d empty\n", len(st.GetFiles()))
	} else {
		fmt.Fprintf(tw, "files\t%s (others empty)\n", strings.Join(files, ", "))
	}
	return tw.Flush()
}

// sessionCount is the number of open sessions, from a server that counts
// them or, from an older one, the list it gave.
func sessionCount(st *dlmv1.StatusResponse) uint64 {
	return max(st.GetSessionCount(), uint64(len(st.GetSessions())))
}

// allSessions asks for the pages after st's first and appends their sessions
// to st, so that st lists every open session. A session opened or closed
// meanwhile may be missed or listed as gone; none is listed twice.
func allSessions(ctx context.Context, r *client.Reader, st *dlmv1.StatusResponse) error {
	// Bounded: every page moves the token past at least one session id.
	for token := st.GetNextPageToken(); token != ""; {
		p, err := r.StatusPage(ctx, &dlmv1.StatusRequest{PageSize: maxStatusPage, PageToken: token})
		if err != nil {
			return err
		}
		st.Sessions = append(st.Sessions, p.GetSessions()...)
		token = p.GetNextPageToken()
	}
	st.NextPageToken = ""
	return nil
}

// maxStatusPage is the largest page a server gives.
const maxStatusPage = 1000

func printSessions(w io.Writer, st *dlmv1.StatusResponse) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSESSION\tNAME\tLEASE\tLEFT")
	for _, s := range st.GetSessions() {
		left := "-"
		if s.GetLeaseLeftMs() > 0 {
			left = (time.Duration(s.GetLeaseLeftMs()) * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.GetClientId(), printable(s.GetName()),
			time.Duration(s.GetLeaseMs())*time.Millisecond, left)
	}
	return tw.Flush()
}
