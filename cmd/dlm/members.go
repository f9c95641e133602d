package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/membership"
)

// runMembers shows and changes the cluster's membership.
func runMembers(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	const verbs = "usage: dlm members list|add|remove [--server URL[,URL…]] [--id ID] [--raft ADDR] [--url URL] [--voter=false] [--output json]"
	usage := errors.New(verbs + " (dlm help members list|add|remove lists the flags)")
	if len(args) == 0 {
		return usage
	}
	verb := args[0]
	about := map[string]string{
		"list":   "Lists the cluster's members, asking the leader.",
		"add":    "Adds a member (a node started with --raft), as a voter unless --voter=false.",
		"remove": "Removes a member.",
	}[verb]
	switch {
	case verb == "-h" || verb == "--help":
		fmt.Fprintln(stderr, verbs)
		return flag.ErrHelp
	case about == "":
		return usage
	}
	fs := newFlags("members "+verb, "[flags]", about, stderr)
	cf := addClientFlags(fs)
	var id, raftAddr, url *string
	voter := new(bool)
	output := new(outputFormat)
	switch verb {
	case "list":
		output = addOutputFlag(fs)
	case "add":
		id = fs.String("id", "", "the member's id")
		raftAddr = fs.String("raft", "", "the member's Raft address")
		url = fs.String("url", "", "the member's client URL")
		voter = fs.Bool("voter", true, "add as a voter")
	case "remove":
		id = fs.String("id", "", "the member's id")
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("members %s: unexpected arguments %q", verb, fs.Args())
	}
	servers, hc, copts, err := cf.connect()
	if err != nil {
		return fmt.Errorf("members %s: %w", verb, err)
	}
	ctx, cancel := context.WithTimeout(ctx, max(cf.budget, time.Second))
	defer cancel()
	switch verb {
	case "list":
		res, err := atLeader(ctx, hc, servers, copts, func(c dlmv1connect.ClusterServiceClient) (*dlmv1.ListMembersResponse, error) {
			r, err := c.ListMembers(ctx, connect.NewRequest(&dlmv1.ListMembersRequest{}))
			if err != nil {
				return nil, err
			}
			return r.Msg, nil
		})
		if err != nil {
			return fmt.Errorf("members list: %w", err)
		}
		if *output == outputJSON {
			return writeProtoJSON(stdout, res)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRAFT\tCLIENT URL\tSUFFRAGE\tLEADER")
		for _, m := range res.GetMembers() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", printable(m.GetId()), printable(m.GetRaftAddress()), printable(m.GetClientUrl()), m.GetSuffrage(), m.GetLeader())
		}
		return tw.Flush()
	case "add":
		_, err := atLeader(ctx, hc, servers, copts, func(c dlmv1connect.ClusterServiceClient) (*dlmv1.AddMemberResponse, error) {
			r, err := c.AddMember(ctx, connect.NewRequest(&dlmv1.AddMemberRequest{Id: *id, RaftAddress: *raftAddr, ClientUrl: *url, Voter: *voter}))
			if err != nil {
				return nil, err
			}
			return r.Msg, nil
		})
		if err != nil {
			return fmt.Errorf("members add: %w", err)
		}
		fmt.Fprintf(stdout, "added %s (%s)\n", *id, *raftAddr)
		return nil
	case "remove":
		_, err := atLeader(ctx, hc, servers, copts, func(c dlmv1connect.ClusterServiceClient) (*dlmv1.RemoveMemberResponse, error) {
			r, err := c.RemoveMember(ctx, connect.NewRequest(&dlmv1.RemoveMemberRequest{Id: *id}))
			if err != nil {
				return nil, err
			}
			return r.Msg, nil
		})
		if err != nil {
			return fmt.Errorf("members remove: %w", err)
		}
		fmt.Fprintf(stdout, "removed %s\n", *id)
		return nil
	default:
		return usage
	}
}

// atLeader runs call at the cluster's leader, reached from servers by
// membership.AtLeader (the one leader-following helper, shared with the
// server's joining and announcing).
func atLeader[T any](ctx context.Context, hc connect.HTTPClient, servers []string, copts []connect.ClientOption, call func(dlmv1connect.ClusterServiceClient) (T, error)) (T, error) {
	return membership.AtLeader(ctx, servers, func(_ context.Context, url string) (T, error) {
		return call(dlmv1connect.NewClusterServiceClient(hc, strings.TrimSpace(url), copts...))
	})
}
