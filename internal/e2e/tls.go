package e2e

import (
	"net/http"
	"path/filepath"

	"github.com/dlm/dlm/internal/certs"
)

// UseTLS serves every node's API (and Raft, for a node with a Raft
// address) over TLS with certificates from a throw-away CA written under
// dir, and makes the harness's own calls trust it. With clientCerts the
// nodes also require a client certificate signed by the CA (mutual TLS)
// and the harness presents one. It returns the CA and a client
// certificate the CA signed, for the test's own clients. Call it before
// the first Start.
func (c *Cluster) UseTLS(dir string, clientCerts bool) (certs.Files, error) {
	ca, err := certs.NewCA("dlm e2e CA")
	if err != nil {
		return certs.Files{}, err
	}
	client, err := ca.WriteIssued(dir, "client", "127.0.0.1")
	if err != nil {
		return certs.Files{}, err
	}
	trust := client.CA
	cert, key := "", ""
	if clientCerts {
		cert, key = client.Cert, client.Key
	}
	tlsConf, err := certs.Client(trust, cert, key)
	if err != nil {
		return certs.Files{}, err
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: tlsConf}}
	for _, n := range c.Nodes {
		// Members present their certificate to each other too (Raft,
		// joining), so it names the loopback host they use.
		f, err := ca.WriteIssued(filepath.Join(dir, n.ID), n.ID, "127.0.0.1")
		if err != nil {
			return certs.Files{}, err
		}
		n.Args = append(n.Args, "--tls-cert", f.Cert, "--tls-key", f.Key)
		if n.RaftAddr != "" {
			n.Args = append(n.Args, "--peer-ca", f.CA)
		}
		if clientCerts {
			n.Args = append(n.Args, "--tls-client-ca", f.CA)
		}
		n.HTTP = hc
	}
	return client, nil
}
