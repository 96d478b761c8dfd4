// Package testenv decides what a test does when an outside program it
// needs is missing: skip on a developer's machine, fail in CI.
//
// It must never let CI pass by skipping: when TOLLGATE_REQUIRE_ALL=1 a
// missing dependency is a test failure.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// RequireAll reports whether missing outside programs must fail tests
// (TOLLGATE_REQUIRE_ALL=1, set by .ci/run).
func RequireAll() bool { return os.Getenv("TOLLGATE_REQUIRE_ALL") == "1" }

// Missing skips t with reason, or fails it under TOLLGATE_REQUIRE_ALL=1.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if RequireAll() {
		t.Fatalf("%s (TOLLGATE_REQUIRE_ALL=1, so this is a failure, not a skip)", reason)
	}
	t.Skipf("%s; skipping (set TOLLGATE_REQUIRE_ALL=1 to make this a failure)", reason)
}

// LookPath returns the path of program, or calls Missing with install
// advice when it is not on PATH.
func LookPath(t testing.TB, program, install string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		Missing(t, program+" not found on PATH ("+install+")")
	}
	return p
}
