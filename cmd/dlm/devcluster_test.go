package main

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dev-cluster starts its nodes, answers as a cluster, and on SIGINT (Ctrl-C)
// stops every node and exits.
func TestDevClusterStopsOnInterrupt(t *testing.T) {
	addrs := freeAddrs(t, 1)
	port, err := strconv.Atoi(addrs[0][strings.LastIndex(addrs[0], ":")+1:])
	if err != nil || port+10002 > 65535 {
		t.Fatalf("port %q unusable for a cluster: %v", addrs[0], err)
	}
	cmd := exec.Command(dlmBinary, "dev-cluster", "--nodes", "3", "--data", t.TempDir(), "--port", strconv.Itoa(port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
	})
	out := lines(stdout)
	var urls []string
	deadline := time.After(20 * time.Second)
	for len(urls) < 3 {
		select {
		case line := <-out:
			if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], "http://") {
				urls = append(urls, f[1])
			}
		case <-deadline:
			t.Fatalf("dev-cluster printed %d URLs", len(urls))
		}
	}
	never := make(chan struct{})
	if err := awaitLeaderKnown(urls[0], 20*time.Second, never); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("dev-cluster exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("dev-cluster did not exit after SIGINT")
	}
	for _, u := range urls {
		if err := awaitLeaderKnown(u, 200*time.Millisecond, never); err == nil {
			t.Fatalf("%s still answers after dev-cluster exited", u)
		}
	}
}
