package membership_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/dlm/dlm/server/auth"
	"github.com/dlm/dlm/server/membership"
	"github.com/dlm/dlm/server/node"
	"github.com/dlm/dlm/server/servertest"
	"github.com/dlm/dlm/server/service"
)

// A new node joins through a list whose first URL is dead: it ends a
// voter, with its client URL recorded, and Join returns.
func TestJoinAddsAVoter(t *testing.T) {
	leader := servertest.Start(t, &node.Config{ID: "n1", RaftAddr: freeLoopback(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	n, err := node.Open(servertest.Config(node.Config{
		ID: "n2", RaftAddr: freeLoopback(t), Join: true, DataDir: t.TempDir(), ClientURL: url,
		Logger: slog.New(slog.DiscardHandler), RaftLog: io.Discard,
	}))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	srv := &http.Server{Handler: service.Handler(service.New(n), service.NewCluster(n), nil, service.HandlerConfig{Guard: auth.NewGuard(servertest.AdminToken, nil, false)}), Protocols: service.Protocols()}
	go srv.Serve(ln)
	t.Cleanup(func() {
		n.Shutdown()
		srv.Close()
	})
	if self := n.Self(); self.Member {
		t.Fatalf("a node told to join is a member before joining: %+v", self)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dead := "http://" + freeLoopback(t)
	if err := membership.Join(ctx, membership.Config{AdminToken: servertest.AdminToken, Logger: slog.New(slog.DiscardHandler)}, n, []string{dead, leader.URL}); err != nil {
		t.Fatalf("join: %v", err)
	}
	ms, err := leader.Node.Members()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[1].ID != "n2" || !ms[1].Voter || ms[1].ClientURL != url {
		t.Fatalf("members after the join: %+v; want n2 a voter at %s", ms, url)
	}
}
