package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	dlmv1 "github.com/dlm/dlm/gen/go/dlm/v1"
	"github.com/dlm/dlm/gen/go/dlm/v1/dlmv1connect"
	"github.com/dlm/dlm/internal/certs"
)

// testCerts makes a CA in dir and a certificate for 127.0.0.1 and
// localhost that it signed.
func testCerts(t *testing.T, dir, name string) (*certs.CA, certs.Files) {
	t.Helper()
	ca, err := certs.NewCA(name + " CA")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.WriteIssued(dir, name, "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return ca, f
}

// tlsConfig is a client's TLS config: trust caFile, present cert and key
// when given.
func tlsConfig(t *testing.T, caFile, cert, key string) *tls.Config {
	t.Helper()
	c, err := certs.Client(caFile, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tlsHTTPClient speaks HTTP/2 over TLS only, trusting caFile.
func tlsHTTPClient(t *testing.T, caFile, cert, key string) *http.Client {
	t.Helper()
	p := new(http.Protocols)
	p.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p, TLSClientConfig: tlsConfig(t, caFile, cert, key)}}
}

// startTLSServe runs dlm serve on a port of its choosing with args (the TLS
// flags among them) and returns its https:// URL once it leads; hc must
// trust its certificate.
func startTLSServe(t *testing.T, hc *http.Client, args ...string) string {
	t.Helper()
	n := newNode(t, "node1", "127.0.0.1:0", filepath.Join(t.TempDir(), "data"), args...)
	n.HTTP = hc
	n.single = true
	n.start()
	if !strings.HasPrefix(n.URL(), "https://") {
		t.Fatalf("dlm serve advertises %q, want an https:// URL", n.URL())
	}
	return n.URL()
}

// A TLS server answers Connect, gRPC and gRPC-Web over HTTP/2, Connect over
// HTTP/1.1, serves the dashboard, and takes a whole critical section from
// the Go client in both protocols; a plaintext client and a client that does
// not trust its CA get nothing.
func TestTLSServesEveryProtocol(t *testing.T) {
	dir := t.TempDir()
	_, f := testCerts(t, dir, "server")
	hc := tlsHTTPClient(t, f.CA, "", "")
	url := startTLSServe(t, hc, "--tls-cert", f.Cert, "--tls-key", f.Key)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for name, opts := range map[string][]connect.ClientOption{
		"connect": nil, "grpc": {connect.WithGRPC()}, "grpc-web": {connect.WithGRPCWeb()},
	} {
		res, err := dlmv1connect.NewLockServiceClient(hc, url, opts...).Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{}))
		if err != nil {
			t.Fatalf("%s over TLS: %v", name, err)
		}
		if got := res.Msg.GetNode().GetLeaderUrl(); got != url {
			t.Fatalf("%s over TLS: leader URL %q, want %q", name, got, url)
		}
	}
	// HTTP/1.1 over TLS, for browsers and proxies without HTTP/2.
	p1 := new(http.Protocols)
	p1.SetHTTP1(true)
	h1 := &http.Client{Transport: &http.Transport{Protocols: p1, TLSClientConfig: tlsConfig(t, f.CA, "", "")}}
	if _, err := dlmv1connect.NewLockServiceClient(h1, url).Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{})); err != nil {
		t.Fatalf("Connect over HTTP/1.1 and TLS: %v", err)
	}
	for _, c := range []*http.Client{hc, h1} {
		res, err := c.Get(url + "/")
		if err != nil {
			t.Fatalf("dashboard over TLS: %v", err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "<html") {
			t.Fatalf("dashboard over TLS (%s): %s\n%.200s", res.Proto, res.Status, body)
		}
		if want := map[*http.Client]int{hc: 2, h1: 1}[c]; res.ProtoMajor != want {
			t.Fatalf("dashboard answered over %s, want HTTP/%d", res.Proto, want)
		}
	}

	// The Go client, default HTTP client plus WithTLS, in both protocols.
	for _, extra := range [][]client.Option{nil, {client.WithGRPC()}} {
		c, err := client.New(ctx, []string{url}, append(extra, client.WithTLS(tlsConfig(t, f.CA, "", "")))...)
		if err != nil {
			t.Fatalf("client over TLS: %v", err)
		}
		lk, err := c.Acquire(ctx)
		if err != nil {
			t.Fatalf("acquire over TLS: %v", err)
		}
		if err := lk.Append(ctx, "file_1", []byte("tls\n")); err != nil {
			t.Fatalf("append over TLS: %v", err)
		}
		if err := lk.Release(ctx); err != nil {
			t.Fatalf("release over TLS: %v", err)
		}
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	res, err := dlmv1connect.NewLockServiceClient(hc, url).ReadFile(ctx, connect.NewRequest(&dlmv1.ReadFileRequest{File: "file_1"}))
	if err != nil || string(res.Msg.GetData()) != "tls\ntls\n" {
		t.Fatalf("ReadFile over TLS = %v, %v", res, err)
	}

	// Plaintext to the TLS port: no answer, whether HTTP/1.1 or h2c.
	plain := "http://" + strings.TrimPrefix(url, "https://")
	short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	defer cancelShort()
	for name, c := range map[string]connect.HTTPClient{"http/1.1": http.DefaultClient, "h2c": h2cClient()} {
		if _, err := dlmv1connect.NewLockServiceClient(c, plain).Status(short, connect.NewRequest(&dlmv1.StatusRequest{})); err == nil {
			t.Fatalf("a plaintext %s client got an answer from the TLS server", name)
		}
	}
	// A client that does not trust the server's CA refuses it, and says why.
	other, _ := testCerts(t, t.TempDir(), "other")
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherCA, other.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = dlmv1connect.NewLockServiceClient(tlsHTTPClient(t, otherCA, "", ""), url).Status(short, connect.NewRequest(&dlmv1.StatusRequest{}))
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Fatalf("a client trusting another CA: %v, want a certificate verification error", err)
	}
}

func h2cClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}

// buf curl, given only the CA, reaches a TLS server through reflection in
// the gRPC, gRPC-Web and Connect protocols, and health checking answers.
func TestTLSBufCurl(t *testing.T) {
	buf := bufBinary(t)
	_, f := testCerts(t, t.TempDir(), "server")
	url := startTLSServe(t, tlsHTTPClient(t, f.CA, "", ""), "--tls-cert", f.Cert, "--tls-key", f.Key)
	call := func(protocol, method, body string) map[string]any {
		t.Helper()
		out, err := exec.Command(buf, "curl", "--cacert", f.CA, "--protocol", protocol, "--reflect", "--data", body, url+"/"+method).CombinedOutput()
		if err != nil {
			t.Fatalf("buf curl --protocol %s %s: %v\n%s", protocol, method, err, out)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("buf curl %s: %v\n%s", method, err, out)
		}
		return m
	}
	for _, protocol := range []string{"grpc", "grpcweb", "connect"} {
		st := call(protocol, "dlm.v1.LockService/Status", `{}`)
		if node, _ := st["node"].(map[string]any); node["leaderUrl"] != url {
			t.Fatalf("buf curl --protocol %s Status = %v", protocol, st)
		}
	}
	if h := call("grpc", "grpc.health.v1.Health/Check", `{"service": "dlm.v1.LockService"}`); h["status"] != "SERVING" {
		t.Fatalf("health over TLS = %v", h)
	}
	// Without the CA, buf curl refuses the server.
	if out, err := exec.Command(buf, "curl", "--protocol", "grpc", "--reflect", "--data", "{}", url+"/dlm.v1.LockService/Status").CombinedOutput(); err == nil {
		t.Fatalf("buf curl without the CA: %v\n%s", err, out)
	}
}

// With --tls-client-ca, a client must present a certificate that CA signed:
// none, or one from another CA, is refused at the handshake; the CLI and the
// Go client present one with --cert/--key and WithTLS.
func TestTLSMutualRequiresClientCert(t *testing.T) {
	dir := t.TempDir()
	ca, f := testCerts(t, dir, "server")
	cl, err := ca.WriteIssued(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	_, stranger := testCerts(t, t.TempDir(), "stranger")
	url := startTLSServe(t, tlsHTTPClient(t, f.CA, cl.Cert, cl.Key), "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-client-ca", f.CA)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	status := func(cert, key string) error {
		_, err := dlmv1connect.NewLockServiceClient(tlsHTTPClient(t, f.CA, cert, key), url).Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{}))
		return err
	}
	if err := status("", ""); err == nil {
		t.Fatal("a client without a certificate got an answer")
	}
	if err := status(stranger.Cert, stranger.Key); err == nil {
		t.Fatal("a client with a certificate from another CA got an answer")
	}
	if err := status(cl.Cert, cl.Key); err != nil {
		t.Fatalf("a client with a certificate from the client CA: %v", err)
	}

	// The Go client does not retry a refused certificate for its whole
	// budget: the setting is wrong, and the error says so at once.
	start := time.Now()
	if _, err := client.New(ctx, []string{url}, client.WithTLS(tlsConfig(t, f.CA, "", "")), client.WithRetryBudget(20*time.Second)); err == nil {
		t.Fatal("client.New without a client certificate succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("client.New without a client certificate took %v: it retried a refused handshake", d)
	}
	c, err := client.New(ctx, []string{url}, client.WithTLS(tlsConfig(t, f.CA, cl.Cert, cl.Key)))
	if err != nil {
		t.Fatalf("client.New with a client certificate: %v", err)
	}
	c.Close(ctx)

	out, err := runDLM(t, "status", "--server", url, "--ca", f.CA, "--cert", cl.Cert, "--key", cl.Key)
	if err != nil || !strings.Contains(out, "leader") {
		t.Fatalf("dlm status with a client certificate: %v\n%s", err, out)
	}
	if out, err := runDLM(t, "status", "--server", url, "--ca", f.CA, "--retry", "20s"); err == nil {
		t.Fatalf("dlm status without a client certificate succeeded:\n%s", out)
	}
}

// Every client command takes --ca and an https:// URL; without the CA it
// fails at once, naming the certificate.
func TestTLSCLICommands(t *testing.T) {
	_, f := testCerts(t, t.TempDir(), "server")
	url := startTLSServe(t, tlsHTTPClient(t, f.CA, "", ""), "--tls-cert", f.Cert, "--tls-key", f.Key)
	flags := []string{"--server", url, "--ca", f.CA}
	snap := filepath.Join(t.TempDir(), "backup.snap")
	for _, args := range [][]string{
		{"append", "--file", "file_2", "over tls"},
		{"cat", "file_2"},
		{"status"},
		{"members", "list"},
		{"snapshot", "save", snap},
	} {
		// Flags first: a command's flags end at its first argument.
		verb := 1
		if args[0] == "members" || args[0] == "snapshot" {
			verb = 2
		}
		full := append(append(append([]string{}, args[:verb]...), flags...), args[verb:]...)
		out, err := runDLM(t, full...)
		if err != nil {
			t.Fatalf("dlm %s: %v\n%s", strings.Join(full, " "), err, out)
		}
		want := map[string]string{"append": "token", "cat": "over tls", "status": "leader    " + url, "members": url, "snapshot": "saved"}[args[0]]
		if !strings.Contains(out, want) {
			t.Fatalf("dlm %s printed:\n%s\nwant %q in it", strings.Join(full, " "), out, want)
		}
	}
	start := time.Now()
	out, err := runDLM(t, "status", "--server", url, "--retry", "20s")
	if err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("dlm status without --ca: %v\n%s", err, out)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("dlm status without --ca took %v: it retried an untrusted certificate", d)
	}
}

// runDLM runs the dlm binary and returns its combined output.
func runDLM(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, dlmBinary, args...).CombinedOutput()
	return string(out), err
}

// dev-cluster --tls runs three nodes over TLS for the API and for Raft: they
// elect a leader and replicate. Their Raft ports take only peers with a
// certificate from the cluster's CA: a certificate from another CA, or
// none, is refused at the handshake, before a byte reaches Raft.
func TestDevClusterTLS(t *testing.T) {
	dc := startDevCluster(t, "--tls", "--nodes", "3")
	if dc.ca == "" {
		t.Fatal("dev-cluster --tls printed no CA path")
	}
	for _, u := range dc.urls {
		if !strings.HasPrefix(u, "https://") {
			t.Fatalf("dev-cluster --tls printed %q, want https:// URLs", u)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := runDLM(t, "append", "--server", strings.Join(dc.urls, ","), "--ca", dc.ca, "--file", "file_5", "replicated over tls")
	if err != nil {
		t.Fatalf("dlm append: %v\n%s", err, out)
	}
	out, err = runDLM(t, "cat", "--server", strings.Join(dc.urls, ","), "--ca", dc.ca, "file_5")
	if err != nil || !strings.Contains(out, "replicated over tls") {
		t.Fatalf("dlm cat: %v\n%s", err, out)
	}
	// Every node applies the append: Raft replicated it over TLS.
	r, err := client.NewReader(dc.urls, client.WithTLS(tlsConfig(t, dc.ca, "", "")))
	if err != nil {
		t.Fatal(err)
	}
	st, err := r.Status(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	commit := st.GetNode().GetCommitIndex()
	for _, u := range dc.urls {
		c := dlmv1connect.NewLockServiceClient(dc.hc, u)
		var applied uint64
		for deadline := time.Now().Add(20 * time.Second); applied < commit && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if res, err := c.Status(ctx, connect.NewRequest(&dlmv1.StatusRequest{})); err == nil {
				applied = res.Msg.GetNode().GetAppliedIndex()
			}
		}
		if applied < commit {
			t.Fatalf("%s applied %d, the leader committed %d: not replicated", u, applied, commit)
		}
	}
	out, err = runDLM(t, "status", "--server", strings.Join(dc.urls, ","), "--ca", dc.ca)
	if err != nil || strings.Count(out, "follower") < 2 || strings.Contains(out, "unreachable") {
		t.Fatalf("dlm status --ca: %v\n%s", err, out)
	}

	// Each node announced its https:// URL through the leader's API, over
	// TLS with the peer CA.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err = runDLM(t, "members", "list", "--server", strings.Join(dc.urls, ","), "--ca", dc.ca)
		all := err == nil
		for _, u := range dc.urls {
			all = all && strings.Contains(out, u)
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dlm members list does not show every https:// URL: %v\n%s", err, out)
		}
	}

	// The Raft port: a member's own certificate completes a handshake (the
	// connection then waits for an RPC); another CA's certificate, or none,
	// is refused.
	tlsDir := filepath.Dir(dc.ca)
	member := filepath.Join(tlsDir, "n2")
	_, stranger := testCerts(t, t.TempDir(), "intruder")
	caPool, err := certs.Pool(dc.ca)
	if err != nil {
		t.Fatal(err)
	}
	for _, raftAddr := range dc.rafts {
		for name, tc := range map[string]struct {
			cert, key string
			accepted  bool
		}{
			"member":  {member + ".pem", member + "-key.pem", true},
			"foreign": {stranger.Cert, stranger.Key, false},
			"none":    {"", "", false},
		} {
			cfg := &tls.Config{RootCAs: caPool, ServerName: "127.0.0.1"}
			if tc.cert != "" {
				pair, err := tls.LoadX509KeyPair(tc.cert, tc.key)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Certificates = []tls.Certificate{pair}
			}
			err := raftHandshake(raftAddr, cfg)
			if tc.accepted && err != nil {
				t.Fatalf("raft %s, %s certificate: %v, want accepted", raftAddr, name, err)
			}
			if !tc.accepted && err == nil {
				t.Fatalf("raft %s accepted a peer with %s certificate", raftAddr, name)
			}
		}
	}
	// Plain TCP bytes (a Raft RPC without TLS) do not reach Raft: the node
	// closes the connection and the cluster still has one leader.
	conn, err := net.DialTimeout("tcp", dc.rafts[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	conn.Write([]byte{0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80})
	var ne net.Error
	if _, err := io.ReadAll(conn); errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a plaintext Raft connection was not closed: %v", err)
	}
	conn.Close()
	if id := dc.leaderIDTLS(ctx); id == "" {
		t.Fatal("no leader after the intruders")
	}
}

// raftHandshake dials a Raft port over TLS and tells whether the server
// accepted this side: in TLS 1.3 its verdict on the client certificate
// arrives after the client's handshake, so a refused peer reads an alert
// while an accepted one reads nothing until its read times out.
func raftHandshake(addr string, cfg *tls.Config) error {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err == nil {
		return errors.New("the Raft port sent data to a peer that sent nothing")
	}
	return err
}

// leaderIDTLS asks a --tls cluster which node leads.
func (dc *devCluster) leaderIDTLS(ctx context.Context) string {
	dc.t.Helper()
	r, err := client.NewReader(dc.urls, client.WithRetryBudget(20*time.Second), client.WithTLS(tlsConfig(dc.t, dc.ca, "", "")))
	if err != nil {
		dc.t.Fatal(err)
	}
	st, err := r.Status(ctx, true)
	if err != nil {
		dc.t.Fatal(err)
	}
	return st.GetNode().GetId()
}

// A node joins a TLS cluster through its https:// URL (its ClusterService
// call trusts the peer CA) and then replicates over Raft with TLS.
func TestTLSJoin(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("cluster CA")
	if err != nil {
		t.Fatal(err)
	}
	var files []certs.Files
	for _, name := range []string{"a", "b"} {
		f, err := ca.WriteIssued(dir, name, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	hc := tlsHTTPClient(t, files[0].CA, "", "")
	flags := func(f certs.Files) []string {
		return []string{"--raft", "127.0.0.1:0", "--tls-cert", f.Cert, "--tls-key", f.Key, "--peer-ca", f.CA}
	}
	a := startTLSServe(t, hc, append([]string{"--id", "a"}, flags(files[0])...)...)
	b := startTLSServe(t, hc, append([]string{"--id", "b", "--join", a}, flags(files[1])...)...)
	cc := dlmv1connect.NewClusterServiceClient(hc, a)
	var last string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := cc.ListMembers(ctx, connect.NewRequest(&dlmv1.ListMembersRequest{}))
		cancel()
		if err == nil {
			last = ""
			for _, m := range res.Msg.GetMembers() {
				last += m.GetId() + " " + m.GetSuffrage() + " " + m.GetClientUrl() + "; "
				if m.GetId() == "b" && m.GetClientUrl() == b && strings.Contains(strings.ToLower(m.GetSuffrage()), "voter") && !strings.Contains(strings.ToLower(m.GetSuffrage()), "non") {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("b did not join a as a voter over TLS: %v; members: %s", err, last)
		}
	}
}

// serve refuses TLS flags that cannot work, before it opens anything: a
// cluster member over TLS must name the CA its peers' certificates come
// from, or Raft would accept anyone.
func TestServeTLSFlagErrors(t *testing.T) {
	_, f := testCerts(t, t.TempDir(), "server")
	raft := "127.0.0.1:0"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", f.Cert}, "both --tls-cert and --tls-key"},
		{[]string{"--tls-client-ca", f.CA}, "need --tls-cert"},
		{[]string{"--peer-ca", f.CA}, "need --tls-cert"},
		{[]string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--raft", raft}, "--peer-ca"},
		{[]string{"--tls-cert", f.Cert, "--tls-key", f.CA}, "TLS certificate"},
	} {
		args := append([]string{"--listen", "127.0.0.1:0", "--data", t.TempDir()}, tc.args...)
		err := runServe(context.Background(), args, nil, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %s: %v, want an error about %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
