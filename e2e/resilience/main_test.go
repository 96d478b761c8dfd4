package resilience

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The long forms run with TOLLGATE_SOAK=1 (`make soak`); the report table
// is printed at the end, and written to $TOLLGATE_SOAK_REPORT if set.
// TOLLGATE_TEST_BIN names a prebuilt tollgate binary to run instead of
// building one.
var (
	soak       = os.Getenv("TOLLGATE_SOAK") == "1"
	soakReport = os.Getenv("TOLLGATE_SOAK_REPORT")
	prebuilt   = os.Getenv("TOLLGATE_TEST_BIN")

	report Report

	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if report.Len() > 0 && (soak || soakReport != "") {
		fmt.Println()
		fmt.Println("## Reliability")
		fmt.Println()
		report.WriteMarkdown(os.Stdout)
		if soakReport != "" {
			f, err := os.Create(soakReport)
			if err == nil {
				err = report.WriteMarkdown(f)
				f.Close()
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "write %s: %v\n", soakReport, err)
				code = 1
			}
		}
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// tollgateBin builds the tollgate binary once per test binary.
func tollgateBin(t testing.TB) string {
	t.Helper()
	if prebuilt != "" {
		return prebuilt
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "tollgate-resilience-")
		if binErr != nil {
			return
		}
		root, err := ModuleRoot()
		if err != nil {
			binErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binPath = filepath.Join(binDir, "tollgate")
		binErr = BuildTollgate(ctx, root, binPath)
	})
	if binErr != nil {
		t.Fatalf("build tollgate: %v", binErr)
	}
	return binPath
}

// pick returns the short or the long form of a setting.
func pick[T any](short, long T) T {
	if soak {
		return long
	}
	return short
}

// command is the line that reproduces a scenario's long form.
func command(test string) string {
	return fmt.Sprintf("TOLLGATE_SOAK=1 go test -count=1 -run '^%s$' -v ./resilience/", test)
}
