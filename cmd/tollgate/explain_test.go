package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/authz"
)

// explainFixture is a JWKS server with one ES256 key and a signer, for
// the explain and authz command tests.
type explainFixture struct {
	jwks *httptest.Server
	key  *ecdsa.PrivateKey
	kid  string
}

func newExplainFixture(t *testing.T) *explainFixture {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := jwk.FromRaw(key.Public())
	tp, _ := pub.Thumbprint(crypto.SHA256)
	kid := base64.RawURLEncoding.EncodeToString(tp)
	pub.Set(jwk.KeyIDKey, kid)
	pub.Set(jwk.AlgorithmKey, jwa.ES256)
	set := jwk.NewSet()
	set.AddKey(pub)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(jwks.Close)
	return &explainFixture{jwks: jwks, key: key, kid: kid}
}

func (f *explainFixture) sign(t *testing.T, exp time.Duration, roles ...string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": "https://issuer.test", "aud": "tollgate", "sub": "u-1", "roles": roles,
		"exp": time.Now().Add(exp).Unix(), "iat": time.Now().Add(-time.Hour).Unix(),
	})
	tok.Header["kid"] = f.kid
	s, err := tok.SignedString(f.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestExplainCommand pins `tollgate authz explain` offline and against a
// running authz: the text and JSON forms, the token from an argument or
// stdin, and clear errors.
func TestExplainCommand(t *testing.T) {
	f := newExplainFixture(t)
	cfg := authz.DefaultConfig()
	cfg.Issuer, cfg.JWKSURL, cfg.Explain = "https://issuer.test", f.jwks.URL, true
	srv, err := authz.New(context.Background(), cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	running := httptest.NewServer(srv.HTTPHandler())
	defer running.Close()
	off := authz.DefaultConfig()
	off.Issuer, off.JWKSURL = "https://issuer.test", f.jwks.URL
	plain := httptest.NewServer(func() http.Handler {
		s, _ := authz.New(context.Background(), off, nil, nil)
		t.Cleanup(func() { s.Close() })
		return s.HTTPHandler()
	}())
	defer plain.Close()

	good := f.sign(t, time.Hour, "admin")
	expired := f.sign(t, -(3*time.Minute + 12*time.Second))
	offline := []string{"-issuer", "https://issuer.test", "-jwks-url", f.jwks.URL, "-leeway", "0s"}
	// The same issuer from a configuration file, whose route makes
	// /users admin-only and whose default is any valid token.
	conf := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(conf, []byte(`issuers:
  - name: test
    issuer: https://issuer.test
    jwks_url: `+f.jwks.URL+`
    audiences: [tollgate]
routes:
  - match: {path: /users}
    require: [admin]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		args    []string
		stdin   string
		want    []string // lines of the output
		wantErr string
	}{
		{"offline allow", append(offline, "-policy", "require=admin", good), "",
			[]string{"request: GET /\n", "decision: allow", "status: 200", "issuer: https://issuer.test", "  sub: u-1", "  x-user-roles: admin"}, ""},
		{"offline, the request given", append(offline, "-method", "DELETE", "-path", "/books/7?x=secret", good), "",
			[]string{"request: DELETE /books/7\n", "decision: allow"}, ""},
		{"offline expired, token on stdin", offline, expired + "\n",
			[]string{"decision: deny", "reason: expired 3m1", "status: 401"}, ""},
		{"remote missing role", []string{"-authz", running.URL, "-policy", "require=admin", f.sign(t, time.Hour, "user")}, "",
			[]string{"decision: deny", "reason: token lacks role admin (the route requires admin; the token has: user)", "status: 403"}, ""},
		{"remote JSON", []string{"-authz", running.URL, "-json", good}, "",
			[]string{`  "decision": "allow",`, `  "code": "verified",`}, ""},
		{"remote without -explain", []string{"-authz", plain.URL, good}, "", nil, "has no POST /explain: start authz with -explain"},
		{"offline from a config file, route allows", []string{"-config", conf, "-path", "/users", good}, "",
			[]string{"request: GET /users\n", "decision: allow", "issuer: test"}, ""},
		{"offline from a config file, route denies", []string{"-config", conf, "-path", "/users", f.sign(t, time.Hour, "user")}, "",
			[]string{"decision: deny", "status: 403", `reason: token lacks role admin (authz's`, "the token has: user)"}, ""},
		{"offline from a config file, default route", []string{"-config", conf, "-path", "/books", f.sign(t, time.Hour, "user")}, "",
			[]string{"decision: allow"}, ""},
		{"config file and -authz", []string{"-authz", running.URL, "-config", conf, good}, "", nil, "exclude"},
		{"no key source", []string{good}, "", nil, "say where the keys are"},
		{"both key sources", []string{"-authz", running.URL, "-issuer", "https://issuer.test", good}, "", nil, "-authz excludes -issuer"},
		{"bad policy flag", []string{"-authz", running.URL, "-policy", "admin", good}, "", nil, `"admin" is not KEY=VALUE`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			err := runExplain(context.Background(), tc.args, strings.NewReader(tc.stdin), &out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("explain(%s) error = %v, want one containing %q", tc.name, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("explain(%s) = %v", tc.name, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("explain(%s) output lacks %q:\n%s", tc.name, w, out.String())
				}
			}
			if strings.Contains(out.String(), good[len(good)-20:]) || strings.Contains(out.String(), expired[len(expired)-20:]) {
				t.Errorf("explain(%s) output repeats the token:\n%s", tc.name, out.String())
			}
		})
	}
}
