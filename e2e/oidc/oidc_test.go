package oidc

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testenv"
	"github.com/tollgate-dev/tollgate/issuer"
	"github.com/tollgate-dev/tollgate/stack"
)

// result is what client.mjs prints.
type result struct {
	Issuer               string   `json:"issuer"`
	TokenEndpoint        string   `json:"token_endpoint"`
	RevocationEndpoint   string   `json:"revocation_endpoint"`
	GrantTypes           []string `json:"grant_types"`
	Rotated              bool     `json:"rotated"`
	TokenType            string   `json:"token_type"`
	FreshBefore          int      `json:"fresh_before"`
	RevokedAccess        int      `json:"revoked_access"`
	RevokedAccessMS      int      `json:"revoked_access_ms"`
	FreshAfterRevocation int      `json:"fresh_after_revocation"`
	UsedRefresh          string   `json:"used_refresh"`
	FamilyRefresh        string   `json:"family_refresh"`
	FamilyAccess         int      `json:"family_access"`
	NewSession           int      `json:"new_session"`
}

// TestOpenIDClient runs client.mjs with node against a fresh stack. The
// package comes from package-lock.json (npm ci in this directory; .ci/run
// and make test do it).
func TestOpenIDClient(t *testing.T) {
	node := nodeWith(t, "openid-client")
	st := startStack(t)
	const name, password = "oidc-user", "relying party passphrase"
	register(t, st, name, password)
	out := runNode(t, node, "client.mjs", st, name, password)
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("client.mjs printed %q: %v", out, err)
	}
	t.Logf("openid-client: %s", bytes.TrimSpace(out))

	checks := []struct {
		name      string
		got, want any
	}{
		{"discovery issuer", r.Issuer, st.IssuerURL()},
		{"discovery token_endpoint", r.TokenEndpoint, st.IssuerURL() + "/token"},
		{"discovery revocation_endpoint", r.RevocationEndpoint, st.IssuerURL() + "/revoke"},
		{"refresh_token grant advertised", slices.Contains(r.GrantTypes, "refresh_token"), true},
		{"each refresh rotates the refresh token", r.Rotated, true},
		{"token_type", strings.ToLower(r.TokenType), "bearer"},
		{"GET /books(fresh access token)", r.FreshBefore, 200},
		{"GET /books(revoked access token)", r.RevokedAccess, 401},
		{"GET /books(fresh access token, after another's revocation)", r.FreshAfterRevocation, 200},
		{"refresh(used refresh token)", r.UsedRefresh, "invalid_grant"},
		{"refresh(latest refresh token, after reuse)", r.FamilyRefresh, "invalid_grant"},
		{"GET /books(latest access token, after reuse)", r.FamilyAccess, 401},
		{"GET /books(new session)", r.NewSession, 200},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// nodeWith returns node, or skips (fails under TOLLGATE_REQUIRE_ALL=1)
// when node or one of the packages is missing.
func nodeWith(t *testing.T, packages ...string) string {
	t.Helper()
	node := testenv.LookPath(t, "node", "apt-get install nodejs npm")
	for _, p := range packages {
		if _, err := os.Stat(filepath.Join("node_modules", p, "package.json")); err != nil {
			testenv.Missing(t, p+" is not installed in e2e/oidc (run: cd e2e/oidc && npm ci)")
		}
	}
	return node
}

// startStack starts a fresh stack on loopback ports, stopped when the
// test ends (its logs shown if the test failed).
func startStack(t *testing.T) *stack.Stack {
	t.Helper()
	logs := &syncBuffer{}
	cfg := stack.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.GatewayConfig = filepath.Join("..", "..", "envoy", "envoy.yaml")
	cfg.GatewayAddr, cfg.GatewayAdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.IssuerAddr, cfg.BooksAddr, cfg.AuthzGRPCAddr, cfg.AuthzHTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.ShutdownTimeout = 5 * time.Second
	st, err := stack.Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("stack.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st.Shutdown(ctx)
		if t.Failed() {
			t.Logf("stack logs:\n%s", logs)
		}
	})
	return st
}

// register creates the user the script logs in as.
func register(t *testing.T, st *stack.Stack, name, password string) {
	t.Helper()
	res, err := http.Post(st.GatewayURL()+"/register", "application/json",
		strings.NewReader(`{"name":"`+name+`","password":"`+password+`"}`))
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("register = %v %v, want 201", res, err)
	}
	res.Body.Close()
}

// runNode runs script with node against st as the user name and returns
// what it printed on stdout.
func runNode(t *testing.T, node, script string, st *stack.Stack, name, password string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--dns-result-order=ipv4first", script)
	cmd.Env = append(os.Environ(),
		"TOLLGATE_ISSUER="+st.IssuerURL(),
		"TOLLGATE_GATEWAY="+st.GatewayURL(),
		"TOLLGATE_USER="+name,
		"TOLLGATE_PASSWORD="+password,
		"TOLLGATE_CLIENT_ID="+issuer.DefaultClient,
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\nstdout: %s\nstderr: %s", script, err, out, stderr.String())
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for the stack's concurrent logging.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
