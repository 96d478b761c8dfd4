package authz

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/internal/pgtest"
)

// deniedHeaders lists a denial's headers as "name: value", in order.
func deniedHeaders(resp *authv3.CheckResponse) []string {
	var out []string
	for _, h := range resp.GetDeniedResponse().GetHeaders() {
		v := h.GetHeader().GetKey() + ": " + h.GetHeader().GetValue()
		if h.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			v = "+" + v
		}
		out = append(out, v)
	}
	return out
}

const (
	challengeProof = "www-authenticate: DPoP " + dpopAlgs + `, error="invalid_dpop_proof"`
	challengeToken = "www-authenticate: DPoP " + dpopAlgs + `, error="invalid_token"`
	bearerPlain    = `+www-authenticate: Bearer realm="tollgate"`
	contentJSON    = "content-type: application/json"
)

// The challenges of DPoP denials, header by header, as Envoy gets them:
// the DPoP challenge first (overwriting), the Bearer one added beside it
// on routes that also take bearer tokens, none on dpop: required routes.
func TestDPoPChallenges(t *testing.T) {
	e := newTestEnv(t, Config{CacheSize: 100})
	e.waitReady()
	key := dpopKey(t)
	bound := e.key.sign(t, boundClaims(key, "u-1", "user"), nil)
	unbound := e.key.sign(t, claimsFor("u-1", "user"), nil)
	expired := boundClaims(key, "u-1", "user")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	expiredTok := e.key.sign(t, expired, nil)
	required := map[string]string{"dpop": "required"}
	tests := []struct {
		name    string
		headers map[string]string
		ext     map[string]string
		want    []string
		body    string // the message of the JSON body
	}{
		{"no token", nil, nil, []string{`www-authenticate: Bearer realm="tollgate"`, "+www-authenticate: DPoP " + dpopAlgs, contentJSON}, "a valid token is missing"},
		{"no token, dpop: required", nil, required, []string{"www-authenticate: DPoP " + dpopAlgs, contentJSON}, "a valid token is missing"},
		{"bad proof", dpopHeaders(bound, "x.y.z"), nil, []string{challengeProof, bearerPlain, contentJSON}, "DPoP proof is invalid"},
		{"bad proof, dpop: required", dpopHeaders(bound, "x.y.z"), required, []string{challengeProof, contentJSON}, "DPoP proof is invalid"},
		{"expired token under DPoP", dpopHeaders(expiredTok, proof(t, key, "GET", "http://books.example/books", expiredTok, dpop.ProofOptions{})), nil, []string{challengeToken, bearerPlain, contentJSON}, "token is invalid"},
		{"bound token as Bearer", bearer(bound), nil, []string{challengeToken, `+www-authenticate: Bearer realm="tollgate", error="invalid_token"`, contentJSON}, "token is invalid"},
		{"bearer token on a dpop: required route", bearer(unbound), required, []string{challengeToken, contentJSON}, "token is invalid"},
		{"invalid bearer token: unchanged", bearer("x.y.z"), nil, []string{`www-authenticate: Bearer realm="tollgate", error="invalid_token"`, contentJSON}, "token is invalid"},
		{"insufficient scope under DPoP", dpopHeaders(bound, proof(t, key, "GET", "http://books.example/books", bound, dpop.ProofOptions{})), map[string]string{"require": "admin"},
			[]string{"www-authenticate: DPoP " + dpopAlgs + `, error="insufficient_scope"`, contentJSON}, "insufficient permissions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.check(envoyRequest("GET", "/books", tt.headers, tt.ext))
			if diff := cmp.Diff(tt.want, deniedHeaders(got)); diff != "" {
				t.Errorf("Check(%s) headers (-want +got):\n%s", tt.name, diff)
			}
			if want := `{"message":"` + tt.body + `"}` + "\n"; got.GetDeniedResponse().GetBody() != want {
				t.Errorf("Check(%s) body = %q, want %q", tt.name, got.GetDeniedResponse().GetBody(), want)
			}
		})
	}
}

// A bound token with a fresh proof is allowed, by gRPC and by every
// forward-auth flavour, and the proof header never reaches the upstream.
// A bearer token with a stray proof on a route that does not require
// DPoP is a bearer token: the proof is ignored, and removed too.
func TestDPoPAllow(t *testing.T) {
	e := newTestEnv(t, Config{CacheSize: 100})
	e.waitReady()
	ts := httptest.NewServer(e.srv.HTTPHandler())
	t.Cleanup(ts.Close)
	key := dpopKey(t)
	bound := e.key.sign(t, boundClaims(key, "u-1", "user"), nil)
	unbound := e.key.sign(t, claimsFor("u-2", "user"), nil)
	p := func(method, url, tok string) string { return proof(t, key, method, url, tok, dpop.ProofOptions{}) }

	grpc := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		ext     map[string]string
	}{
		{"bound token", "GET", "/books", dpopHeaders(bound, p("GET", "http://books.example/books", bound)), nil},
		{"query and fragment are not in htu", "GET", "/books?page=2", dpopHeaders(bound, p("GET", "http://books.example/books#x", bound)), nil},
		{"scheme case", "POST", "/books", map[string]string{"authorization": "dpop " + bound, "dpop": p("POST", "HTTP://Books.Example:80/books", bound)}, nil},
		{"dpop: required", "DELETE", "/books/3", dpopHeaders(bound, p("DELETE", "http://books.example/books/3", bound)), map[string]string{"dpop": "required"}},
		{"bearer token with a stray proof", "GET", "/books", map[string]string{"authorization": "Bearer " + unbound, "dpop": "garbage"}, nil},
	}
	for _, tt := range grpc {
		t.Run("gRPC/"+tt.name, func(t *testing.T) {
			got := e.check(envoyRequest(tt.method, tt.path, tt.headers, tt.ext))
			ok := got.GetOkResponse()
			if ok == nil {
				t.Fatalf("Check(%s) = %s, want OK (%v)", tt.name, describe(got), e.logs.lastCheck(t)["err"])
			}
			if rm := ok.GetHeadersToRemove(); !strings.Contains(","+strings.Join(rm, ",")+",", ",dpop,") {
				t.Errorf("Check(%s) headers_to_remove = %q, want dpop among them", tt.name, rm)
			}
		})
	}

	fa := []struct {
		name    string
		path    string
		headers [][2]string
	}{
		{"Envoy http_service", "/auth/books?x=1", [][2]string{{"Authorization", "DPoP " + bound}, {"DPoP", p("GET", ts.URL+"/books", bound)}}},
		{"Traefik", "/auth", [][2]string{{"Authorization", "DPoP " + bound}, {"X-Forwarded-Method", "PUT"}, {"X-Forwarded-Proto", "https"},
			{"X-Forwarded-Host", "books.example"}, {"X-Forwarded-Uri", "/books/7"}, {"DPoP", p("PUT", "https://books.example/books/7", bound)}}},
		{"nginx", "/auth", [][2]string{{"Authorization", "DPoP " + bound}, {"X-Original-Method", "PATCH"}, {"X-Original-URI", "/books/8?y=2"},
			{"X-Forwarded-Proto", "https"}, {"Host", "books.example"}, {"DPoP", p("PATCH", "https://books.example/books/8", bound)}}},
		{"x-tollgate-dpop: required", "/auth/books", [][2]string{{"Authorization", "DPoP " + bound}, {"X-Tollgate-Dpop", "required"}, {"DPoP", p("GET", ts.URL+"/books", bound)}}},
	}
	for _, tt := range fa {
		t.Run("forward-auth/"+tt.name, func(t *testing.T) {
			got := forwardAuth(t, ts, "GET", tt.path, hostless(tt.headers))
			if got.Status != 200 {
				t.Fatalf("forward-auth(%s) = %d %v, want 200 (%v)", tt.name, got.Status, got.Header, e.logs.lastCheck(t)["err"])
			}
			if rm := got.Header["X-Envoy-Auth-Headers-To-Remove"]; !strings.HasSuffix(rm, ",dpop") {
				t.Errorf("forward-auth(%s) %s = %q, want dpop among them", tt.name, HeaderRemove, rm)
			}
		})
	}
}

// hostless turns a Host entry into what forwardAuth can send: the
// test's client sets Host from the URL, so a Host entry becomes
// X-Forwarded-Host, which authz reads first.
func hostless(hs [][2]string) [][2]string {
	out := make([][2]string, 0, len(hs))
	for _, h := range hs {
		if h[0] == "Host" {
			h[0] = "X-Forwarded-Host"
		}
		out = append(out, h)
	}
	return out
}

// Forward-auth denials carry the same challenges, as separate headers,
// and the DPoP-Nonce when nonces are on; x-tollgate-dpop: required
// refuses a bearer token.
func TestDPoPForwardAuthDenials(t *testing.T) {
	e := newTestEnv(t, Config{CacheSize: 100, DPoPNonces: true})
	e.waitReady()
	ts := httptest.NewServer(e.srv.HTTPHandler())
	t.Cleanup(ts.Close)
	key := dpopKey(t)
	bound := e.key.sign(t, boundClaims(key, "u-1", "user"), nil)
	unbound := e.key.sign(t, claimsFor("u-2", "user"), nil)
	nonce := e.srv.dpop.Nonces().Current()
	tests := []struct {
		name       string
		headers    [][2]string
		challenges []string
		reason     string
	}{
		{"no nonce", [][2]string{{"Authorization", "DPoP " + bound}, {"DPoP", proof(t, key, "GET", ts.URL+"/books", bound, dpop.ProofOptions{})}},
			[]string{"DPoP " + dpopAlgs + `, error="use_dpop_nonce"`, `Bearer realm="tollgate"`}, "dpop_nonce"},
		{"stale nonce", [][2]string{{"Authorization", "DPoP " + bound}, {"DPoP", proof(t, key, "GET", ts.URL+"/books", bound, dpop.ProofOptions{Nonce: staleNonce(t)})}},
			[]string{"DPoP " + dpopAlgs + `, error="use_dpop_nonce"`, `Bearer realm="tollgate"`}, "dpop_nonce"},
		{"proof for another URL", [][2]string{{"Authorization", "DPoP " + bound}, {"DPoP", proof(t, key, "GET", ts.URL+"/users", bound, dpop.ProofOptions{Nonce: nonce})}},
			[]string{"DPoP " + dpopAlgs + `, error="invalid_dpop_proof"`, `Bearer realm="tollgate"`}, "dpop_invalid_proof"},
		{"x-tollgate-dpop: required, bearer token", [][2]string{{"Authorization", "Bearer " + unbound}, {"X-Tollgate-Dpop", "required"}},
			[]string{"DPoP " + dpopAlgs + `, error="invalid_token"`}, "dpop_required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", ts.URL+"/auth/books", nil)
			for _, h := range tt.headers {
				req.Header.Add(h[0], h[1])
			}
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("forward-auth(%s) = %d, want 401", tt.name, resp.StatusCode)
			}
			if diff := cmp.Diff(tt.challenges, resp.Header.Values("WWW-Authenticate")); diff != "" {
				t.Errorf("forward-auth(%s) WWW-Authenticate (-want +got):\n%s", tt.name, diff)
			}
			if got := resp.Header.Get("DPoP-Nonce"); !e.srv.dpop.Nonces().Valid(got) {
				t.Errorf("forward-auth(%s) DPoP-Nonce = %q, want a valid nonce", tt.name, got)
			}
			if r := e.logs.lastCheck(t)["reason"]; r != tt.reason {
				t.Errorf("forward-auth(%s) logged reason %v, want %s", tt.name, r, tt.reason)
			}
		})
	}
	// With the nonce it was given, the client gets in.
	got := forwardAuth(t, ts, "GET", "/auth/books", [][2]string{{"Authorization", "DPoP " + bound},
		{"DPoP", proof(t, key, "GET", ts.URL+"/books", bound, dpop.ProofOptions{Nonce: nonce})}})
	if got.Status != 200 {
		t.Errorf("forward-auth(proof with the current nonce) = %d, want 200 (%v)", got.Status, e.logs.lastCheck(t)["err"])
	}
}

// staleNonce is a nonce of another server secret: well-formed, never
// valid here.
func staleNonce(t testing.TB) string {
	n, err := dpop.NewNonces(nil, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n.Current()
}

// With nonces on, gRPC denials carry use_dpop_nonce and a DPoP-Nonce;
// replicas sharing the nonce secret file accept each other's nonces.
func TestDPoPNonces(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "nonce-secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("s", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{CacheSize: 100, DPoPNonces: true, DPoPNonceSecretFile: secret}
	key := dpopKey(t)
	a := newTestEnv(t, cfg)
	a.waitReady()
	b := newTestEnv(t, cfg, a.key)
	b.waitReady()
	tok := a.key.sign(t, boundClaims(key, "u-1", "user"), nil)
	const url = "http://books.example/books"

	got := a.check(envoyRequest("GET", "/books", dpopHeaders(tok, proof(t, key, "GET", url, tok, dpop.ProofOptions{})), nil))
	hs := deniedHeaders(got)
	if statusOf(got) != 401 || len(hs) != 4 || hs[0] != "www-authenticate: DPoP "+dpopAlgs+`, error="use_dpop_nonce"` || !strings.HasPrefix(hs[2], "dpop-nonce: ") {
		t.Fatalf("Check(proof without nonce) = %s %q, want 401 with use_dpop_nonce and a dpop-nonce", describe(got), hs)
	}
	nonce := strings.TrimPrefix(hs[2], "dpop-nonce: ")
	for _, st := range []struct {
		name  string
		env   *testEnv
		nonce string
		want  int
	}{
		{"the nonce it was given", a, nonce, 200},
		{"the nonce another replica gave", b, nonce, 200},
		{"a nonce of another secret", a, staleNonce(t), 401},
		{"no nonce", b, "", 401},
	} {
		got := st.env.check(envoyRequest("GET", "/books", dpopHeaders(tok, proof(t, key, "GET", url, tok, dpop.ProofOptions{Nonce: st.nonce})), nil))
		if s := statusOf(got); s != st.want {
			t.Errorf("Check(proof with %s) = %d, want %d (%v)", st.name, s, st.want, st.env.logs.lastCheck(t)["err"])
		}
		if st.want == 401 {
			if r := st.env.logs.lastCheck(t)["reason"]; r != "dpop_nonce" {
				t.Errorf("Check(proof with %s) logged reason %v, want dpop_nonce", st.name, r)
			}
		}
	}
}

// Where TLS ends before the gateway, the configured public origin of the
// host is what htu must name, not the scheme and host the gateway saw,
// and no client header can change it.
func TestDPoPPublicOrigin(t *testing.T) {
	dir := t.TempDir()
	e := newTestEnv(t, Config{CacheSize: 100, DPoPPublicOrigins: map[string]string{"books.example": "https://api.example.com"}})
	e.waitReady()
	key := dpopKey(t)
	tok := e.key.sign(t, boundClaims(key, "u-1", "user"), nil)
	p := func(url string) string { return proof(t, key, "GET", url, tok, dpop.ProofOptions{}) }
	tests := []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"proof for the public origin", dpopHeaders(tok, p("https://api.example.com/books")), 200},
		{"proof for the public origin, default port", dpopHeaders(tok, p("https://API.example.com:443/books")), 200},
		{"proof for what the gateway saw", dpopHeaders(tok, p("http://books.example/books")), 401},
		{"proof for another origin, with forwarded headers claiming it", func() map[string]string {
			h := dpopHeaders(tok, p("https://evil.example/books"))
			h["x-forwarded-host"], h["x-forwarded-proto"], h["forwarded"] = "evil.example", "https", "host=evil.example;proto=https"
			return h
		}(), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.check(envoyRequest("GET", "/books", tt.headers, nil))
			if s := statusOf(got); s != tt.want {
				t.Errorf("Check(%s) = %d, want %d (%v)", tt.name, s, tt.want, e.logs.lastCheck(t)["err"])
			}
		})
	}

	// The configuration file's dpop_public_origins, and its routes'
	// dpop: required.
	jw := newJWKSServer(t, e.key)
	file := filepath.Join(dir, "authz.yaml")
	writeFile(t, file, `issuers:
- name: tollgate
  issuer: `+testIssuer+`
  jwks_url: `+jw.jwksURL()+`
  audiences: [tollgate]
routes:
- match: {path_prefix: /books}
  dpop: required
dpop_public_origins:
  books.example:8080: https://books.example.com
`)
	f := newTestEnvWithJWKS(t, Config{CacheSize: 100, ConfigFile: file, ReloadInterval: time.Hour}, nil)
	f.waitReady()
	req := func(headers map[string]string) *authv3.CheckRequest {
		r := envoyRequest("GET", "/books", headers, nil)
		r.Attributes.Request.Http.Host = "books.example:8080"
		return r
	}
	unbound := e.key.sign(t, claimsFor("u-2", "user"), nil)
	for _, st := range []struct {
		name    string
		headers map[string]string
		want    int
		reason  string
	}{
		{"proof for the file's origin", dpopHeaders(tok, p("https://books.example.com/books")), 200, "verified"},
		{"proof for the gateway's host", dpopHeaders(tok, p("http://books.example:8080/books")), 401, "dpop_invalid_proof"},
		{"bearer token on the file's dpop: required route", bearer(unbound), 401, "dpop_required"},
	} {
		got := f.check(req(st.headers))
		if s := statusOf(got); s != st.want {
			t.Errorf("Check(%s) = %d, want %d (%v)", st.name, s, st.want, f.logs.lastCheck(t)["err"])
		}
		if r := f.logs.lastCheck(t)["reason"]; r != st.reason {
			t.Errorf("Check(%s) logged reason %v, want %s", st.name, r, st.reason)
		}
	}
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Bad DPoP settings are refused at start, with what is wrong.
func TestDPoPConfig(t *testing.T) {
	tests := []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"no algorithms", func(c *Config) { c.DPoPAlgorithms = []string{} }, "dpop algorithm allowlist is empty"},
		{"HS256", func(c *Config) { c.DPoPAlgorithms = []string{"HS256"} }, `dpop algorithm "HS256" is not allowed`},
		{"none", func(c *Config) { c.DPoPAlgorithms = []string{"none"} }, `dpop algorithm "none" is not allowed`},
		{"zero max age", func(c *Config) { c.DPoPMaxAge = -1 }, "dpop proof window"},
		{"sqlite replay store", func(c *Config) { c.DPoPReplayDSN = "replay.db" }, "postgres:// URL"},
		{"origin with a path", func(c *Config) { c.DPoPPublicOrigins = map[string]string{"a.example": "https://a.example/api"} }, "is not an origin"},
		{"origin without scheme", func(c *Config) { c.DPoPPublicOrigins = map[string]string{"a.example": "a.example"} }, "is not an origin"},
		{"host with a path", func(c *Config) { c.DPoPPublicOrigins = map[string]string{"a.example/x": "https://a.example"} }, "is not a host"},
		{"secret file without nonces", func(c *Config) { c.DPoPNonceSecretFile = "/x" }, "nonces are off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(Config{Issuer: testIssuer})
			tt.set(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate(%s) = %v, want an error with %q", tt.name, err, tt.want)
			}
		})
	}
	short := filepath.Join(t.TempDir(), "short")
	writeFile(t, short, "too short")
	c := testConfig(Config{Issuer: testIssuer, DPoPNonces: true, DPoPNonceSecretFile: short})
	if _, err := New(context.Background(), c, nil, nil); err == nil || !strings.Contains(err.Error(), "at least 32 bytes") {
		t.Errorf("New(nonce secret of 9 bytes) = %v, want an error about its length", err)
	}
}

// A replay store that cannot answer is not the client's fault: 503, as
// with no key set. A full in-memory store is one.
func TestDPoPReplayStoreFull(t *testing.T) {
	e := newTestEnv(t, Config{CacheSize: 100, DPoPReplayCapacity: 1})
	e.waitReady()
	key := dpopKey(t)
	tok := e.key.sign(t, boundClaims(key, "u-1", "user"), nil)
	for i := range 100 {
		got := e.check(envoyRequest("GET", "/books", dpopHeaders(tok, proof(t, key, "GET", "http://books.example/books", tok, dpop.ProofOptions{})), nil))
		if statusOf(got) == 200 {
			continue
		}
		if s := statusOf(got); s != 503 {
			t.Fatalf("Check(proof %d into a full replay store) = %d, want 503", i, s)
		}
		if r := e.logs.lastCheck(t)["reason"]; r != "dpop_replay_unavailable" {
			t.Errorf("Check(proof into a full replay store) logged reason %v, want dpop_replay_unavailable", r)
		}
		return
	}
	t.Fatal("100 proofs into a replay store of 32 entries were all accepted")
}

// With the shared store, a proof one authz accepted is refused by
// another on the same PostgreSQL, and the store is part of readiness.
func TestDPoPSharedReplay(t *testing.T) {
	dsn := pgtest.URL(t)
	cfg := Config{CacheSize: 100, DPoPReplayDSN: dsn}
	a := newTestEnv(t, cfg)
	a.waitReady()
	b := newTestEnv(t, cfg, a.key)
	b.waitReady()
	key := dpopKey(t)
	tok := a.key.sign(t, boundClaims(key, "u-1", "user"), nil)
	p := proof(t, key, "GET", "http://books.example/books", tok, dpop.ProofOptions{})
	for _, st := range []struct {
		name   string
		env    *testEnv
		want   int
		reason string
	}{
		{"first use, replica A", a, 200, "verified"},
		{"replayed to replica B", b, 401, "dpop_replayed"},
		{"replayed to replica A", a, 401, "dpop_replayed"},
	} {
		got := st.env.check(envoyRequest("GET", "/books", dpopHeaders(tok, p), nil))
		if s := statusOf(got); s != st.want {
			t.Errorf("Check(%s) = %d, want %d (%v)", st.name, s, st.want, st.env.logs.lastCheck(t)["err"])
		}
		if r := st.env.logs.lastCheck(t)["reason"]; r != st.reason {
			t.Errorf("Check(%s) logged reason %v, want %s", st.name, r, st.reason)
		}
	}
	if err := a.srv.Ready(context.Background()); err != nil {
		t.Errorf("Ready() with the shared replay store up = %v, want nil", err)
	}
	a.srv.dpopSQL = nil // as if it had never opened
	if err := a.srv.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "dpop_replay") {
		t.Errorf("Ready() without the shared replay store = %v, want a dpop_replay error", err)
	}
}

// The dpop_public_origins example in docs/authz.md is a valid map.
func TestDocsDPoPOriginsExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "authz.md"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := parseConfigFile("authz.yaml", []byte(docBlock(t, string(b), "authz-dpop-origins-example")))
	if err != nil {
		t.Fatal(err)
	}
	got, err := checkOrigins(f.cfg.DPoPPublicOrigins)
	if err != nil || len(got) != 2 {
		t.Errorf("docs/authz.md dpop_public_origins = %v, %v; want two valid origins", got, err)
	}
}
