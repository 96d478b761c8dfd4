package local

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/stack"
)

// startStackWithAuthzFile starts the stack with authz reading the
// configuration file that file returns (given Tollgate's own issuer and
// JWKS URL), and the gateway running gatewayConfig (envoy/envoy.yaml
// when empty).
func startStackWithAuthzFile(t *testing.T, gatewayConfig string, file func(iss, jwksURL string) string) *stack.Stack {
	t.Helper()
	cfg, logs := loopbackStack(t)
	if gatewayConfig != "" {
		cfg.GatewayConfig = gatewayConfig
	}
	path := filepath.Join(t.TempDir(), "authz.yaml")
	cfg.AuthzConfig = func(c *authz.Config) {
		if err := os.WriteFile(path, []byte(file(c.Issuer, c.JWKSURL)), 0o644); err != nil {
			t.Error(err)
		}
		c.ConfigFile = path
	}
	return startConfigured(t, cfg, logs)
}

// call sends one request and returns the status and the response.
func call(t *testing.T, method, u, token string, body []byte, header ...string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// login registers name (unless it is the admin) and returns its token.
func login(t *testing.T, st *stack.Stack, name, password string, register bool) string {
	t.Helper()
	base := st.GatewayURL()
	if register {
		b, _ := json.Marshal(map[string]string{"name": name, "password": password})
		if got, _ := call(t, "POST", base+"/register", "", b); got != http.StatusCreated {
			t.Fatalf("register %s = %d", name, got)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/login", nil)
	req.SetBasicAuth(name, password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Token string `json:"token"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&r) != nil || r.Token == "" {
		t.Fatalf("login %s = %s", name, resp.Status)
	}
	return r.Token
}

// TestUsersAdminOnlyByAuthzRoute runs the gateway with a route table
// that passes no requirement for /users (as Istio's CUSTOM action or
// Envoy Gateway's extAuth cannot), and makes /users admin-only with an
// authz-side route instead: every path that reaches /users through the
// gateway must then be admin-only too, as authz matches the path Envoy
// sends after normalising it.
func TestUsersAdminOnlyByAuthzRoute(t *testing.T) {
	envoyYAML, err := os.ReadFile(filepath.Join("..", "..", "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const withReq = "context_extensions: {require: admin, route: users}"
	if !bytes.Contains(envoyYAML, []byte(withReq)) {
		t.Fatalf("envoy/envoy.yaml no longer has %q; update this test", withReq)
	}
	gw := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(gw, bytes.Replace(envoyYAML, []byte(withReq), []byte("context_extensions: {route: users}"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	st := startStackWithAuthzFile(t, gw, func(iss, jwksURL string) string {
		return fmt.Sprintf(`issuers:
  - name: tollgate
    issuer: %s
    jwks_url: %s
    audiences: [tollgate]
routes:
  - route: users-at-authz
    match: {path_prefix: /users}
    require: [admin]
`, iss, jwksURL)
	})
	adminName, adminPass := st.Admin()
	admin := login(t, st, adminName, adminPass, false)
	user := login(t, st, "reader", "correct-horse-battery", true)
	base := st.GatewayURL()
	reached := 0
	for _, p := range []string{"/users", "/users/", "//users", "/%2e/users", "/./users", "/users?x=1", "/users#f", "/books/../users", "/books/%2e%2e/users", "/%2fusers", "/users/.", "/USERS", "/users%2f"} {
		t.Run(p, func(t *testing.T) {
			a, _ := call(t, "GET", base+p, admin, nil)
			u, h := call(t, "GET", base+p, user, nil)
			if a == http.StatusOK {
				reached++
				// authz's 403, not the issuer's own (which checks
				// x-user-roles too, and sends no challenge).
				if u != http.StatusForbidden || !strings.Contains(h.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
					t.Errorf("GET %s as a user = %d (WWW-Authenticate %q), want authz's 403: it reaches /users, so it must be admin-only at authz", p, u, h.Get("WWW-Authenticate"))
				}
			} else if u == http.StatusOK {
				t.Errorf("GET %s = %d as admin but 200 as a user", p, a)
			}
		})
	}
	if reached == 0 {
		t.Fatalf("no path reached /users as the admin; the test proves nothing")
	}
}

// TestHydraAndTollgateIssuers trusts Tollgate's issuer and an Ory Hydra
// server side by side: Hydra's client_credentials token is allowed with
// its mapped identity, through the dev gateway and through forward-auth,
// and each issuer's token is refused on a route only the other may use.
func TestHydraAndTollgateIssuers(t *testing.T) {
	h := startHydra(t)
	st := startStackWithAuthzFile(t, "", func(iss, jwksURL string) string {
		return fmt.Sprintf(`issuers:
  - name: tollgate
    issuer: %s
    jwks_url: %s
    audiences: [tollgate]
  - name: hydra
    issuer: %s
    audiences: [books]
    algorithms: [RS256]
    headers:
      x-user-client: client_id
routes:
  - route: books-read
    match: {methods: [GET], path: /books}
    issuers: [hydra]
    scopes: [books:read]
  - route: books-write
    match: {methods: [POST], path: /books}
    issuers: [tollgate]
`, iss, jwksURL, h.issuer)
	})
	clientID, hydraTok := h.clientCredentialsToken(t, "books:read", "books")
	tollgateTok := login(t, st, "writer", "correct-horse-battery", true)
	base := st.GatewayURL()
	book := []byte(`{"name":"The Hobbit","author":"J. R. R. Tolkien","publisher":"George Allen & Unwin","book_prize":12}`)

	for _, tt := range []struct {
		name, method, token string
		want                int
	}{
		{"Hydra's token reads /books", "GET", hydraTok, http.StatusOK},
		{"Tollgate's token may not read /books (hydra only)", "GET", tollgateTok, http.StatusForbidden},
		{"Tollgate's token writes /books", "POST", tollgateTok, http.StatusCreated},
		{"Hydra's token may not write /books (tollgate only)", "POST", hydraTok, http.StatusForbidden},
	} {
		var body []byte
		if tt.method == "POST" {
			body = book
		}
		if got, _ := call(t, tt.method, base+"/books", tt.token, body); got != tt.want {
			t.Errorf("gateway: %s: %s /books = %d, want %d", tt.name, tt.method, got, tt.want)
		}
	}

	fa := "http://" + st.Addrs().AuthzHTTP + "/auth"
	got, hdr := call(t, "GET", fa, hydraTok, nil, "X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/books")
	if got != http.StatusOK {
		t.Fatalf("forward-auth GET /books with Hydra's token = %d, want 200", got)
	}
	for k, want := range map[string]string{"X-User-Id": clientID, "X-User-Issuer": "hydra", "X-User-Client": clientID} {
		if hdr.Get(k) != want {
			t.Errorf("forward-auth %s = %q, want %q", k, hdr.Get(k), want)
		}
	}
	if rm := hdr.Get("X-Envoy-Auth-Headers-To-Remove"); !strings.Contains(rm, "x-user-roles") {
		t.Errorf("forward-auth removes %q; Hydra's token has no roles, so x-user-roles must be removed", rm)
	}
	if got, _ := call(t, "GET", fa, hydraTok, nil, "X-Forwarded-Method", "POST", "X-Forwarded-Uri", "/books"); got != http.StatusForbidden {
		t.Errorf("forward-auth POST /books with Hydra's token = %d, want 403", got)
	}
	if got, _ := call(t, "GET", fa, tollgateTok, nil, "X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/books"); got != http.StatusForbidden {
		t.Errorf("forward-auth GET /books with Tollgate's token = %d, want 403", got)
	}
}
