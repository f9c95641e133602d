package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/server/servertest"
)

func initProc(t *testing.T, c dlmv1connect.LockServiceClient) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.Init(ctx, connect.NewRequest(&dlmv1.InitRequest{Name: "cap"}))
	return err
}

// dlm serve's --max-sessions and --init-rate/--init-burst reach the service.
func TestServeSessionLimits(t *testing.T) {
	t.Run("max-sessions", func(t *testing.T) {
		srv := startServer(t, "127.0.0.1:0", t.TempDir(), "--max-sessions", "3")
		for _, p := range []struct {
			name string
			opts []connect.ClientOption
		}{{"connect", nil}, {"grpc", []connect.ClientOption{connect.WithGRPC()}}} {
			c := dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), srv.URL(), p.opts...)
			if p.name == "connect" {
				for i := range 3 {
					if err := initProc(t, c); err != nil {
						t.Fatalf("open %d of 3: %v", i+1, err)
					}
				}
			}
			err := initProc(t, c)
			if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-sessions") {
				t.Fatalf("%s: a 4th open with --max-sessions 3: %v; want ResourceExhausted naming --max-sessions", p.name, err)
			}
		}
	})
	t.Run("init-rate", func(t *testing.T) {
		srv := startServer(t, "127.0.0.1:0", t.TempDir(), "--init-rate", "0.1", "--init-burst", "2")
		c := dlmv1connect.NewLockServiceClient(servertest.HTTPClient(), srv.URL())
		for i := range 2 {
			if err := initProc(t, c); err != nil {
				t.Fatalf("open %d of the burst of 2: %v", i+1, err)
			}
		}
		err := initProc(t, c)
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "retry in") {
			t.Fatalf("a 3rd open with --init-burst 2: %v; want ResourceExhausted with a retry hint", err)
		}
	})
	t.Run("bad flags", func(t *testing.T) {
		for _, args := range [][]string{{"--max-sessions", "-1"}, {"--init-rate", "-1"}, {"--init-burst", "0"}, {"--init-rate", "NaN"}} {
			_, _, err := cliRun(t, "", append([]string{"serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0"}, args...)...)
			if err == nil {
				t.Errorf("serve %v started", args)
			}
		}
	})
}
