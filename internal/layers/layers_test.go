package layers_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/dlm/dlm/"

// pkg is what go list says of one package.
type pkg struct {
	ImportPath string
	Imports    []string // direct, of its non-test files
	Deps       []string // transitive, with -test also its tests'
	Error      *struct{ Err string }
}

// rule forbids the packages under From to import any package under one of
// Not: directly when Direct is set, else at any depth.
type rule struct {
	From   string
	Not    []string
	Direct bool
	Why    string
}

var rules = []rule{
	{From: "server/lockstate", Not: []string{"server/", "internal/", "client", "cmd/", "github.com/hashicorp/", "connectrpc.com/"},
		Why: "the lock state machine is pure: it imports nothing of dlm but gen"},
	{From: "server/fsm", Not: []string{"server/node", "server/service", "server/auth", "server/membership", "server/leadership", "cmd/"},
		Why: "the FSM applies the log; it knows nothing of the node that hosts it or of the API"},
	{From: "server/leadership", Not: []string{"server/node", "server/service", "server/fsm", "server/auth", "server/membership", "github.com/hashicorp/"},
		Why: "the leader's memory is pure, on a Clock: no Raft, no FSM, no node"},
	{From: "server/leadership", Not: []string{"os", "net", "net/http", "io/fs", "os/exec", "syscall", "path/filepath"}, Direct: true,
		Why: "the leader's memory does no I/O"},
	{From: "server/staging", Not: []string{"server/", "internal/", "client", "cmd/", "github.com/hashicorp/", "connectrpc.com/"},
		Why: "the leader's memory of critical sections is pure: no Raft, no FSM, no node"},
	{From: "server/staging", Not: []string{"os", "net", "time", "io/fs", "syscall"}, Direct: true,
		Why: "the leader's memory of critical sections reads no clock and does no I/O"},
	{From: "server/node", Not: []string{"server/service", "server/auth", "server/membership", "cmd/", "gen/go/dlm/v1/dlmv1connect", "connectrpc.com/"},
		Why: "the node is a Raft host with a domain-typed API: it serves no RPC and calls none (server/membership joins and announces it)"},
	{From: "server/membership", Not: []string{"server/service", "cmd/"},
		Why: "membership calls the cluster's API as a client; it does not serve it"},
	{From: "server/service", Not: []string{"cmd/", "server/membership"},
		Why: "the service adapts the node to the protocol; the binary wires it up"},
	{From: "server/", Not: []string{"cmd/", "client", "robustness"},
		Why: "the server does not depend on its clients or the binary"},
	{From: "internal/certs", Not: []string{"server/", "client", "cmd/"},
		Why: "certificate helpers stand alone"},
	{From: "internal/leakcheck", Not: []string{"server/", "client", "cmd/"},
		Why: "the leak check stands alone"},
}

// clientRule: the Go client, faultinject and gen, tests included, never
// reach the server (a program that imports the client downloads only what
// the client and its tests import). client/integration is the client's
// test that starts servers, and is exempt.
var clientRule = rule{From: "client", Not: []string{"server/", "internal/", "cmd/", "robustness", "github.com/hashicorp/", "go.etcd.io/"},
	Why: "the Go client and gen never reach the server or dlm's internals"}

func list(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-e", "-json=ImportPath,Imports,Deps,Error"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// under says whether import path p is the package prefix names (relative
// to the module unless it has a dot or is a standard package) or below it.
func under(p, prefix string) bool {
	full := prefix
	if !strings.Contains(strings.SplitN(prefix, "/", 2)[0], ".") && !isStd(prefix) {
		full = module + prefix
	}
	if strings.HasSuffix(full, "/") {
		return strings.HasPrefix(p, full)
	}
	return p == full || strings.HasPrefix(p, full+"/")
}

func isStd(p string) bool {
	return slices.Contains([]string{"os", "net", "net/http", "io/fs", "os/exec", "syscall", "path/filepath"}, p)
}

func check(t *testing.T, pkgs []pkg, r rule) (checked int) {
	t.Helper()
	for _, p := range pkgs {
		// A test variant is "path [path.test]", an external test
		// "path_test [path.test]": both are checked as path.
		path, _, _ := strings.Cut(p.ImportPath, " ")
		path = strings.TrimSuffix(path, "_test")
		if !under(path, r.From) || strings.HasSuffix(path, ".test") {
			continue
		}
		checked++
		imports, verb := p.Deps, "reaches"
		if r.Direct {
			imports, verb = p.Imports, "imports"
		}
		var bad []string
		for _, imp := range imports {
			if slices.ContainsFunc(r.Not, func(not string) bool { return under(imp, not) }) {
				bad = append(bad, strings.TrimPrefix(imp, module))
			}
		}
		if len(bad) > 0 {
			// The direct imports among them are the ones to remove.
			t.Errorf("%s %s %s: %s", strings.TrimPrefix(p.ImportPath, module), verb, strings.Join(bad, ", "), r.Why)
		}
	}
	return checked
}

// TestNoPackageImportsALayerAboveIt reads every package's imports (go list)
// and fails on an import the layering forbids.
func TestNoPackageImportsALayerAboveIt(t *testing.T) {
	pkgs := list(t, module+"...")
	for _, p := range pkgs {
		if p.Error != nil {
			t.Errorf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
	}
	for _, r := range rules {
		if n := check(t, pkgs, r); n == 0 {
			t.Errorf("no package is under %s: the rule %q checks nothing (was it moved?)", r.From, r.Why)
		} else {
			t.Logf("%s: %d packages", r.From, n)
		}
	}
}

func TestTheClientReachesNoServerCode(t *testing.T) {
	var pkgs []pkg
	for _, p := range list(t, "-deps", "-test", module+"client", module+"client/faultinject", module+"gen/...") {
		// -deps lists every dependency too; client/integration is not
		// among the packages asked for, and none of the client's may
		// import it.
		if path, _, _ := strings.Cut(p.ImportPath, " "); !under(path, "client/integration") {
			pkgs = append(pkgs, p)
		}
	}
	for _, from := range []string{"client", "gen/"} {
		r := clientRule
		r.From = from
		if n := check(t, pkgs, r); n == 0 {
			t.Errorf("no package under %s listed", from)
		} else {
			t.Logf("%s: %d packages (test variants included)", from, n)
		}
	}
}
