package auth

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// MinTokenLength is the shortest token accepted: 16 characters of a random
// hex token are 64 bits, beyond guessing over a network.
const MinTokenLength = 16

// Credential is one token and the role it grants.
type Credential struct {
	Role  Role
	Token string
}

// NewToken returns a random token: 32 bytes, hex.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// CheckToken says why a token cannot be one, or nil.
func CheckToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("the token is empty")
	case len(tok) < MinTokenLength:
		return fmt.Errorf("the token is %d characters; at least %d are needed", len(tok), MinTokenLength)
	case strings.IndexFunc(tok, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0:
		return errors.New("the token has spaces or characters outside printable ASCII")
	}
	return nil
}

// ParseTokens reads a tokens file: one credential per line, "ROLE TOKEN",
// with ROLE admin, client or read; blank lines and lines starting with #
// are ignored. Unknown roles, short tokens and a token given twice are
// errors naming the line (never the token).
func ParseTokens(r io.Reader) ([]Credential, error) {
	var creds []Credential
	seen := make(map[string]int)
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"ROLE TOKEN\", got %d fields", line, len(fields))
		}
		role, err := ParseRole(fields[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if err := CheckToken(fields[1]); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if first, dup := seen[fields[1]]; dup {
			return nil, fmt.Errorf("line %d: the same token as line %d (each token names one role)", line, first)
		}
		seen[fields[1]] = line
		creds = append(creds, Credential{Role: role, Token: fields[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return creds, nil
}

// LoadTokens reads a tokens file (see ParseTokens). warning is not empty
// when other users may read the file: its tokens are as good as theirs.
func LoadTokens(path string) (creds []Credential, warning string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		warning = fmt.Sprintf("%s is readable by other users (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	creds, err = ParseTokens(f)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return creds, warning, nil
}

// AdminTokenFile is the admin token's file in a node's data folder.
const AdminTokenFile = "admin-token"

// ReadTokenFile reads a file holding one token (surrounding white space
// ignored).
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if err := CheckToken(tok); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return tok, nil
}

// AdminToken returns the node's admin token, kept in dataDir/admin-token
// (mode 0600), and whether it wrote the file. A given token (the cluster's,
// from the operator) replaces the stored one, so that restarting every node
// with a new token rotates it. With none given the stored one is used, or,
// when generate is true, a new random one is written; a node that must
// share its cluster's token (it joins one) passes generate false.
func AdminToken(dataDir, given string, generate bool) (tok string, wrote bool, err error) {
	path := filepath.Join(dataDir, AdminTokenFile)
	stored, err := ReadTokenFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", false, err
	case given == "" || given == stored:
		return stored, false, nil
	}
	switch {
	case given != "":
		if err := CheckToken(given); err != nil {
			return "", false, err
		}
		tok = given
	case generate:
		if tok, err = NewToken(); err != nil {
			return "", false, err
		}
	default:
		return "", false, fmt.Errorf("no admin token: %s does not exist", path)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", false, err
	}
	if err := writePrivate(path, tok+"\n"); err != nil {
		return "", false, err
	}
	return tok, true, nil
}

// writePrivate replaces path with text, mode 0600, atomically: a crash
// leaves the old token or the new one, never half of one.
func writePrivate(path, text string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".admin-token-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(text); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// digest is what tokens are compared by: fixed-length, so that comparing in
// constant time reveals neither content nor length.
func digest(tok string) [sha256.Size]byte { return sha256.Sum256([]byte(tok)) }

// equal compares two digests in constant time.
func equal(a, b [sha256.Size]byte) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }
