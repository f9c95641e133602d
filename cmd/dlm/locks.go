package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
)

// runLocks lists the live locks, or with --history the last grants the
// service remembers.
func runLocks(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("locks", "[flags]", "Lists the live locks (held, waited for, or in their lock-delay) with holders, modes, tokens and\nqueue lengths; with --history, the last grants the service remembers and how each ended.", stderr)
	cf := addClientFlags(fs)
	consistent := fs.Bool("consistent", false, "ask the leader, after it confirms its leadership (otherwise the first server that answers)")
	history := fs.Bool("history", false, "list the remembered grants (oldest first) instead of the live locks")
	name := fs.String("name", "", "with --history: only this lock's grants")
	limit := fs.Uint("limit", 0, "with --history: only the newest this many grants (0: all)")
	output := addOutputFlag(fs)
	asJSON := fs.Bool("json", false, "the same as --output json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("locks: unexpected argument %q", fs.Arg(0))
	}
	if flagSet(fs, "name") && !*history || flagSet(fs, "limit") && !*history {
		return fmt.Errorf("locks: --name and --limit go with --history")
	}
	r, err := cf.reader(stderr)
	if err != nil {
		return fmt.Errorf("locks: %w", err)
	}
	jsonOut := *asJSON || *output == outputJSON
	if *history {
		req := &dlmv1.LockHistoryRequest{Limit: uint32(min(*limit, 1<<31))}
		if flagSet(fs, "name") {
			req.Lock = name
		}
		resp, err := r.LockHistory(ctx, req)
		if err != nil {
			return fmt.Errorf("locks: %w", err)
		}
		if jsonOut {
			return writeProtoJSON(stdout, resp)
		}
		return printHistory(stdout, resp.GetEvents())
	}
	locks, err := r.ListLocks(ctx, *consistent)
	if err != nil {
		return fmt.Errorf("locks: %w", err)
	}
	if jsonOut {
		return writeProtoJSON(stdout, &dlmv1.ListLocksResponse{Locks: locks, LockCount: uint64(len(locks))})
	}
	return printLocks(stdout, locks)
}

// printLocks prints one line per holder (a free lock, one line), so a
// shared lock's readers each show their token.
func printLocks(w io.Writer, locks []*dlmv1.LockStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCK\tMODE\tHOLDER\tTOKEN\tLEASE LEFT\tQUEUE\tSTATE")
	for _, l := range locks {
		name := printable(l.GetName())
		if name == "" {
			name = "(default)"
		}
		state := ""
		if l.GetDelayed() {
			state = fmt.Sprintf("lock-delay %v", time.Duration(l.GetDelayMs())*time.Millisecond)
		}
		queue := fmt.Sprintf("%d", l.GetQueueLength())
		if n := sharedWaiters(l); n > 0 {
			queue += fmt.Sprintf(" (%d shared)", n)
		}
		hs := holdersOf(l)
		if len(hs) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t%s\t%s\n", name, queue, or(state, "free"))
			continue
		}
		for i, h := range hs {
			left := "-"
			if h.GetLeaseLeftMs() > 0 {
				left = (time.Duration(h.GetLeaseLeftMs()) * time.Millisecond).String()
			}
			q, st := queue, or(state, "held")
			if i > 0 {
				q, st = "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", name, modeWord(h.GetMode()), holderWord(h), h.GetToken(), left, q, st)
		}
	}
	return tw.Flush()
}

func sharedWaiters(l *dlmv1.LockStatus) int {
	n := 0
	for _, m := range l.GetQueueModes() {
		if m == dlmv1.LockMode_LOCK_MODE_SHARED {
			n++
		}
	}
	return n
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func printHistory(w io.Writer, events []*dlmv1.LockEvent) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCK\tTOKEN\tMODE\tHOLDER\tGRANTED\tHELD FOR\tEND")
	for _, e := range events {
		name := printable(e.GetLock())
		if name == "" {
			name = "(default)"
		}
		holder := fmt.Sprintf("client %d", e.GetClientId())
		if e.GetHolderName() != "" {
			holder += " (" + printable(e.GetHolderName()) + ")"
		}
		granted := time.UnixMilli(e.GetGrantedUnixMs())
		held, end := "-", "held"
		if e.GetEndedUnixMs() != 0 {
			held = time.UnixMilli(e.GetEndedUnixMs()).Sub(granted).String()
			end = strings.ToLower(strings.TrimPrefix(e.GetEnd().String(), "LOCK_END_"))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", name, e.GetToken(), modeWord(e.GetMode()), holder,
			granted.Format("15:04:05.000"), held, end)
	}
	return tw.Flush()
}
