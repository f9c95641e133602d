package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"

	"github.com/dlm/dlm/client"
	"github.com/dlm/dlm/server/auth"
)

// tokenEnv names the environment variable holding a token: the one the CLI
// sends, and the cluster's admin token for dlm serve.
const tokenEnv = "DLM_TOKEN"

// tokenFlags say which credential a command sends.
type tokenFlags struct {
	token string
	data  string
}

func addTokenFlags(fs *flag.FlagSet) *tokenFlags {
	f := new(tokenFlags)
	fs.StringVar(&f.token, "token", "", "token sent as \"Authorization: Bearer\" (default: $"+tokenEnv+", else the admin token in --data's admin-token, if there)")
	fs.StringVar(&f.data, "data", "./dlm-data", "a local server's data folder: its admin-token is sent when neither --token nor $"+tokenEnv+" is given")
	return f
}

// value is the token to send: --token, else $DLM_TOKEN, else the admin
// token of the local data folder, else none (anonymous).
func (f *tokenFlags) value() (string, error) {
	if f.token != "" {
		return f.token, nil
	}
	if env := strings.TrimSpace(os.Getenv(tokenEnv)); env != "" {
		return env, nil
	}
	tok, err := auth.ReadTokenFile(filepath.Join(f.data, auth.AdminTokenFile))
	switch {
	case err == nil:
		return tok, nil
	case errors.Is(err, os.ErrNotExist):
		return "", nil
	case errors.Is(err, os.ErrPermission):
		// Another user's server: go on without, and let the server say
		// what it needs.
		return "", nil
	}
	return "", err
}

// interceptors are the client options that send the token, if any.
func (f *tokenFlags) interceptors() ([]connect.ClientOption, error) {
	tok, err := f.value()
	if err != nil || tok == "" {
		return nil, err
	}
	return []connect.ClientOption{connect.WithInterceptors(auth.Bearer(tok))}, nil
}

// withTokenHint adds to a refused credential's error where the token
// comes from.
func withTokenHint(err error) error {
	if err == nil || errors.Is(err, client.ErrBadSecret) {
		return err
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied:
		return fmt.Errorf("%w (dlm sends --token, else $%s, else the %s in --data DIR, default ./dlm-data)", err, tokenEnv, auth.AdminTokenFile)
	}
	return err
}
