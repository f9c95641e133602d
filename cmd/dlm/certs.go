package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/dlm/dlm/internal/certs"
	"github.com/dlm/dlm/server/auth"
)

// runCerts makes a small certificate authority and certificates signed by
// it, so that a first TLS deployment needs no other tool. Each certificate
// serves as a server's and as a client's, as a cluster member needs (it
// presents the same one to clients and to its Raft peers).
func runCerts(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("certs", "[--dir DIR] [--host H,H,...] NAME...", "Makes DIR/ca.pem and DIR/ca-key.pem when missing, then DIR/NAME.pem and DIR/NAME-key.pem for each NAME.", stderr)
	dir := fs.String("dir", "certs", "folder of the CA and the certificates")
	hosts := fs.String("host", "127.0.0.1,localhost", "comma-separated IP addresses and DNS names the certificates are valid for (the hosts of --listen and --raft)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("certs: name at least one certificate (a node, a client)")
	}
	var hs []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hs = append(hs, h)
		}
	}
	for _, name := range fs.Args() {
		if name == "" || name == "ca" || strings.ContainsAny(name, `/\`) || name != filepath.Base(name) {
			return fmt.Errorf("certs: %q is not a usable certificate name", name)
		}
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	ca, err := certs.LoadCA(*dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if ca, err = certs.NewCA("dlm CA"); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		if _, err := ca.WriteKey(*dir); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		fmt.Fprintf(stdout, "new CA: %s (its key %s: keep it private)\n", filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem"))
	case err != nil:
		return fmt.Errorf("certs: the CA in %s: %w", *dir, err)
	}
	for _, name := range fs.Args() {
		f, err := ca.WriteIssued(*dir, name, hs...)
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		fmt.Fprintf(stdout, "%s: %s and %s, for %s\n", name, f.Cert, f.Key, strings.Join(hs, ", "))
	}
	return nil
}

// runToken prints a new random token, for an --auth-tokens file or a
// cluster's shared admin token.
func runToken(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("token", "", "Prints a new random token (for --auth-tokens or DLM_TOKEN).", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected arguments %q", fs.Args())
	}
	tok, err := auth.NewToken()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
