package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
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

// A CA written with its key is loaded again and issues certificates that the
// first CA file verifies, as `dlm certs` run twice needs; a folder without
// the key is not a CA to issue from.
func TestLoadCAIssuesUnderTheSameRoot(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.WriteCA(dir); err != nil {
		t.Fatal(err)
	}
	keyPath, err := ca.WriteKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key file mode: %v, %v", fi, err)
	}
	again, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	later, err := again.WriteIssued(t.TempDir(), "later", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := certs.Pool(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(later.Cert, later.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("a certificate from the loaded CA does not verify against the first ca.pem: %v", err)
	}
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.LoadCA(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadCA without a key = %v, want a not-exist error", err)
	}
}
