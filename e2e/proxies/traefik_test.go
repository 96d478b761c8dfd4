package proxies

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// TestTraefikExample runs examples/traefik/traefik.yml and dynamic.yml in
// a real Traefik, the version pinned in tools/traefik, in front of the
// real stack.
func TestTraefikExample(t *testing.T) {
	traefik := findTraefik(t)
	e := startEnv(t)
	dir := t.TempDir()
	dynamic := filepath.Join(dir, "dynamic.yml")
	conf := substitute(t, repoFile("examples", "traefik", "dynamic.yml"), []replacement{
		{exampleIssuer, e.issuer.addr()},
		{exampleBooks, e.books.addr()},
		{exampleAuthz, e.authzHTTP},
	})
	if err := os.WriteFile(dynamic, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	base := startProxy(t, e, "traefik", func(port string) *exec.Cmd {
		static := substitute(t, repoFile("examples", "traefik", "traefik.yml"), []replacement{
			{"127.0.0.1:8092", "127.0.0.1:" + port},
			{"filename: examples/traefik/dynamic.yml", "filename: " + dynamic},
		})
		path := filepath.Join(dir, "traefik.yml")
		if err := os.WriteFile(path, []byte(static), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(traefik, "--configFile="+path)
		cmd.Dir = dir
		return cmd
	})
	checkProxy(t, "traefik", base, e)
	t.Run("docs session", func(t *testing.T) { runSession(t, "traefik", base, e) })
}

// findTraefik finds the Traefik that tools/traefik/build.sh builds (in
// ${XDG_CACHE_HOME:-$HOME/.cache}/tollgate/traefik/<version>/traefik, the
// version pinned in tools/traefik/go.mod), else $TOLLGATE_TRAEFIK, else
// skips, or fails under TOLLGATE_REQUIRE_ALL.
func findTraefik(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TOLLGATE_TRAEFIK"); p != "" {
		return p
	}
	gomod, err := os.ReadFile(repoFile("tools", "traefik", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/traefik/traefik/v3 (v\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("tools/traefik/go.mod pins no github.com/traefik/traefik/v3")
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "tollgate", "traefik", string(m[1]), "traefik")
	if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
		return p
	}
	testenv.Missing(t, "traefik "+string(m[1])+" not found at "+p+" (build it with tools/traefik/build.sh: about 7 minutes and 3 GB the first time; or set TOLLGATE_TRAEFIK)")
	return ""
}
