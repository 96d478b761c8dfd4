package envoy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: a
// closed gateway must not leave health checks, gRPC connections or
// servers behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
