package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dlm/dlm/internal/certs"
	"github.com/dlm/dlm/internal/e2e"
)

// --single --tls --tls-client-certs serves one node, without Raft, over
// mutual TLS: the first line names its https URL, the CA and a client
// certificate; the node answers a client that presents it and refuses one
// that does not. End of stdin ends the node.
func TestSingleMutualTLS(t *testing.T) {
	t.Setenv("DLM_TOKEN", "e2e-cluster-test-token-0123456789abcdef")
	bin, err := e2e.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stdin, feed := io.Pipe()
	answers, stdout := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run([]string{"--dlm", bin, "--single", "--tls", "--tls-client-certs", "--data", t.TempDir()}, stdin, stdout)
		stdout.CloseWithError(io.EOF)
		done <- err
	}()
	ended := false
	end := func() {
		if !ended {
			ended = true
			feed.Close()
			go io.Copy(io.Discard, answers)
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	}
	defer end()
	line, err := bufio.NewReader(answers).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var first answer
	if err := json.Unmarshal(line, &first); err != nil {
		t.Fatal(err)
	}
	if len(first.Nodes) != 1 || !strings.HasPrefix(first.Nodes[0].URL, "https://127.0.0.1:") || first.Nodes[0].Raft != "" || first.TLS == nil {
		t.Fatalf("first line %s: want one https node without Raft, and TLS files", line)
	}
	url := first.Nodes[0].URL + "/"
	get := func(cert, key string) error {
		conf, err := certs.Client(first.TLS.CA, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true}}
		res, err := hc.Get(url)
		if err == nil {
			res.Body.Close()
		}
		return err
	}
	if err := get(first.TLS.Cert, first.TLS.Key); err != nil {
		t.Fatalf("with the client certificate: %v", err)
	}
	if err := get("", ""); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	end()
	if err := get(first.TLS.Cert, first.TLS.Key); err == nil {
		t.Fatal("the node still answers after stdin ended")
	}
}
