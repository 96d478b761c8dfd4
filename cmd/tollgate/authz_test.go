package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tollgate-dev/tollgate/authz"
)

// parseAuthzFlags parses args as `tollgate authz` does.
func parseAuthzFlags(t *testing.T, args ...string) (authz.Config, error) {
	t.Helper()
	fs := newFlagSet("authz")
	fs.SetOutput(new(strings.Builder))
	var f authzFlags
	f.register(fs)
	if err := fs.parse(args); err != nil {
		return authz.Config{}, err
	}
	return f.config()
}

func TestAuthzFlags(t *testing.T) {
	defaults := authz.Config{
		Issuer:          "http://localhost:8080",
		Audience:        "tollgate",
		Algorithms:      []string{"ES256", "RS256", "EdDSA"},
		TokenHeaders:    []string{"authorization", "x-access-tokens", "x-access-token"},
		Leeway:          30 * time.Second,
		CacheSize:       10000,
		MinRefresh:      time.Minute,
		MaxRefresh:      15 * time.Minute,
		RefetchInterval: 30 * time.Second,
		FetchTimeout:    5 * time.Second,
		ShutdownTimeout: 15 * time.Second,

		RevocationsInterval: 2 * time.Second,
		RevocationsMaxAge:   time.Minute,
		RevocationsStale:    "serve",
		LogBuffer:           8192,
		LogAllowSample:      1,

		DPoPAlgorithms:     []string{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"},
		DPoPMaxAge:         time.Minute,
		DPoPMaxFuture:      5 * time.Second,
		DPoPReplayCapacity: 1 << 20,
		DPoPNoncePeriod:    5 * time.Minute,
	}
	defaults.MaxTokenLifetime = 24 * time.Hour
	defaults.ReloadInterval = 2 * time.Second
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want func(c *authz.Config)
	}{
		{name: "defaults", want: func(*authz.Config) {}},
		{
			name: "environment",
			env: map[string]string{
				"TOLLGATE_AUTHZ_ISSUER": "https://auth.example", "TOLLGATE_AUTHZ_JWKS_URL": "http://issuer:8081/.well-known/jwks.json",
				"TOLLGATE_AUTHZ_AUDIENCE": "books", "TOLLGATE_AUTHZ_ALGS": "ES256, PS256", "TOLLGATE_AUTHZ_TOKEN_HEADERS": "x-access-tokens",
				"TOLLGATE_AUTHZ_LEEWAY": "5s", "TOLLGATE_AUTHZ_CACHE_SIZE": "0", "TOLLGATE_AUTHZ_JWKS_MIN_REFRESH": "10s",
				"TOLLGATE_AUTHZ_JWKS_MAX_REFRESH": "1h", "TOLLGATE_AUTHZ_JWKS_REFETCH_INTERVAL": "1m", "TOLLGATE_AUTHZ_JWKS_FETCH_TIMEOUT": "2s",
			},
			want: func(c *authz.Config) {
				c.Issuer, c.JWKSURL, c.Audience = "https://auth.example", "http://issuer:8081/.well-known/jwks.json", "books"
				c.Algorithms, c.TokenHeaders = []string{"ES256", "PS256"}, []string{"x-access-tokens"}
				c.Leeway, c.CacheSize = 5*time.Second, 0
				c.MinRefresh, c.MaxRefresh, c.RefetchInterval, c.FetchTimeout = 10*time.Second, time.Hour, time.Minute, 2*time.Second
			},
		},
		{
			name: "revocation feed",
			env:  map[string]string{"TOLLGATE_AUTHZ_REVOCATIONS_URL": "http://issuer:8081/revocations", "TOLLGATE_AUTHZ_REVOCATIONS_STALE": "deny"},
			args: []string{"-revocations-interval", "1s", "-revocations-max-age", "10s"},
			want: func(c *authz.Config) {
				c.RevocationsURL, c.RevocationsStale = "http://issuer:8081/revocations", "deny"
				c.RevocationsInterval, c.RevocationsMaxAge = time.Second, 10*time.Second
			},
		},
		{
			name: "flag beats environment",
			env:  map[string]string{"TOLLGATE_AUTHZ_CACHE_SIZE": "5", "TOLLGATE_AUTHZ_LEEWAY": "1m"},
			args: []string{"-cache-size", "7", "-leeway", "0s"},
			want: func(c *authz.Config) { c.CacheSize, c.Leeway = 7, 0 },
		},
		{
			name: "max token lifetime",
			env:  map[string]string{"TOLLGATE_AUTHZ_MAX_TOKEN_LIFETIME": "2h"},
			want: func(c *authz.Config) { c.MaxTokenLifetime = 2 * time.Hour },
		},
		{
			name: "max token lifetime flag",
			env:  map[string]string{"TOLLGATE_AUTHZ_MAX_TOKEN_LIFETIME": "2h"},
			args: []string{"-max-token-lifetime", "45m"},
			want: func(c *authz.Config) { c.MaxTokenLifetime = 45 * time.Minute },
		},
		{
			name: "dpop",
			env: map[string]string{"TOLLGATE_AUTHZ_DPOP_ALGORITHMS": "ES256,EdDSA", "TOLLGATE_AUTHZ_DPOP_NONCES": "true",
				"TOLLGATE_AUTHZ_DPOP_PUBLIC_ORIGINS": "books.example.com=https://books.example.com"},
			args: []string{"-dpop-max-age", "30s", "-dpop-max-future", "1s", "-dpop-replay-dsn", "postgres://authz@db/replay",
				"-dpop-nonce-secret-file", "/etc/tollgate/dpop/nonce", "-dpop-nonce-period", "1m",
				"-dpop-public-origin", "books.internal:8080=https://books.example.com:8443"},
			want: func(c *authz.Config) {
				c.DPoPAlgorithms, c.DPoPMaxAge, c.DPoPMaxFuture = []string{"ES256", "EdDSA"}, 30*time.Second, time.Second
				c.DPoPReplayDSN, c.DPoPNonces, c.DPoPNonceSecretFile, c.DPoPNoncePeriod = "postgres://authz@db/replay", true, "/etc/tollgate/dpop/nonce", time.Minute
				c.DPoPPublicOrigins = map[string]string{"books.internal:8080": "https://books.example.com:8443"}
			},
		},
		{
			name: "configuration file",
			env:  map[string]string{"TOLLGATE_AUTHZ_CONFIG": "/etc/tollgate/authz/authz.yaml"},
			args: []string{"-config-reload-interval", "5s"},
			want: func(c *authz.Config) {
				c.ConfigFile, c.ReloadInterval = "/etc/tollgate/authz/authz.yaml", 5*time.Second
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			got, err := parseAuthzFlags(t, tc.args...)
			if err != nil {
				t.Fatalf("parse %v: %v", tc.args, err)
			}
			want := defaults
			want.Algorithms = append([]string(nil), defaults.Algorithms...)
			tc.want(&want)
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(authz.Config{}, "HTTPClient")); diff != "" {
				t.Errorf("authz config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAuthzFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-jwks-refetch-interval", "0s"},
		{"-revocations-url", "http://issuer/revocations", "-revocations-stale", "sometimes"},
		{"-revocations-url", "http://issuer/revocations", "-revocations-interval", "0s"},
		{"-jwks-min-refresh", "-1s"},
		{"-jwks-fetch-timeout", "0"},
		{"-max-token-lifetime", "0s"},
		{"-max-token-lifetime", "-1h"},
		{"-audience", ""},
		{"-cache-size", "many"},
		{"extra"},
	} {
		if _, err := parseAuthzFlags(t, args...); err == nil {
			t.Errorf("tollgate authz %q parsed, want an error", args)
		}
	}
	// Refused by authz.New, through the command.
	for _, args := range [][]string{
		{"-algs", "HS256"},
		{"-algs", ""},
		{"-jwks-min-refresh", "2h"},
		{"-issuer", "not a url"},
	} {
		err := serveAuthz(context.Background(), append(args, "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-log-level", "error"), nil)
		if err == nil {
			t.Errorf("tollgate authz %q started, want an error", args)
		}
	}
}

// TestAuthzCommand runs `tollgate authz` on loopback ports against a
// JWKS served here: it becomes ready, answers a Check, and stops cleanly
// as SIGTERM would.
func TestAuthzCommand(t *testing.T) {
	fx := newExplainFixture(t)
	key, kid, jwks := fx.key, fx.kid, fx.jwks

	ctx, cancel := context.WithCancel(context.Background())
	type addrs struct{ grpc, http net.Addr }
	addrc := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveAuthz(ctx, []string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0",
			"-issuer", "https://issuer.test", "-jwks-url", jwks.URL, "-log-level", "error"},
			func(g, h net.Addr) { addrc <- addrs{g, h} })
	}()
	var a addrs
	select {
	case a = <-addrc:
	case err := <-done:
		t.Fatalf("authz exited: %v", err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("authz stopped with %v, want nil", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + a.http.String() + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("authz did not become ready")
		}
		time.Sleep(20 * time.Millisecond)
	}

	conn, err := grpc.NewClient(a.grpc.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: authz.AuthorizationService})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v; want SERVING", hr.GetStatus(), err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": "https://issuer.test", "aud": "tollgate", "sub": "u-1", "roles": []string{"user"},
		"exp": time.Now().Add(time.Hour).Unix(),
	})
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		header string
		want   int32
	}{
		{"valid token", "Bearer " + signed, 0},
		{"tampered token", "Bearer " + signed[:len(signed)-4] + "AAAA", 16},
	} {
		resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/books", Headers: map[string]string{"authorization": tc.header},
			}},
		}})
		if err != nil {
			t.Fatalf("Check(%s): %v", tc.name, err)
		}
		if got := resp.GetStatus().GetCode(); got != tc.want {
			t.Errorf("Check(%s) = status %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestAuthzBadConfigFile: a bad -config file stops authz at start with
// the file's error, naming the line.
func TestAuthzBadConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(path, []byte("issuers:\n  - name: a\n    issuer: https://a.example\n    audiencez: [x]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := serveAuthz(context.Background(), []string{"-config", path, "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"}, nil)
	if err == nil || !strings.Contains(err.Error(), path+`:4: unknown key "audiencez"`) {
		t.Fatalf("tollgate authz -config (misspelt key) = %v, want FILE:4 naming the key", err)
	}
}
