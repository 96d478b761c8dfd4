package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/issuer"
)

// parseIssuerFlags parses args as `tollgate issuer` does.
func parseIssuerFlags(t *testing.T, args ...string) (issuer.Config, error) {
	t.Helper()
	fs := newFlagSet("issuer")
	fs.SetOutput(new(strings.Builder))
	var f issuerFlags
	f.register(fs)
	if err := fs.parse(args); err != nil {
		return issuer.Config{}, err
	}
	return f.config()
}

func TestIssuerFlags(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(pwFile, []byte("from-a-secret-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "dpop-nonce-secret")
	if err := os.WriteFile(secretFile, []byte(strings.Repeat("k", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	hashes := 2 * runtime.NumCPU()
	defaults := issuer.Config{
		DataDir:             "data",
		DB:                  "data/issuer.db",
		IssuerURL:           "http://localhost:8080",
		Audience:            "tollgate",
		SigningAlg:          "ES256",
		KeyActivationDelay:  10 * time.Minute,
		KeyPollInterval:     5 * time.Second,
		TokenTTL:            45 * time.Minute,
		JWKSMaxAge:          5 * time.Minute,
		AdminName:           "admin",
		Argon2:              issuer.MinArgon2Params,
		MaxConcurrentHashes: hashes,
		MaxQueuedHashes:     4 * hashes,
		HashQueueTimeout:    2 * time.Second,
		TrustedProxies:      loopback,
		TrustedHops:         1,
		Throttle:            issuer.DefaultThrottle(),
		SessionIdleTTL:      14 * 24 * time.Hour,
		SessionMaxTTL:       90 * 24 * time.Hour,
		Clients:             []string{"tollgate-cli"},
		LoginClient:         "tollgate-cli",
		ShutdownTimeout:     15 * time.Second,
		DPoP: issuer.DPoP{
			Algorithms: []string{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"},
			MaxAge:     time.Minute,
			MaxFuture:  5 * time.Second,
		},
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want func(c *issuer.Config)
	}{
		{"defaults", nil, nil, func(c *issuer.Config) {}},
		{"environment", map[string]string{
			"TOLLGATE_DATA_DIR":             "/var/lib/tollgate",
			"TOLLGATE_ISSUER_URL":           "https://auth.example.test",
			"TOLLGATE_AUDIENCE":             "books",
			"TOLLGATE_SIGNING_ALG":          "EdDSA",
			"TOLLGATE_KEY_DIR":              "/etc/tollgate/keys",
			"TOLLGATE_KEY_ACTIVATION_DELAY": "20m",
			"TOLLGATE_TOKEN_TTL":            "15m",
			"TOLLGATE_JWKS_MAX_AGE":         "1m",
			"TOLLGATE_REGISTRATION":         "false",
			"TOLLGATE_ADMIN_USERS":          "alice, bob,,",
			"TOLLGATE_ADMIN_NAME":           "root",
			"TOLLGATE_ADMIN_PASSWORD":       "from-the-environment",
		}, nil, func(c *issuer.Config) {
			c.DataDir, c.DB = "/var/lib/tollgate", "/var/lib/tollgate/issuer.db"
			c.IssuerURL, c.Audience, c.SigningAlg = "https://auth.example.test", "books", "EdDSA"
			c.KeyDir, c.KeyActivationDelay, c.TokenTTL, c.JWKSMaxAge = "/etc/tollgate/keys", 20*time.Minute, 15*time.Minute, time.Minute
			c.DisableRegistration = true
			c.AdminUsers, c.AdminName, c.AdminPassword = []string{"alice", "bob"}, "root", "from-the-environment"
		}},
		{"flag beats environment", map[string]string{"TOLLGATE_TOKEN_TTL": "15m", "TOLLGATE_ISSUER_DB": "postgres://db/issuer"},
			[]string{"-token-ttl", "30m", "-db", "/tmp/x.db"}, func(c *issuer.Config) {
				c.TokenTTL, c.DB = 30*time.Minute, "/tmp/x.db"
			}},
		{"admin password file, newline trimmed", nil, []string{"-admin-password-file", pwFile}, func(c *issuer.Config) {
			c.AdminPassword = "from-a-secret-file"
		}},
		{"zero delay and max-age mean none", nil, []string{"-key-activation-delay", "0", "-jwks-max-age", "0"}, func(c *issuer.Config) {
			c.KeyActivationDelay, c.JWKSMaxAge = 0, 0
		}},
		{"trusted proxies", map[string]string{"TOLLGATE_ISSUER_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"}, nil, func(c *issuer.Config) {
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")}
		}},
		{"no trusted proxies", nil, []string{"-trusted-proxies", ""}, func(c *issuer.Config) {
			c.TrustedProxies = []netip.Prefix{}
		}},
		{"trusted hops behind a load balancer", map[string]string{"TOLLGATE_ISSUER_TRUSTED_HOPS": "2"}, nil, func(c *issuer.Config) {
			c.TrustedHops = 2
		}},
		{"sessions", map[string]string{"TOLLGATE_REFRESH": "false", "TOLLGATE_CLIENTS": "web, tollgate-cli"},
			[]string{"-session-idle-ttl", "24h", "-session-max-ttl", "720h"}, func(c *issuer.Config) {
				c.DisableRefresh, c.SessionIdleTTL, c.SessionMaxTTL = true, 24*time.Hour, 720*time.Hour
				c.Clients, c.LoginClient = []string{"web", "tollgate-cli"}, "web"
			}},
		{"dpop", map[string]string{"TOLLGATE_DPOP_ALGORITHMS": "ES256, EdDSA", "TOLLGATE_DPOP_REQUIRED": "true", "TOLLGATE_DPOP_CLIENTS": "web,"},
			[]string{"-dpop-max-age", "30s", "-dpop-max-future", "0s", "-dpop-nonces", "-dpop-nonce-secret-file", secretFile}, func(c *issuer.Config) {
				c.DPoP = issuer.DPoP{
					Algorithms: []string{"ES256", "EdDSA"}, MaxAge: 30 * time.Second, Nonces: true,
					NonceSecret: []byte(strings.Repeat("k", 32)), Required: true, RequiredClients: []string{"web"},
				}
			}},
		{"argon2 costs", nil, []string{"-argon2-memory", "65536", "-argon2-iterations", "3"}, func(c *issuer.Config) {
			c.Argon2 = issuer.Argon2Params{Memory: 65536, Iterations: 3, Parallelism: 1}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			got, err := parseIssuerFlags(t, tc.args...)
			if err != nil {
				t.Fatalf("parse %v: %v", tc.args, err)
			}
			want := defaults
			tc.want(&want)
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
				cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Now" }, cmp.Ignore())); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIssuerFlagErrors(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("\n"), 0o600)
	shortSecret := filepath.Join(t.TempDir(), "short")
	os.WriteFile(shortSecret, []byte("too short\n"), 0o600)
	for _, args := range [][]string{
		{"-admin-password-file", pwFile},
		{"-admin-password-file", "/nonexistent", "-admin-password", "x"},
		{"-admin-password-file", "/nonexistent"},
		{"-trusted-proxies", "not-a-cidr"},
		{"-trusted-hops", "0"},
		{"-trusted-hops", "-1"},
		{"-trusted-hops", "two"},
		{"-key-activation-delay", "-1m"},
		{"-argon2-parallelism", "300"},
		{"-argon2-memory", "-5"},
		{"-token-ttl", "soon"},
		{"-dpop-max-age", "soon"},
		{"-dpop-nonces", "-dpop-nonce-secret-file", shortSecret},
		{"-dpop-nonces", "-dpop-nonce-secret-file", "/nonexistent"},
		{"extra-argument"},
	} {
		if _, err := parseIssuerFlags(t, args...); err == nil {
			t.Errorf("parse %q succeeded, want an error", args)
		}
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir() // keygen writes into a directory that exists
	if err := runKeygen([]string{"-alg", "EdDSA", "-out", dir}); err != nil {
		t.Fatalf("keygen: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
	if len(files) != 1 {
		t.Fatalf("keygen wrote %v, want one .pem file", files)
	}
	data, _ := os.ReadFile(files[0])
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("key file is not a PKCS #8 PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := key.(ed25519.PrivateKey); !ok {
		t.Errorf("key type %T, want ed25519", key)
	}
	if fi, _ := os.Stat(files[0]); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if err := runKeygen([]string{"-alg", "HS256", "-out", dir}); err == nil {
		t.Error("keygen -alg HS256 succeeded, want an error")
	}
}

// TestIssuerCommand runs `tollgate issuer` on a loopback port: register,
// log in, fetch the JWKS, then stop it as SIGTERM would.
func TestIssuerCommand(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveIssuer(ctx, []string{"-addr", "127.0.0.1:0", "-data-dir", dir, "-log-level", "error"},
			func(a net.Addr) { addrc <- a })
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a.String()
	case err := <-done:
		t.Fatalf("issuer exited: %v", err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("issuer stopped with %v, want nil", err)
		}
	}()

	res, err := http.Post(base+"/register", "application/json", strings.NewReader(`{"name":"alain","password":"correct-horse-battery"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("register = %d, want 201", res.StatusCode)
	}
	req, _ := http.NewRequest("POST", base+"/login", nil)
	req.SetBasicAuth("alain", "correct-horse-battery")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Token     string `json:"token"`
		ExpiresIn int    `json:"expires_in"`
	}
	json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	if res.StatusCode != 200 || tok.Token == "" || tok.ExpiresIn != 2700 {
		t.Fatalf("login = %d %+v, want 200 with a 2700s token", res.StatusCode, tok)
	}
	for _, path := range []string{"/.well-known/jwks.json", "/.well-known/openid-configuration", "/readyz", "/healthz", "/metrics"} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("GET %s = %d, want 200", path, res.StatusCode)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "issuer.db")); err != nil {
		t.Errorf("no database in the data directory: %v", err)
	}
	keys, _ := filepath.Glob(filepath.Join(dir, "keys", "*.pem"))
	if len(keys) != 1 {
		t.Errorf("generated keys = %v, want one", keys)
	}
}
