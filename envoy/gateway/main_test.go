package gateway

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/envoy"
)

// TestMain fails the package's tests if any goroutine outlives them: a
// closed gateway must not leave health checks, gRPC connections or
// servers behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// shippedConfig is the bootstrap the project ships, which the gateway
// must run as it is.
const shippedConfig = "../envoy.yaml"

func readShipped(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// edit returns the shipped config with old replaced by new; old must occur
// exactly once, so a test cannot silently stop testing anything when the
// file changes.
func edit(t testing.TB, old, new string) []byte {
	t.Helper()
	s := readShipped(t)
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("edit: %q occurs %d times in %s, want 1", old, n, shippedConfig)
	}
	return []byte(strings.Replace(s, old, new, 1))
}

func isConfigError(err error) bool {
	var ce *envoy.ConfigError
	return errors.As(err, &ce)
}

func TestShippedConfigIsSupported(t *testing.T) {
	b, err := envoy.LoadFile(shippedConfig)
	if err != nil {
		t.Fatalf("LoadFile(%s) = %v", shippedConfig, err)
	}
	if err := Supported(b); err != nil {
		t.Fatalf("Supported(%s) = %v; the dev gateway must run the shipped config", shippedConfig, err)
	}
}

// FuzzLoadConfig feeds arbitrary YAML to the loader and the gateway
// builder: they must return an error or a gateway, never panic.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(readShipped(f)))
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("admin: {}\n"))
	f.Add([]byte("static_resources: {listeners: [{name: a}]}\n"))
	f.Add([]byte("{\"static_resources\": {\"clusters\": [{\"name\": \"x\", \"type\": \"STATIC\"}]}}"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := envoy.ValidateYAML(data)
		if err != nil {
			return
		}
		if err := Supported(b); err != nil {
			var ue *UnsupportedError
			if !errors.As(err, &ue) && !isConfigError(err) {
				t.Fatalf("Supported error %v is neither *UnsupportedError nor *ConfigError", err)
			}
		}
		g, err := New(b, DefaultOptions())
		if err == nil {
			g.Close()
		}
	})
}
