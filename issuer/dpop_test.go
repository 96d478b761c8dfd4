package issuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jwtv5 "github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"golang.org/x/crypto/argon2"

	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/internal/pgtest"
)

// testIssuerURL is testConfig's IssuerURL: the htu base every proof
// signs, whatever host the test request is addressed to.
const testIssuerURL = "https://issuer.test"

// newP256 returns a fresh P-256 key.
func newP256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newClientKey returns a DPoP signer with a fresh key, as a client holds.
func newClientKey(t *testing.T, key ...crypto.Signer) *dpop.Signer {
	t.Helper()
	var k crypto.Signer = newP256(t)
	if len(key) > 0 {
		k = key[0]
	}
	s, err := dpop.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// proof signs a proof for method and the issuer's path, at the
// service's clock unless o says otherwise.
func (e *testEnv) proof(t *testing.T, s *dpop.Signer, method, path string, o dpop.ProofOptions) string {
	t.Helper()
	if o.IssuedAt.IsZero() {
		o.IssuedAt = e.clock.Now()
	}
	p, err := s.Proof(method, testIssuerURL+path, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// rawProof signs a proof by key whose header and claims the caller
// shapes: the proofs dpop.Signer refuses to make.
func rawProof(t *testing.T, key *ecdsa.PrivateKey, header map[string]any, claims jwtv5.MapClaims) string {
	t.Helper()
	tok := jwtv5.NewWithClaims(jwtv5.SigningMethodES256, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publicJWK is key's public JWK as a proof header carries it; private
// adds its d.
func publicJWK(t *testing.T, key *ecdsa.PrivateKey, private bool) map[string]any {
	t.Helper()
	var raw any = key.Public()
	if private {
		raw = key
	}
	k, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(k)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *testEnv) passwordForm() url.Values {
	return url.Values{"grant_type": {"password"}, "client_id": {DefaultClient}, "username": {"alain"}, "password": {goodPassword}}
}

func refreshForm(refresh string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "client_id": {DefaultClient}, "refresh_token": {refresh}}
}

// tokenWith posts form to /token with the DPoP header values proofs.
func (e *testEnv) tokenWith(t *testing.T, form url.Values, proofs ...string) response {
	t.Helper()
	req, err := http.NewRequest("POST", "/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, p := range proofs {
		req.Header.Add("DPoP", p)
	}
	return e.serve(req)
}

// loginWith logs alain in at /login with method and the DPoP header
// values proofs.
func (e *testEnv) loginWith(t *testing.T, method string, proofs ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, "/login", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("alain", goodPassword)
	for _, p := range proofs {
		req.Header.Add("DPoP", p)
	}
	return e.serve(req)
}

func (e *testEnv) serve(req *http.Request) response {
	req.RemoteAddr = "192.0.2.1:1234"
	// The address the gateway reached the issuer at, not the public one.
	req.Host = "issuer.internal:8081"
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// issuedGrant is what /token and /login answer, both shapes in one.
type issuedGrant struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

func (r response) grant(t *testing.T, what string) issuedGrant {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("%s = %d %s, want 200", what, r.status, r.body)
	}
	var g issuedGrant
	r.json(t, &g)
	return g
}

// cnfJKT returns the cnf.jkt of a verified token, "" without cnf.
func cnfJKT(t *testing.T, env *testEnv, token string) string {
	t.Helper()
	v, ok := mustVerify(t, env, token).Get("cnf")
	if !ok {
		return ""
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("cnf is %T %v, want an object", v, v)
	}
	jkt, _ := m["jkt"].(string)
	if jkt == "" {
		t.Fatalf("cnf %v has no jkt", m)
	}
	return jkt
}

// sessionJKT reads the DPoP binding of the only session of the test.
func (e *testEnv) sessionJKT(t *testing.T) string {
	t.Helper()
	var jkt *string
	if err := e.svc.db.QueryRow(`SELECT jkt FROM sessions`).Scan(&jkt); err != nil {
		t.Fatalf("read session binding: %v", err)
	}
	if jkt == nil {
		return ""
	}
	return *jkt
}

// wantOAuthError checks an RFC 6749 §5.2 error answer.
func wantOAuthError(t *testing.T, what string, res response, status int, code string) {
	t.Helper()
	if res.status != status {
		t.Fatalf("%s = %d %s, want %d %s", what, res.status, res.body, status, code)
	}
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	res.json(t, &e)
	if e.Error != code || e.Description == "" {
		t.Errorf("%s error = %q (%q), want %q with a description", what, e.Error, e.Description, code)
	}
	if cc := res.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s Cache-Control = %q, want no-store", what, cc)
	}
}

func TestDPoPBindsTokens(t *testing.T) {
	tests := []struct {
		name    string
		get     func(t *testing.T, env *testEnv, s *dpop.Signer) response
		refresh bool // a session is created
	}{
		{"password grant", func(t *testing.T, env *testEnv, s *dpop.Signer) response {
			return env.tokenWith(t, env.passwordForm(), env.proof(t, s, "POST", "/token", dpop.ProofOptions{}))
		}, true},
		{"POST /login", func(t *testing.T, env *testEnv, s *dpop.Signer) response {
			return env.loginWith(t, "POST", env.proof(t, s, "POST", "/login", dpop.ProofOptions{}))
		}, true},
		{"GET /login", func(t *testing.T, env *testEnv, s *dpop.Signer) response {
			return env.loginWith(t, "GET", env.proof(t, s, "GET", "/login", dpop.ProofOptions{}))
		}, true},
		{"password grant, refresh off", func(t *testing.T, env *testEnv, s *dpop.Signer) response {
			return env.tokenWith(t, env.passwordForm(), env.proof(t, s, "POST", "/token", dpop.ProofOptions{}))
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.DisableRefresh = !tt.refresh })
			env.mustRegister(t, "alain", goodPassword)
			s := newClientKey(t)
			g := tt.get(t, env, s).grant(t, tt.name)
			if g.TokenType != "DPoP" {
				t.Errorf("%s token_type = %q, want DPoP", tt.name, g.TokenType)
			}
			if got := cnfJKT(t, env, g.AccessToken); got != s.JKT() {
				t.Errorf("%s cnf.jkt = %q, want the proof key's %q", tt.name, got, s.JKT())
			}
			if tt.refresh {
				if got := env.sessionJKT(t); got != s.JKT() {
					t.Errorf("%s session bound to %q, want %q", tt.name, got, s.JKT())
				}
			}
			if n := g.Token; strings.HasSuffix(tt.name, "/login") && n != g.AccessToken {
				t.Errorf("%s token = %q, want the access token (the tutorial's field)", tt.name, n)
			}
		})
	}
}

func TestNoProofIsBearer(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	for name, res := range map[string]func() response{
		"password grant": func() response { return env.tokenWith(t, env.passwordForm()) },
		"POST /login":    func() response { return env.loginWith(t, "POST") },
	} {
		t.Run(name, func(t *testing.T) {
			g := res().grant(t, name)
			if g.TokenType != "Bearer" {
				t.Errorf("%s token_type = %q, want Bearer", name, g.TokenType)
			}
			if jkt := cnfJKT(t, env, g.AccessToken); jkt != "" {
				t.Errorf("%s cnf.jkt = %q, want no cnf", name, jkt)
			}
		})
	}
	var n int
	if err := env.svc.db.QueryRow(`SELECT COUNT(*) FROM sessions WHERE jkt IS NOT NULL`).Scan(&n); err != nil || n != 0 {
		t.Errorf("bound sessions after logins without proofs = %d (%v), want 0", n, err)
	}
}

// TestDPoPBadProofs pins what the issuer hands the verifier: the
// request's method, its own public URL plus the endpoint's path, no
// access token, the configured algorithms and window, and the replay
// store. Each wrong proof is a 400 invalid_dpop_proof and issues
// nothing.
func TestDPoPBadProofs(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.DPoP.Algorithms = []string{"ES256", "PS256"} })
	env.mustRegister(t, "alain", goodPassword)
	key := newP256(t)
	s := newClientKey(t, key)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ed := newClientKey(t, edKey)
	now := func() time.Time { return env.clock.Now() }
	claims := func(htm, htu string) jwtv5.MapClaims {
		return jwtv5.MapClaims{"jti": "j-" + strings.ReplaceAll(htm+htu, "/", ""), "htm": htm, "htu": htu, "iat": now().Unix()}
	}
	replayed := env.proof(t, s, "POST", "/token", dpop.ProofOptions{})
	replayedLogin := env.proof(t, s, "POST", "/login", dpop.ProofOptions{})
	tests := []struct {
		name  string
		login bool // at POST /login instead of the password grant
		proof func() []string
	}{
		{"htm GET at POST /token", false, func() []string { return []string{env.proof(t, s, "GET", "/token", dpop.ProofOptions{})} }},
		{"htm GET at POST /login", true, func() []string { return []string{env.proof(t, s, "GET", "/login", dpop.ProofOptions{})} }},
		{"htu of /login at /token", false, func() []string { return []string{env.proof(t, s, "POST", "/login", dpop.ProofOptions{})} }},
		{"htu of /token at /login", true, func() []string { return []string{env.proof(t, s, "POST", "/token", dpop.ProofOptions{})} }},
		{"htu on another host", false, func() []string {
			p, _ := s.Proof("POST", "https://evil.test/token", dpop.ProofOptions{IssuedAt: now()})
			return []string{p}
		}},
		{"htu of the address the issuer was reached at", false, func() []string {
			// The client signs the issuer's public URL, never the
			// address behind the gateway.
			p, _ := s.Proof("POST", "http://issuer.internal:8081/token", dpop.ProofOptions{IssuedAt: now()})
			return []string{p}
		}},
		{"iat 61s old", false, func() []string {
			return []string{env.proof(t, s, "POST", "/token", dpop.ProofOptions{IssuedAt: now().Add(-61 * time.Second)})}
		}},
		{"iat 6s ahead", false, func() []string {
			return []string{env.proof(t, s, "POST", "/token", dpop.ProofOptions{IssuedAt: now().Add(6 * time.Second)})}
		}},
		{"ath at a token endpoint", false, func() []string {
			return []string{env.proof(t, s, "POST", "/token", dpop.ProofOptions{AccessToken: "some.access.token"})}
		}},
		{"replayed jti at /token", false, func() []string { return []string{replayed} }},
		{"replayed jti at /login", true, func() []string { return []string{replayedLogin} }},
		{"EdDSA not in the allowlist", false, func() []string { return []string{env.proof(t, ed, "POST", "/token", dpop.ProofOptions{})} }},
		{"typ JWT", false, func() []string {
			return []string{rawProof(t, key, map[string]any{"typ": "JWT", "jwk": publicJWK(t, key, false)}, claims("POST", testIssuerURL+"/token"))}
		}},
		{"private key in the header", false, func() []string {
			return []string{rawProof(t, key, map[string]any{"typ": "dpop+jwt", "jwk": publicJWK(t, key, true)}, claims("POST", testIssuerURL+"/token"))}
		}},
		{"signed by another key than its jwk", false, func() []string {
			return []string{rawProof(t, newP256(t), map[string]any{"typ": "dpop+jwt", "jwk": publicJWK(t, key, false)}, claims("POST", testIssuerURL+"/token"))}
		}},
		{"two DPoP headers", false, func() []string {
			return []string{env.proof(t, s, "POST", "/token", dpop.ProofOptions{}), env.proof(t, s, "POST", "/token", dpop.ProofOptions{})}
		}},
		{"not a JWT", false, func() []string { return []string{"not-a-proof"} }},
	}
	// The replayed proofs are used once first, and work.
	env.tokenWith(t, env.passwordForm(), replayed).grant(t, "first use of a proof at /token")
	env.loginWith(t, "POST", replayedLogin).grant(t, "first use of a proof at /login")
	sessionsBefore := env.count(t, "sessions")
	hashesBefore := env.hashes.n.Load()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res response
			if tt.login {
				res = env.loginWith(t, "POST", tt.proof()...)
			} else {
				res = env.tokenWith(t, env.passwordForm(), tt.proof()...)
			}
			wantOAuthError(t, "token request("+tt.name+")", res, http.StatusBadRequest, "invalid_dpop_proof")
		})
	}
	if n := env.count(t, "sessions"); n != sessionsBefore {
		t.Errorf("sessions after refused proofs = %d, want %d: a refused proof issued tokens", n, sessionsBefore)
	}
	// The proof is checked before the password: a bad one costs no hash.
	if n := env.hashes.n.Load() - hashesBefore; n != 0 {
		t.Errorf("refused proofs cost %d password hashes, want 0", n)
	}
	// The good proofs the table varies do work: each case fails for its
	// one difference.
	env.tokenWith(t, env.passwordForm(), env.proof(t, s, "POST", "/token", dpop.ProofOptions{})).grant(t, "good proof at /token")
	env.loginWith(t, "POST", env.proof(t, s, "POST", "/login", dpop.ProofOptions{})).grant(t, "good proof at /login")
	p, _ := s.Proof("POST", testIssuerURL+"/token?x=1#f", dpop.ProofOptions{IssuedAt: now().Add(-59 * time.Second)})
	env.tokenWith(t, env.passwordForm(), p).grant(t, "proof 59s old, htu with query")
}

func (e *testEnv) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := e.svc.db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// TestDPoPBoundRefresh: a bound session's refresh token needs a proof by
// its key; without one, or with another key's, it is refused and not
// consumed.
func TestDPoPBoundRefresh(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.DB = d.dsn(t) })
			env.mustRegister(t, "alain", goodPassword)
			owner, thief := newClientKey(t), newClientKey(t)
			g := env.tokenWith(t, env.passwordForm(), env.proof(t, owner, "POST", "/token", dpop.ProofOptions{})).grant(t, "bound login")
			refused := []struct {
				name   string
				proofs []string
			}{
				{"no proof", nil},
				{"another key's proof", []string{env.proof(t, thief, "POST", "/token", dpop.ProofOptions{})}},
				{"the key's proof for /login", []string{env.proof(t, owner, "POST", "/login", dpop.ProofOptions{})}},
			}
			for _, tt := range refused {
				res := env.tokenWith(t, refreshForm(g.RefreshToken), tt.proofs...)
				wantOAuthError(t, "refresh("+tt.name+")", res, http.StatusBadRequest, "invalid_dpop_proof")
			}
			// Not consumed: the owner's refresh still works, and rotates
			// into a token that stays bound.
			g2 := env.tokenWith(t, refreshForm(g.RefreshToken), env.proof(t, owner, "POST", "/token", dpop.ProofOptions{})).grant(t, "refresh with the key after refused ones")
			if g2.TokenType != "DPoP" || cnfJKT(t, env, g2.AccessToken) != owner.JKT() {
				t.Errorf("refresh with the key = %s, cnf.jkt %q, want DPoP bound to %q", g2.TokenType, cnfJKT(t, env, g2.AccessToken), owner.JKT())
			}
			if g2.RefreshToken == "" || g2.RefreshToken == g.RefreshToken {
				t.Fatalf("refresh with the key did not rotate the refresh token")
			}
			wantOAuthError(t, "refresh(rotated token, another key)", env.tokenWith(t, refreshForm(g2.RefreshToken),
				env.proof(t, thief, "POST", "/token", dpop.ProofOptions{})), http.StatusBadRequest, "invalid_dpop_proof")
			wantOAuthError(t, "refresh(rotated token, no proof)", env.tokenWith(t, refreshForm(g2.RefreshToken)), http.StatusBadRequest, "invalid_dpop_proof")
			env.tokenWith(t, refreshForm(g2.RefreshToken), env.proof(t, owner, "POST", "/token", dpop.ProofOptions{})).grant(t, "second refresh with the key")
			// A thief replaying the consumed token without the key cannot
			// even trigger reuse detection.
			wantOAuthError(t, "refresh(consumed token, another key)", env.tokenWith(t, refreshForm(g.RefreshToken),
				env.proof(t, thief, "POST", "/token", dpop.ProofOptions{})), http.StatusBadRequest, "invalid_dpop_proof")
		})
	}
}

// TestDPoPRefreshUnbound: a session started without a proof is refreshed
// without one as before; the first refresh with a proof binds it (RFC
// 9449 §5: a refresh token issued to a public client presenting a proof
// is bound), and from then on it needs that key.
func TestDPoPRefreshUnbound(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.DB = d.dsn(t) })
			env.mustRegister(t, "alain", goodPassword)
			g := env.tokenWith(t, env.passwordForm()).grant(t, "bearer login")
			g = env.tokenWith(t, refreshForm(g.RefreshToken)).grant(t, "refresh of an unbound session without a proof")
			if g.TokenType != "Bearer" || env.sessionJKT(t) != "" {
				t.Fatalf("refresh without a proof = %s, session bound to %q, want Bearer and unbound", g.TokenType, env.sessionJKT(t))
			}
			s := newClientKey(t)
			g = env.tokenWith(t, refreshForm(g.RefreshToken), env.proof(t, s, "POST", "/token", dpop.ProofOptions{})).grant(t, "refresh of an unbound session with a proof")
			if g.TokenType != "DPoP" || cnfJKT(t, env, g.AccessToken) != s.JKT() {
				t.Errorf("refresh with a proof = %s, cnf.jkt %q, want DPoP bound to %q", g.TokenType, cnfJKT(t, env, g.AccessToken), s.JKT())
			}
			if got := env.sessionJKT(t); got != s.JKT() {
				t.Errorf("session bound to %q after a refresh with a proof, want %q", got, s.JKT())
			}
			wantOAuthError(t, "refresh(upgraded session, no proof)", env.tokenWith(t, refreshForm(g.RefreshToken)), http.StatusBadRequest, "invalid_dpop_proof")
		})
	}
}

func TestDPoPNonces(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.DPoP.Nonces = true })
	env.mustRegister(t, "alain", goodPassword)
	s := newClientKey(t)
	tests := []struct {
		name   string
		path   string
		method string
		send   func(proofs ...string) response
	}{
		{"password grant", "/token", "POST", func(p ...string) response { return env.tokenWith(t, env.passwordForm(), p...) }},
		{"POST /login", "/login", "POST", func(p ...string) response { return env.loginWith(t, "POST", p...) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := tt.send(env.proof(t, s, tt.method, tt.path, dpop.ProofOptions{}))
			wantOAuthError(t, tt.name+"(proof without nonce)", res, http.StatusBadRequest, "use_dpop_nonce")
			nonce := res.header.Get("DPoP-Nonce")
			if nonce == "" {
				t.Fatalf("%s use_dpop_nonce answer has no DPoP-Nonce header", tt.name)
			}
			res = tt.send(env.proof(t, s, tt.method, tt.path, dpop.ProofOptions{Nonce: "bm90IGEgbm9uY2U"}))
			wantOAuthError(t, tt.name+"(proof with a made-up nonce)", res, http.StatusBadRequest, "use_dpop_nonce")
			res = tt.send(env.proof(t, s, tt.method, tt.path, dpop.ProofOptions{Nonce: nonce}))
			g := res.grant(t, tt.name+"(proof with the nonce)")
			if g.TokenType != "DPoP" || cnfJKT(t, env, g.AccessToken) != s.JKT() {
				t.Errorf("%s with the nonce = %s, want a DPoP token bound to the key", tt.name, g.TokenType)
			}
			if res.header.Get("DPoP-Nonce") == "" {
				t.Errorf("%s success has no DPoP-Nonce header", tt.name)
			}
			// Without a proof a token is still a bearer token, and the
			// answer still tells the client the nonce.
			if res := tt.send(); res.header.Get("DPoP-Nonce") == "" || res.grant(t, tt.name+"(no proof)").TokenType != "Bearer" {
				t.Errorf("%s without a proof = %d, DPoP-Nonce %q, want a Bearer token and a nonce", tt.name, res.status, res.header.Get("DPoP-Nonce"))
			}
		})
	}

	t.Run("nonces off", func(t *testing.T) {
		off := newEnv(t)
		off.mustRegister(t, "alain", goodPassword)
		res := off.tokenWith(t, off.passwordForm(), off.proof(t, s, "POST", "/token", dpop.ProofOptions{}))
		if res.grant(t, "proof without nonce, nonces off"); res.header.Get("DPoP-Nonce") != "" {
			t.Errorf("nonces off: answer has DPoP-Nonce %q, want none", res.header.Get("DPoP-Nonce"))
		}
	})

	t.Run("replicas sharing a secret", func(t *testing.T) {
		secret := []byte(strings.Repeat("s", 32))
		a := newEnv(t, func(c *Config) { c.DPoP.Nonces, c.DPoP.NonceSecret = true, secret })
		b := newEnv(t, func(c *Config) { c.DPoP.Nonces, c.DPoP.NonceSecret = true, secret })
		other := newEnv(t, func(c *Config) { c.DPoP.Nonces, c.DPoP.NonceSecret = true, []byte(strings.Repeat("o", 32)) })
		for _, e := range []*testEnv{b, other} {
			e.mustRegister(t, "alain", goodPassword)
		}
		nonce := a.do(t, request{method: "POST", path: "/login"}).header.Get("DPoP-Nonce")
		b.tokenWith(t, b.passwordForm(), b.proof(t, s, "POST", "/token", dpop.ProofOptions{Nonce: nonce})).grant(t, "replica B with replica A's nonce")
		wantOAuthError(t, "issuer with another secret(A's nonce)", other.tokenWith(t, other.passwordForm(),
			other.proof(t, s, "POST", "/token", dpop.ProofOptions{Nonce: nonce})), http.StatusBadRequest, "use_dpop_nonce")
	})
}

func TestDPoPRequired(t *testing.T) {
	const spa = "spa"
	withClients := func(c *Config) { c.Clients = []string{DefaultClient, spa} }
	tests := []struct {
		name     string
		cfg      func(*Config)
		client   string
		login    bool
		proof    bool
		wantCode string // "" = 200
	}{
		{"required globally, no proof", func(c *Config) { c.DPoP.Required = true }, DefaultClient, false, false, "invalid_dpop_proof"},
		{"required globally, no proof at /login", func(c *Config) { c.DPoP.Required = true }, DefaultClient, true, false, "invalid_dpop_proof"},
		{"required globally, proof", func(c *Config) { c.DPoP.Required = true }, DefaultClient, false, true, ""},
		{"required globally, proof at /login", func(c *Config) { c.DPoP.Required = true }, DefaultClient, true, true, ""},
		{"required for the client, no proof", func(c *Config) { withClients(c); c.DPoP.RequiredClients = []string{spa} }, spa, false, false, "invalid_dpop_proof"},
		{"required for the client, proof", func(c *Config) { withClients(c); c.DPoP.RequiredClients = []string{spa} }, spa, false, true, ""},
		{"required for another client, no proof", func(c *Config) { withClients(c); c.DPoP.RequiredClients = []string{spa} }, DefaultClient, false, false, ""},
		{"required for the login client, no proof at /login", func(c *Config) { c.DPoP.RequiredClients = []string{DefaultClient} }, DefaultClient, true, false, "invalid_dpop_proof"},
		{"required with nonces on, no proof", func(c *Config) { c.DPoP.Required, c.DPoP.Nonces = true, true }, DefaultClient, false, false, "invalid_dpop_proof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, tt.cfg)
			env.mustRegister(t, "alain", goodPassword)
			s := newClientKey(t)
			var proofs []string
			var res response
			if tt.login {
				if tt.proof {
					proofs = append(proofs, env.proof(t, s, "POST", "/login", dpop.ProofOptions{}))
				}
				res = env.loginWith(t, "POST", proofs...)
			} else {
				if tt.proof {
					proofs = append(proofs, env.proof(t, s, "POST", "/token", dpop.ProofOptions{}))
				}
				f := env.passwordForm()
				f.Set("client_id", tt.client)
				res = env.tokenWith(t, f, proofs...)
			}
			if tt.wantCode != "" {
				wantOAuthError(t, tt.name, res, http.StatusBadRequest, tt.wantCode)
				if env.cfg.DPoP.Nonces && res.header.Get("DPoP-Nonce") == "" {
					t.Errorf("%s: refusal has no DPoP-Nonce with nonces on", tt.name)
				}
				return
			}
			g := res.grant(t, tt.name)
			if want := map[bool]string{true: "DPoP", false: "Bearer"}[tt.proof]; g.TokenType != want {
				t.Errorf("%s token_type = %q, want %q", tt.name, g.TokenType, want)
			}
		})
	}
}

// failingReplay is a replay store that is down.
type failingReplay struct{}

func (failingReplay) Claim(context.Context, [32]byte, time.Time) (bool, error) {
	return false, errors.New("connection refused")
}

// TestDPoPReplayStoreDown: a replay store that cannot answer is a 503 the
// client may retry, never a 500 and never an accepted proof.
func TestDPoPReplayStoreDown(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	vc := dpop.DefaultConfig()
	vc.Now, vc.Replay = env.clock.Now, failingReplay{}
	v, err := dpop.NewVerifier(vc)
	if err != nil {
		t.Fatal(err)
	}
	env.svc.dpop = v
	s := newClientKey(t)
	for name, res := range map[string]response{
		"password grant": env.tokenWith(t, env.passwordForm(), env.proof(t, s, "POST", "/token", dpop.ProofOptions{})),
		"POST /login":    env.loginWith(t, "POST", env.proof(t, s, "POST", "/login", dpop.ProofOptions{})),
	} {
		wantOAuthError(t, name+"(replay store down)", res, http.StatusServiceUnavailable, "temporarily_unavailable")
		if res.header.Get("Retry-After") == "" {
			t.Errorf("%s(replay store down) has no Retry-After", name)
		}
	}
}

// TestDPoPReplaySharedOnPostgres: two issuers on one PostgreSQL database
// share the replay store, so a proof one accepted is refused by the
// other; on SQLite (one replica) the store is in memory.
func TestDPoPReplaySharedOnPostgres(t *testing.T) {
	dsn := pgtest.URL(t)
	dir := t.TempDir()
	clock := newFakeClock()
	mk := func() *testEnv {
		cfg := testConfig(t, clock)
		cfg.DB, cfg.DataDir = dsn, dir
		return start(t, cfg, clock)
	}
	a, b := mk(), mk()
	a.mustRegister(t, "alain", goodPassword)
	s := newClientKey(t)
	p := a.proof(t, s, "POST", "/token", dpop.ProofOptions{})
	a.tokenWith(t, a.passwordForm(), p).grant(t, "replica A, first use")
	wantOAuthError(t, "replica B(proof replica A accepted)", b.tokenWith(t, b.passwordForm(), p), http.StatusBadRequest, "invalid_dpop_proof")
	wantOAuthError(t, "replica A(its own accepted proof)", a.tokenWith(t, a.passwordForm(), p), http.StatusBadRequest, "invalid_dpop_proof")
	b.tokenWith(t, b.passwordForm(), b.proof(t, s, "POST", "/token", dpop.ProofOptions{})).grant(t, "replica B, a fresh proof")
}

// TestDPoPWindowConfigured: the proof window is the configured one, not
// the RFC's default.
func TestDPoPWindowConfigured(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.DPoP.MaxAge, c.DPoP.MaxFuture = 10*time.Second, 0 })
	env.mustRegister(t, "alain", goodPassword)
	s := newClientKey(t)
	tests := []struct {
		name string
		iat  time.Duration
		ok   bool
	}{
		{"9s old", -9 * time.Second, true},
		{"11s old", -11 * time.Second, false},
		{"now", 0, true},
		{"1s ahead", time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := env.tokenWith(t, env.passwordForm(), env.proof(t, s, "POST", "/token", dpop.ProofOptions{IssuedAt: env.clock.Now().Add(tt.iat)}))
			if tt.ok {
				res.grant(t, "password grant(proof "+tt.name+")")
				return
			}
			wantOAuthError(t, "password grant(proof "+tt.name+")", res, http.StatusBadRequest, "invalid_dpop_proof")
		})
	}
}

func TestDPoPConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*Config)
		want string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"required client that does not exist", func(c *Config) { c.DPoP.RequiredClients = []string{"nobody"} }, "not one of the clients"},
		{"nonce secret with nonces off", func(c *Config) { c.DPoP.NonceSecret = []byte(strings.Repeat("s", 32)) }, "nonces are off"},
		{"short nonce secret", func(c *Config) { c.DPoP.Nonces, c.DPoP.NonceSecret = true, []byte("short") }, "at least 32 bytes"},
		{"no algorithms", func(c *Config) { c.DPoP.Algorithms = nil }, "no proof algorithms"},
		{"symmetric algorithm", func(c *Config) { c.DPoP.Algorithms = []string{"HS256"} }, "not an asymmetric"},
		{"none", func(c *Config) { c.DPoP.Algorithms = []string{"none"} }, "not an asymmetric"},
		{"zero max age", func(c *Config) { c.DPoP.MaxAge = 0 }, "positive age"},
		{"negative max future", func(c *Config) { c.DPoP.MaxFuture = -time.Second }, "non-negative future"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			cfg := testConfig(t, clock)
			tt.cfg(&cfg)
			svc, err := newService(context.Background(), cfg, nil, nil, argon2.IDKey)
			if svc != nil {
				svc.Close()
			}
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("New(%s) = %v, want nil", tt.name, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("New(%s) = %v, want an error containing %q", tt.name, err, tt.want)
			}
		})
	}
}

// TestDPoPLogout: /logout, where the issuer itself takes an access token,
// honours the binding (RFC 9449 §7): a bound token ends its session only
// as "Authorization: DPoP" with a fresh proof by its key for POST
// /logout naming it in ath; as a bearer token, without a proof, or with
// any other proof it is refused and the session lives on.
func TestDPoPLogout(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	owner := newClientKey(t)
	thief := newClientKey(t)
	bearer := env.tokenWith(t, env.passwordForm()).grant(t, "bearer login").AccessToken
	tests := []struct {
		name      string
		headers   func(tok string) map[string]string
		wantError string // the DPoP challenge's error; "" for 204
	}{
		{"as a bearer token", func(tok string) map[string]string {
			return map[string]string{"Authorization": "Bearer " + tok}
		}, "invalid_token"},
		{"in x-access-tokens", func(tok string) map[string]string {
			return map[string]string{"x-access-tokens": tok}
		}, "invalid_token"},
		{"DPoP without a proof", func(tok string) map[string]string {
			return map[string]string{"Authorization": "DPoP " + tok}
		}, "invalid_dpop_proof"},
		{"proof by another key", func(tok string) map[string]string {
			return map[string]string{"Authorization": "DPoP " + tok, "DPoP": env.proof(t, thief, "POST", "/logout", dpop.ProofOptions{AccessToken: tok})}
		}, "invalid_dpop_proof"},
		{"proof without ath", func(tok string) map[string]string {
			return map[string]string{"Authorization": "DPoP " + tok, "DPoP": env.proof(t, owner, "POST", "/logout", dpop.ProofOptions{})}
		}, "invalid_dpop_proof"},
		{"proof for /token", func(tok string) map[string]string {
			return map[string]string{"Authorization": "DPoP " + tok, "DPoP": env.proof(t, owner, "POST", "/token", dpop.ProofOptions{AccessToken: tok})}
		}, "invalid_dpop_proof"},
		{"unbound token as DPoP", func(string) map[string]string {
			return map[string]string{"Authorization": "DPoP " + bearer, "DPoP": env.proof(t, owner, "POST", "/logout", dpop.ProofOptions{AccessToken: bearer})}
		}, "invalid_token"},
		{"owner's proof", func(tok string) map[string]string {
			return map[string]string{"Authorization": "DPoP " + tok, "DPoP": env.proof(t, owner, "POST", "/logout", dpop.ProofOptions{AccessToken: tok})}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := env.tokenWith(t, env.passwordForm(), env.proof(t, owner, "POST", "/token", dpop.ProofOptions{})).grant(t, "DPoP login")
			res := env.do(t, request{method: "POST", path: "/logout", headers: tt.headers(g.AccessToken)})
			if tt.wantError == "" {
				if res.status != http.StatusNoContent {
					t.Fatalf("POST /logout(%s) = %d %s, want 204", tt.name, res.status, res.body)
				}
				if env.feed(t, "0").revokedJTI(jtiOf(t, g.AccessToken)) != true {
					t.Errorf("after /logout(%s) the token is not revoked", tt.name)
				}
				return
			}
			if res.status != http.StatusUnauthorized {
				t.Fatalf("POST /logout(%s) = %d %s, want 401", tt.name, res.status, res.body)
			}
			want := `DPoP algs="` + strings.Join(dpop.DefaultAlgorithms, " ") + `", error="` + tt.wantError + `"`
			if got := res.header.Values("Www-Authenticate"); len(got) != 2 || got[1] != want {
				t.Errorf("POST /logout(%s) WWW-Authenticate = %q, want the Bearer challenge and %q", tt.name, got, want)
			}
			if env.feed(t, "0").revokedJTI(jtiOf(t, g.AccessToken)) {
				t.Errorf("POST /logout(%s) was refused but revoked the token", tt.name)
			}
			// The session lives on: its refresh token still works, with
			// the owner's key.
			if r := env.tokenWith(t, refreshForm(g.RefreshToken), env.proof(t, owner, "POST", "/token", dpop.ProofOptions{})); r.status != http.StatusOK {
				t.Errorf("after a refused /logout(%s), refresh = %d %s, want 200", tt.name, r.status, r.body)
			}
		})
	}
}
