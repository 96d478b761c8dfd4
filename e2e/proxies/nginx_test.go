package proxies

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// TestNginxExample runs examples/nginx/nginx.conf in a real nginx in
// front of the real stack.
func TestNginxExample(t *testing.T) {
	nginx := findNginx(t)
	e := startEnv(t)
	dir := t.TempDir()
	base := startProxy(t, e, "nginx", func(port string) *exec.Cmd {
		conf := substitute(t, repoFile("examples", "nginx", "nginx.conf"), []replacement{
			{exampleIssuer, e.issuer.addr()},
			{exampleBooks, e.books.addr()},
			{exampleAuthz, e.authzHTTP},
			{"127.0.0.1:8090", "127.0.0.1:" + port},
		})
		path := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		// As the example's own comment runs it, with the prefix here.
		return exec.Command(nginx, "-p", dir, "-e", "stderr", "-c", path)
	})
	checkProxy(t, "nginx", base, e)
	t.Run("docs session", func(t *testing.T) { runSession(t, "nginx", base, e) })
}

// findNginx finds nginx on PATH or where Debian puts it (/usr/sbin is not
// on every user's PATH), else skips, or fails under TOLLGATE_REQUIRE_ALL.
func findNginx(t *testing.T) string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if fi, err := os.Stat("/usr/sbin/nginx"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/sbin/nginx"
	}
	return testenv.LookPath(t, "nginx", "apt-get install nginx-light")
}
