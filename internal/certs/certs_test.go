package certs_test

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/internal/certs"
)

// An issued certificate is trusted through its CA file for the hosts it
// names, in both directions (a node is server and client to its peers), and
// only by a peer that trusts that CA.
func TestIssuedCertificateHandshakes(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.WriteIssued(dir, "a", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(a.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v", fi.Mode(), err)
	}
	other, err := certs.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	o, err := other.WriteIssued(t.TempDir(), "o", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	server, err := certs.Peer(a.Cert, a.Key, a.CA)
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(client *tls.Config) error {
		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		deadline := time.Now().Add(10 * time.Second)
		c1.SetDeadline(deadline)
		c2.SetDeadline(deadline)
		errc := make(chan error, 1)
		go func() {
			err := tls.Server(c1, server).Handshake()
			c1.Close()
			errc <- err
		}()
		tc := tls.Client(c2, client)
		cerr := tc.Handshake()
		if cerr == nil {
			// In TLS 1.3 the server's verdict on the client's certificate
			// comes after the client's handshake: read it (or the close).
			tc.Read(make([]byte, 1))
		} else {
			c2.Close()
		}
		serr := <-errc
		if cerr != nil {
			return cerr
		}
		return serr
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		client, err := certs.Peer(a.Cert, a.Key, a.CA)
		if err != nil {
			t.Fatal(err)
		}
		client.ServerName = host
		if err := handshake(client); err != nil {
			t.Fatalf("peer handshake for %s: %v", host, err)
		}
	}
	stranger, err := certs.Peer(o.Cert, o.Key, a.CA)
	if err != nil {
		t.Fatal(err)
	}
	stranger.ServerName = "127.0.0.1"
	if err := handshake(stranger); err == nil {
		t.Fatal("a peer with another CA's certificate completed a handshake")
	}
	wrongName, err := certs.Client(a.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	wrongName.ServerName = "example.com"
	if err := handshake(wrongName); err == nil || !strings.Contains(err.Error(), "example.com") {
		t.Fatalf("a certificate for another host: %v", err)
	}
}

func TestLoadErrorsNameTheProblem(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	if _, err := certs.Client(notPEM, "", ""); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("a CA file without a certificate: %v", err)
	}
	if _, err := certs.Client("", notPEM, ""); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("a client certificate without its key: %v", err)
	}
	if _, err := certs.Server(filepath.Join(dir, "missing.pem"), notPEM, ""); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("a missing certificate file: %v", err)
	}
}
