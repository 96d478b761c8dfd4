package tutorial_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// script is the curl version of the flow that `helm test` and
// k8s/kind.sh run against a cluster.
var script = filepath.Join("..", "..", "charts", "tollgate", "files", "tutorial.sh")

func runScript(t *testing.T, baseURL string) (string, error) {
	t.Helper()
	testenv.LookPath(t, "curl", "apt-get install curl")
	sh := testenv.LookPath(t, "sh", "a POSIX shell")
	cmd := exec.CommandContext(t.Context(), sh, script)
	cmd.Env = append(cmd.Environ(), "BASE_URL="+baseURL, "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestHelmTestScript runs the helm test's script against the stack behind
// the dev gateway: it must pass there, and fail through a gateway that
// forwards a client's forged identity.
func TestHelmTestScript(t *testing.T) {
	s := startStack(t, nil)
	if out, err := runScript(t, s.gatewayURL); err != nil {
		t.Fatalf("tutorial.sh against the gateway: %v\n%s", err, out)
	}

	gw, _ := url.Parse(s.gatewayURL)
	bk, _ := url.Parse(s.booksURL)
	toGateway, toBooks := httputil.NewSingleHostReverseProxy(gw), httputil.NewSingleHostReverseProxy(bk)
	smuggler := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-user-id") != "" && r.Header.Get("x-access-tokens") == "" {
			toBooks.ServeHTTP(w, r)
			return
		}
		toGateway.ServeHTTP(w, r)
	}))
	defer smuggler.Close()
	out, err := runScript(t, smuggler.URL)
	if err == nil || !strings.Contains(out, "FAIL GET /books with a forged x-user-id and no token") {
		t.Errorf("tutorial.sh through a proxy that forwards forged identities = %v, want the forged-identity check to fail:\n%s", err, out)
	}
}
