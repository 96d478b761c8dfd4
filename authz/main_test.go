package authz

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: the
// key refresh loop, fetches and servers must all stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
