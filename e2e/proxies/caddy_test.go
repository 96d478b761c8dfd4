package proxies

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// TestCaddyExample runs examples/caddy/Caddyfile in a real Caddy in front
// of the real stack.
func TestCaddyExample(t *testing.T) {
	caddy := testenv.LookPath(t, "caddy", "apt-get install caddy")
	e := startEnv(t)
	dir := t.TempDir()
	base := startProxy(t, e, "caddy", func(port string) *exec.Cmd {
		conf := substitute(t, repoFile("examples", "caddy", "Caddyfile"), []replacement{
			{exampleIssuer, e.issuer.addr()},
			{exampleBooks, e.books.addr()},
			{exampleAuthz, e.authzHTTP},
			{":8091", ":" + port},
		})
		path := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(caddy, "run", "--adapter", "caddyfile", "--config", path)
		// Caddy keeps state under $HOME or the XDG directories; keep it here.
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		return cmd
	})
	checkProxy(t, "caddy", base, e)
	t.Run("docs session", func(t *testing.T) { runSession(t, "caddy", base, e) })
}
