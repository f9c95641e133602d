package main

import (
	"crypto/tls"
	"flag"
	"net/http"
	"time"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/internal/certs"
)

// tlsFlags are the TLS flags of every command that talks to a server.
type tlsFlags struct {
	ca, cert, key string
}

func addTLSFlags(fs *flag.FlagSet) *tlsFlags {
	f := new(tlsFlags)
	fs.StringVar(&f.ca, "ca", "", "PEM CA to trust for https:// servers (default: the system's CAs)")
	fs.StringVar(&f.cert, "cert", "", "PEM client certificate, for a server that requires mutual TLS")
	fs.StringVar(&f.key, "key", "", "PEM private key of --cert")
	return f
}

// config is the TLS config the flags ask for, nil when they ask for none.
func (f *tlsFlags) config() (*tls.Config, error) {
	if f.ca == "" && f.cert == "" && f.key == "" {
		return nil, nil
	}
	return certs.Client(f.ca, f.cert, f.key)
}

// option is the client option of the flags, nil when they ask for none.
func (f *tlsFlags) option() (client.Option, error) {
	c, err := f.config()
	if c == nil || err != nil {
		return nil, err
	}
	return client.WithTLS(c), nil
}

// httpClient speaks HTTP/1.1 or HTTP/2 to http:// URLs and HTTP/2 over TLS
// to https:// URLs, trusting the flags' CA.
func (f *tlsFlags) httpClient() (*http.Client, error) {
	c, err := f.config()
	if err != nil {
		return nil, err
	}
	if c == nil {
		return http.DefaultClient, nil
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     c,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
	}}, nil
}
