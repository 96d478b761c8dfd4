package local

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// hydraVersion is the Ory Hydra pinned in tools/hydra.
const hydraVersion = "v2.3.0"

// hydraBinary is where .ci/run (or a developer) builds the pinned Hydra:
// a cache outside the repository, keyed by version.
func hydraBinary() string {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "tollgate", "hydra", hydraVersion, "hydra")
}

// hydra is an Ory Hydra server running on loopback for one test.
type hydra struct {
	public, admin string // base URLs
	issuer        string // as its discovery document names it
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startHydra runs `hydra serve all --dev` on two loopback ports with an
// in-memory database, issuing JWT access tokens.
func startHydra(t *testing.T) *hydra {
	t.Helper()
	bin := hydraBinary()
	if _, err := os.Stat(bin); err != nil {
		testenv.Missing(t, fmt.Sprintf("Ory Hydra %s is not built at %s (go build -C tools/hydra -tags sqlite,sqlite_omit_load_extension -o %s github.com/ory/hydra/v2)", hydraVersion, bin, bin))
	}
	pub, adm := freePort(t), freePort(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`dsn: memory
serve:
  public: {host: 127.0.0.1, port: %d}
  admin: {host: 127.0.0.1, port: %d}
urls:
  self: {issuer: "http://127.0.0.1:%d"}
secrets:
  system: ["tollgate-test-system-secret-0123456789"]
strategies:
  access_token: jwt
log: {level: warn}
`, pub, adm, pub)
	cfgPath := filepath.Join(dir, "hydra.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd := exec.CommandContext(t.Context(), bin, "serve", "all", "--dev", "-c", cfgPath)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logs, logs
	// No telemetry, and nothing outside loopback.
	cmd.Env = append(os.Environ(), "SQA_OPT_OUT=true", "HOME="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start hydra: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("hydra output:\n%s", logs)
		}
	})
	h := &hydra{public: fmt.Sprintf("http://127.0.0.1:%d", pub), admin: fmt.Sprintf("http://127.0.0.1:%d", adm)}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(h.admin + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("hydra not ready after 60s: %v\n%s", err, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	getJSON(t, h.public+"/.well-known/openid-configuration", &doc)
	h.issuer = doc.Issuer
	return h
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s = %s: %s", u, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// clientCredentialsToken creates an OAuth2 client through Hydra's admin
// API and returns its client id and a client_credentials access token.
func (h *hydra) clientCredentialsToken(t *testing.T, scope, audience string) (clientID, token string) {
	t.Helper()
	const secret = "tollgate-test-client-secret-0123456789"
	body, _ := json.Marshal(map[string]any{
		"client_name":                "books-cli",
		"client_secret":              secret,
		"grant_types":                []string{"client_credentials"},
		"response_types":             []string{"token"},
		"scope":                      scope,
		"audience":                   []string{audience},
		"token_endpoint_auth_method": "client_secret_basic",
		"access_token_strategy":      "jwt",
	})
	resp, err := http.Post(h.admin+"/admin/clients", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		ClientID string `json:"client_id"`
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &c) != nil || c.ClientID == "" {
		t.Fatalf("create client = %s: %s", resp.Status, b)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}, "audience": {audience}}
	req, _ := http.NewRequest("POST", h.public+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ClientID), url.QueryEscape(secret))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &tok) != nil || strings.Count(tok.AccessToken, ".") != 2 {
		t.Fatalf("client_credentials token = %s: %s (want a JWT access token)", resp.Status, b)
	}
	return c.ClientID, tok.AccessToken
}
