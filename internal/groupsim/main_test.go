package groupsim_test

import (
	"testing"

	"github.com/dlm/dlm/internal/leakcheck"
)

// TestMain fails the run if a goroutine a test started outlives the tests.
func TestMain(m *testing.M) { leakcheck.Main(m) }
