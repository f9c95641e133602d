package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Peer is one member of a fixed cluster.
type Peer struct {
	ID       string
	RaftAddr string
}

// ParsePeers reads "id=host:port,id=host:port".
func ParsePeers(s string) ([]Peer, error) {
	var peers []Peer
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, addr, ok := strings.Cut(item, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("node: peer %q is not id=host:port", item)
		}
		peers = append(peers, Peer{ID: id, RaftAddr: addr})
	}
	return peers, nil
}

// resolveID reconciles the configured id with the one stored in the data
// folder, so a node keeps its identity across restarts and a folder is
// never reused under another name by mistake.
func resolveID(dataDir, want string) (string, error) {
	path := filepath.Join(dataDir, "node-id")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		stored := strings.TrimSpace(string(b))
		if want != "" && want != stored {
			return "", fmt.Errorf("node: %s belongs to node %q, not %q", dataDir, stored, want)
		}
		return stored, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("node: %w", err)
	}
	if want == "" {
		want = "node1"
	}
	if err := os.WriteFile(path, []byte(want+"\n"), fileMode); err != nil {
		return "", fmt.Errorf("node: %w", err)
	}
	return want, nil
}
