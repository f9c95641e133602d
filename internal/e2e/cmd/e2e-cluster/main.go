// Command e2e-cluster runs dlm servers as real processes through the e2e
// harness for tests written in other languages (the TypeScript client's
// and the dashboard's): a cluster that grows by joining on ports it
// chooses (e2e.NewCluster), or with --single one server without Raft. It
// starts the nodes, prints one JSON line describing them (and, with --tls,
// the CA and a client certificate) once they agree on a leader, then takes
// one command a line on stdin and answers each with one JSON line:
//
//	kill ID     SIGKILL, wait until gone
//	start ID    start again on the same addresses and data, until it serves
//	pause ID    SIGSTOP
//	resume ID   SIGCONT
//	leader      wait (bounded) until the running nodes agree on a leader
//	replicas    wait (bounded) until every replica has the same state and files
//
// End of stdin, SIGINT or SIGTERM kills every node and removes the data
// unless --data was given.
//
//	e2e-cluster --dlm BIN [--nodes 3 | --single] [--tls [--tls-client-certs]] [--data DIR]
//	            [--arg n1=--cors-origin=URL]… [-- SERVE ARGS…]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dlm/dlm/internal/e2e"
)

type nodeInfo struct {
	ID   string `json:"id"`
	URL  string `json:"url"`
	Raft string `json:"raft"`
	Pid  int    `json:"pid"`
	Data string `json:"data"`
	Log  string `json:"log"`
}

// tlsInfo names the PEM files of the nodes' CA and of a client
// certificate it signed.
type tlsInfo struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

type answer struct {
	Nodes  []nodeInfo `json:"nodes,omitempty"`
	TLS    *tlsInfo   `json:"tls,omitempty"`
	Leader string     `json:"leader,omitempty"`
	Diffs  []string   `json:"diffs,omitempty"`
	Error  string     `json:"error,omitempty"`
}

type nodeArgs map[string][]string

func (a nodeArgs) String() string { return fmt.Sprint(map[string][]string(a)) }

func (a nodeArgs) Set(s string) error {
	id, arg, ok := strings.Cut(s, "=")
	if !ok || id == "" || arg == "" {
		return errors.New("want ID=ARG")
	}
	a[id] = append(a[id], arg)
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "e2e-cluster:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("e2e-cluster", flag.ContinueOnError)
	bin := fs.String("dlm", os.Getenv("DLM_BIN"), "the dlm binary (default $DLM_BIN)")
	size := fs.Int("nodes", 3, "number of nodes")
	single := fs.Bool("single", false, "one server without Raft (n1), instead of a cluster")
	useTLS := fs.Bool("tls", false, "serve the API and Raft over TLS with a throw-away CA")
	clientCerts := fs.Bool("tls-client-certs", false, "with --tls: the nodes require a client certificate (mutual TLS)")
	data := fs.String("data", "", "folder for the nodes' data and logs (default: a temporary one, removed at the end)")
	extra := nodeArgs{}
	fs.Var(extra, "arg", "ID=ARG: one more dlm serve argument for node ID (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bin == "" {
		return errors.New("--dlm (or $DLM_BIN) names no binary")
	}
	if *size < 1 || *size > 9 {
		return errors.New("--nodes must be between 1 and 9")
	}
	dir := *data
	if dir == "" {
		tmp, err := os.MkdirTemp("", "dlm-e2e-cluster-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	if *clientCerts && !*useTLS {
		return errors.New("--tls-client-certs needs --tls")
	}
	var (
		c   *e2e.Cluster
		err error
	)
	if *single {
		c = e2e.NewSingle(*bin, dir, fs.Args()...)
	} else if c, err = e2e.NewCluster(*bin, dir, *size, fs.Args()...); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		n.Args = append(n.Args, extra[n.ID]...)
	}
	var tlsFiles *tlsInfo
	if *useTLS {
		f, err := c.UseTLS(filepath.Join(dir, "tls"), *clientCerts)
		if err != nil {
			return err
		}
		tlsFiles = &tlsInfo{CA: f.CA, Cert: f.Cert, Key: f.Key}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer c.Kill()
	if err := c.Start(ctx); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(answer{Nodes: infos(c.Nodes), TLS: tlsFiles}); err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			if err := enc.Encode(do(ctx, c, strings.Fields(line))); err != nil {
				return err
			}
		}
	}
}

func infos(nodes []*e2e.Node) []nodeInfo {
	var out []nodeInfo
	for _, n := range nodes {
		out = append(out, nodeInfo{ID: n.ID, URL: n.URL(), Raft: n.RaftAddr, Pid: n.Pid(), Data: n.Data, Log: n.LogPath})
	}
	return out
}

func do(ctx context.Context, c *e2e.Cluster, cmd []string) answer {
	if len(cmd) == 0 {
		return answer{Error: "empty command"}
	}
	switch cmd[0] {
	case "leader":
		l, err := c.AwaitLeader(ctx, 30*time.Second)
		if err != nil {
			return answer{Error: err.Error()}
		}
		return answer{Leader: l.ID, Nodes: infos(c.Nodes)}
	case "replicas":
		diffs, err := c.AwaitReplicas(ctx, 30*time.Second, nil)
		if err != nil {
			return answer{Error: err.Error()}
		}
		return answer{Diffs: diffs}
	}
	if len(cmd) != 2 {
		return answer{Error: fmt.Sprintf("%s: want one node id", cmd[0])}
	}
	n := c.Node(cmd[1])
	if n == nil {
		return answer{Error: "no node " + cmd[1]}
	}
	var err error
	switch cmd[0] {
	case "kill":
		n.Kill()
	case "start":
		err = n.Start()
	case "pause":
		err = n.Pause()
	case "resume":
		err = n.Resume()
	default:
		return answer{Error: "unknown command " + cmd[0]}
	}
	if err != nil {
		return answer{Error: err.Error()}
	}
	return answer{Nodes: infos([]*e2e.Node{n})}
}
