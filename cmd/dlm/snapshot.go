package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/node"
)

// runSnapshot saves a snapshot from a running cluster, checks a saved one,
// or restores one into a new data folder.
func runSnapshot(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	const verbs = "usage: dlm snapshot save FILE [--server URL,…] | verify FILE | restore FILE --data DIR [--id ID] [--raft ADDR] [--peers id=addr,…]"
	usage := errors.New(verbs + " (dlm help snapshot save|verify|restore lists the flags)")
	if len(args) == 0 {
		return usage
	}
	switch args[0] {
	case "-h", "--help":
		fmt.Fprintln(stderr, verbs)
		return flag.ErrHelp
	case "save":
		return runSnapshotSave(ctx, args[1:], stdout, stderr)
	case "verify":
		return runSnapshotVerify(args[1:], stdout, stderr)
	case "restore":
		return runSnapshotRestore(args[1:], stdout, stderr)
	default:
		return usage
	}
}

// parseWithFile parses flags that may come before or after the one FILE
// argument.
func parseWithFile(fs *flag.FlagSet, args []string) (string, error) {
	if err := parseFlags(fs, args); err != nil {
		return "", err
	}
	var files []string
	for fs.NArg() > 0 {
		files = append(files, fs.Arg(0))
		if err := parseFlags(fs, fs.Args()[1:]); err != nil {
			return "", err
		}
	}
	if len(files) != 1 {
		return "", fmt.Errorf("%s: give exactly one FILE (got %d)", fs.Name(), len(files))
	}
	return files[0], nil
}

func runSnapshotSave(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("snapshot save", "FILE [flags]", "Saves a snapshot of the cluster, taken by the leader, to FILE.", stderr)
	cf := addClientFlags(fs)
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	path, err := parseWithFile(fs, args)
	if err != nil {
		return err
	}
	servers, hc, copts, err := cf.connect()
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	w, err := createSnapshotFile(path)
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	defer w.abort()
	h, err := receiveSnapshot(ctx, hc, servers, copts, w)
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	if h, err = w.finish(h.Index, h.Term); err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	fmt.Fprintf(stdout, "saved %s: index %d, term %d, %d bytes, sha256 %x\n", path, h.Index, h.Term, h.Size, h.SHA256)
	return nil
}

// receiveSnapshot streams a snapshot from the leader into w and checks it
// against the stream's trailer. It returns the trailer's index and term.
func receiveSnapshot(ctx context.Context, hc connect.HTTPClient, servers []string, copts []connect.ClientOption, w io.Writer) (snapshotHeader, error) {
	var h snapshotHeader
	type opened struct {
		stream *connect.ServerStreamForClient[dlmv1.SaveSnapshotResponse]
	}
	// The first message tells whether this server leads (a follower answers
	// NOT_LEADER and its leader), so atLeader can follow the hint.
	o, err := atLeader(ctx, hc, servers, copts, func(c dlmv1connect.ClusterServiceClient) (opened, error) {
		s, err := c.SaveSnapshot(ctx, connect.NewRequest(&dlmv1.SaveSnapshotRequest{}))
		if err != nil {
			return opened{}, err
		}
		if !s.Receive() {
			err := s.Err()
			s.Close()
			if err == nil {
				err = errors.New("the server closed the stream at once")
			}
			return opened{}, err
		}
		return opened{s}, nil
	})
	if err != nil {
		return h, err
	}
	s := o.stream
	defer s.Close()
	sum := sha256.New()
	var size uint64
	for {
		msg := s.Msg()
		if t := msg.GetTrailer(); t != nil {
			if s.Receive() {
				return h, errors.New("the server sent data after the trailer")
			}
			if err := s.Err(); err != nil {
				return h, err
			}
			switch {
			case t.GetSize() != size:
				return h, fmt.Errorf("received %d bytes, the server sent %d", size, t.GetSize())
			case !bytes.Equal(t.GetSha256(), sum.Sum(nil)):
				return h, errors.New("the bytes received do not match the server's SHA-256: damaged in transit")
			}
			h.Index, h.Term, h.Size = t.GetIndex(), t.GetTerm(), int64(size)
			return h, nil
		}
		chunk := msg.GetChunk()
		sum.Write(chunk)
		if _, err := w.Write(chunk); err != nil {
			return h, err
		}
		size += uint64(len(chunk))
		if !s.Receive() {
			if err := s.Err(); err != nil {
				return h, err
			}
			return h, errors.New("the stream ended without its trailer: the snapshot is incomplete")
		}
	}
}

func runSnapshotVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("snapshot verify", "FILE", "Checks that a snapshot file is intact.", stderr)
	path, err := parseWithFile(fs, args)
	if err != nil {
		return err
	}
	h, err := verifySnapshotFile(path)
	if err != nil {
		return fmt.Errorf("snapshot verify: %s: %w", path, err)
	}
	fmt.Fprintf(stdout, "%s: intact: index %d, term %d, %d bytes, sha256 %x\n", path, h.Index, h.Term, h.Size, h.SHA256)
	return nil
}

func runSnapshotRestore(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("snapshot restore", "FILE --data DIR [flags]", "Makes a new data folder from a snapshot file.", stderr)
	var cfg node.RestoreConfig
	fs.StringVar(&cfg.DataDir, "data", "", "the new node's data folder (absent or empty)")
	fs.StringVar(&cfg.ID, "id", "", "the new node's id (default: node1, or required with --peers)")
	fs.StringVar(&cfg.RaftAddr, "raft", "", "the new node's Raft address (for a node others will join)")
	peers := fs.String("peers", "", "a fixed cluster to boot: id=raftaddr,… (restore each member from the same file)")
	bump := fs.Uint64("bump-index", 0, "start the new log this many entries past the saved index, so that fencing tokens the old cluster issued after the save are never issued again (give every member the same value)")
	path, err := parseWithFile(fs, args)
	if err != nil {
		return err
	}
	if cfg.DataDir == "" {
		return errors.New("snapshot restore: --data DIR is required")
	}
	if cfg.Peers, err = node.ParsePeers(*peers); err != nil {
		return err
	}
	if len(cfg.Peers) > 0 && cfg.ID == "" {
		return errors.New("snapshot restore: with --peers, --id names the member this folder is for")
	}
	h, err := verifySnapshotFile(path)
	if err != nil {
		return fmt.Errorf("snapshot restore: %s: %w; nothing was restored", path, err)
	}
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	if _, err := fh.Seek(int64(headerLen), io.SeekStart); err != nil {
		return err
	}
	if h.Index+*bump < h.Index {
		return errors.New("snapshot restore: --bump-index is too large")
	}
	cfg.Index, cfg.RaftLog = h.Index+*bump, stderr
	res, err := node.Restore(cfg, io.LimitReader(fh, h.Size))
	if err != nil {
		return fmt.Errorf("snapshot restore: %w", err)
	}
	fmt.Fprintf(stdout, "restored %s (saved at index %d) into %s: the new log starts after index %d; %d saved sessions ended\n", path, h.Index, cfg.DataDir, res.Index, res.EndedSessions)
	var members []string
	for _, m := range res.Members {
		members = append(members, m.ID+"="+m.RaftAddr)
	}
	fmt.Fprintf(stdout, "members: %s\n", strings.Join(members, ","))
	fmt.Fprintf(stdout, "start it with: dlm serve --data %s", cfg.DataDir)
	if cfg.RaftAddr != "" {
		fmt.Fprintf(stdout, " --raft %s", cfg.RaftAddr)
	} else if len(cfg.Peers) > 0 {
		for _, m := range res.Members {
			if m.ID == cfg.ID {
				fmt.Fprintf(stdout, " --raft %s", m.RaftAddr)
			}
		}
	}
	fmt.Fprintln(stdout, " --listen HOST:PORT")
	return nil
}

// runRecover makes a stopped node the only member of its cluster, for when
// the cluster lost its majority for good.
func runRecover(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("recover", "--data DIR [flags]", "Makes a stopped node the only member of its cluster (majority lost for good).", stderr)
	var cfg node.RecoverConfig
	fs.StringVar(&cfg.DataDir, "data", "", "the surviving node's data folder (the node must be stopped)")
	fs.StringVar(&cfg.ID, "id", "", "the node's id, checked against the folder's")
	fs.StringVar(&cfg.RaftAddr, "raft", "", "the node's Raft address from now on (default: the one it had)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("recover: unexpected arguments %q", fs.Args())
	}
	if cfg.DataDir == "" {
		return errors.New("recover: --data DIR is required")
	}
	cfg.RaftLog = stderr
	res, err := node.Recover(cfg)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	fmt.Fprintf(stdout, "recovered %s: node %s is now the only member (raft %s), state up to index %d (term %d)\n", cfg.DataDir, res.ID, res.RaftAddr, res.Index, res.Term)
	if len(res.Dropped) > 0 {
		fmt.Fprintf(stdout, "dropped from the configuration: %s (never start them with their old data: wipe them and --join)\n", strings.Join(res.Dropped, ", "))
	}
	if res.RaftAddr == res.ID {
		// A node without a Raft port is known by its id.
		fmt.Fprintf(stdout, "start it with: dlm serve --data %s --listen HOST:PORT\n", cfg.DataDir)
	} else {
		fmt.Fprintf(stdout, "start it with: dlm serve --data %s --raft %s --listen HOST:PORT\n", cfg.DataDir, res.RaftAddr)
	}
	return nil
}
