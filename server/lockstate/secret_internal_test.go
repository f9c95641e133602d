package lockstate

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

func TestSameSecret(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{{"s3cret", "s3cret", true}, {"s3cret", "s3creT", false}, {"s3cret", "s3cre", false}, {"", "", true}, {"a", "", false}} {
		if got := sameSecret(tc.a, tc.b); got != tc.want {
			t.Errorf("sameSecret(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

// TestSecretsComparedInConstantTime keeps == and != off secrets in the
// package: a comparison that stops at the first wrong byte lets a client on
// the network guess a secret byte by byte from answer times.
func TestSecretsComparedInConstantTime(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			b, ok := n.(*ast.BinaryExpr)
			if !ok || (b.Op != token.EQL && b.Op != token.NEQ) {
				return true
			}
			for _, side := range []ast.Expr{b.X, b.Y} {
				if isSecret(side) {
					t.Errorf("%s: a secret compared with %s; use sameSecret", fset.Position(b.Pos()), b.Op)
				}
			}
			return true
		})
	}
}

func isSecret(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return strings.EqualFold(e.Name, "secret")
	case *ast.SelectorExpr:
		return strings.EqualFold(e.Sel.Name, "secret")
	case *ast.CallExpr:
		if s, ok := e.Fun.(*ast.SelectorExpr); ok {
			return s.Sel.Name == "GetSecret"
		}
	}
	return false
}
