package faultinject_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client/faultinject"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
)

// h2cServer starts a loopback server that speaks HTTP/2 without TLS, like
// dlm does.
func h2cServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func h2cTransport(t *testing.T) *http.Transport {
	t.Helper()
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// counter is an HTTP handler that counts and echoes what it receives.
type counter struct{ n atomic.Int64 }

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		http.Error(w, "want HTTP/2", http.StatusHTTPVersionNotSupported)
		return
	}
	b, _ := io.ReadAll(r.Body)
	c.n.Add(1)
	_, _ = w.Write(b)
}

func post(ctx context.Context, t *testing.T, hc *http.Client, url, body string) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func setup(t *testing.T) (*counter, *faultinject.Transport, *http.Client, string) {
	t.Helper()
	c := new(counter)
	srv := h2cServer(t, c)
	ft := &faultinject.Transport{Base: h2cTransport(t)}
	return c, ft, &http.Client{Transport: ft}, srv.URL + "/dlm.v1.LockService/AppendFile"
}

func TestPassThrough(t *testing.T) {
	c, ft, hc, url := setup(t)
	got, err := post(t.Context(), t, hc, url, "hello")
	if err != nil || got != "hello" {
		t.Fatalf("post = %q, %v; want hello", got, err)
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
	if n := ft.Calls("AppendFile"); n != 1 {
		t.Errorf("Calls = %d, want 1", n)
	}
	for name, ch := range map[string]<-chan struct{}{
		"Started":  ft.Started("AppendFile", 1),
		"Finished": ft.Finished("AppendFile", 1),
	} {
		select {
		case <-ch:
		default:
			t.Errorf("%s(AppendFile, 1) not closed", name)
		}
	}
}

func TestDropRequest(t *testing.T) {
	c, ft, hc, url := setup(t)
	ft.Inject("AppendFile", 1, faultinject.DropRequest)
	if _, err := post(t.Context(), t, hc, url, "a"); !errors.Is(err, faultinject.ErrRequestDropped) {
		t.Fatalf("first post err = %v, want ErrRequestDropped", err)
	}
	if n := c.n.Load(); n != 0 {
		t.Fatalf("server saw %d requests, want 0", n)
	}
	if got, err := post(t.Context(), t, hc, url, "b"); err != nil || got != "b" {
		t.Fatalf("second post = %q, %v; want b", got, err)
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
}

func TestDropResponse(t *testing.T) {
	c, ft, hc, url := setup(t)
	ft.Inject("AppendFile", 1, faultinject.DropResponse)
	if _, err := post(t.Context(), t, hc, url, "a"); !errors.Is(err, faultinject.ErrResponseDropped) {
		t.Fatalf("post err = %v, want ErrResponseDropped", err)
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1 (it ran the call)", n)
	}
}

func TestDuplicate(t *testing.T) {
	c, ft, hc, url := setup(t)
	ft.Inject("AppendFile", 0, faultinject.Duplicate)
	got, err := post(t.Context(), t, hc, url, "twice")
	if err != nil || got != "twice" {
		t.Fatalf("post = %q, %v; want twice", got, err)
	}
	if n := c.n.Load(); n != 2 {
		t.Errorf("server saw %d requests, want 2", n)
	}
}

func TestEveryCallRule(t *testing.T) {
	c, ft, hc, url := setup(t)
	ft.Inject("AppendFile", 0, faultinject.DropRequest)
	ft.Inject("Other", 0, faultinject.DropRequest)
	for range 3 {
		if _, err := post(t.Context(), t, hc, url, "x"); !errors.Is(err, faultinject.ErrRequestDropped) {
			t.Fatalf("post err = %v, want ErrRequestDropped", err)
		}
	}
	ft.Clear()
	if _, err := post(t.Context(), t, hc, url, "x"); err != nil {
		t.Fatalf("post after Clear: %v", err)
	}
	if n, calls := c.n.Load(), ft.Calls("AppendFile"); n != 1 || calls != 4 {
		t.Errorf("server saw %d, Calls = %d; want 1 and 4", n, calls)
	}
}

func TestHoldUntilGate(t *testing.T) {
	c, ft, hc, url := setup(t)
	gate := make(chan struct{})
	ft.Inject("AppendFile", 1, faultinject.Hold(gate))
	done := make(chan error, 1)
	go func() {
		_, err := post(t.Context(), t, hc, url, "late")
		done <- err
	}()
	<-ft.Started("AppendFile", 1)
	if n := c.n.Load(); n != 0 {
		t.Fatalf("server saw %d requests while held, want 0", n)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("post: %v", err)
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
}

func TestHoldOutlivesCaller(t *testing.T) {
	c, ft, hc, url := setup(t)
	gate := make(chan struct{})
	ft.Inject("AppendFile", 1, faultinject.Hold(gate))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := post(ctx, t, hc, url, "late")
		done <- err
	}()
	<-ft.Started("AppendFile", 1)
	cancel()
	if err := <-done; err == nil {
		t.Fatal("post with a cancelled context succeeded")
	}
	select {
	case <-ft.Finished("AppendFile", 1):
		t.Fatal("held call finished before its gate opened")
	default:
	}
	if n := c.n.Load(); n != 0 {
		t.Fatalf("server saw %d requests before the gate opened, want 0", n)
	}
	close(gate)
	<-ft.Finished("AppendFile", 1)
	ft.Wait()
	if n := c.n.Load(); n != 1 {
		t.Errorf("server saw %d requests, want the late one", n)
	}
}

func TestDelay(t *testing.T) {
	c, ft, hc, url := setup(t)
	const d = 20 * time.Millisecond
	ft.Inject("AppendFile", 1, faultinject.Delay(d))
	start := time.Now()
	if _, err := post(t.Context(), t, hc, url, "x"); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < d {
		t.Errorf("delayed call took %v, want at least %v", el, d)
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
}

// statusOnly answers Status and counts the calls; every other RPC is
// unimplemented.
type statusOnly struct {
	dlmv1connect.UnimplementedLockServiceHandler
	n atomic.Int64
}

func (s *statusOnly) Status(context.Context, *connect.Request[dlmv1.StatusRequest]) (*connect.Response[dlmv1.StatusResponse], error) {
	s.n.Add(1)
	return connect.NewResponse(&dlmv1.StatusResponse{Node: &dlmv1.NodeStatus{Id: "n1"}}), nil
}

func TestConnectProtocols(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := new(statusOnly)
			mux := http.NewServeMux()
			mux.Handle(dlmv1connect.NewLockServiceHandler(svc))
			srv := h2cServer(t, mux)
			ft := &faultinject.Transport{Base: h2cTransport(t)}
			ft.Inject("Status", 1, faultinject.DropResponse)
			ft.Inject("Status", 2, faultinject.Duplicate)
			api := dlmv1connect.NewLockServiceClient(&http.Client{Transport: ft}, srv.URL, tc.opts...)

			_, err := api.Status(t.Context(), connect.NewRequest(&dlmv1.StatusRequest{}))
			if connect.CodeOf(err) != connect.CodeUnavailable || connect.IsWireError(err) {
				t.Fatalf("first Status err = %v, want a local Unavailable", err)
			}
			resp, err := api.Status(t.Context(), connect.NewRequest(&dlmv1.StatusRequest{}))
			if err != nil {
				t.Fatalf("second Status: %v", err)
			}
			if got := resp.Msg.GetNode().GetId(); got != "n1" {
				t.Errorf("node id = %q, want n1", got)
			}
			if n := svc.n.Load(); n != 3 {
				t.Errorf("server ran Status %d times, want 3", n)
			}
		})
	}
}
