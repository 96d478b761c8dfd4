package issuer

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// fetchJWKS gets the published key set as a verifier would.
func fetchJWKS(t *testing.T, env *testEnv) jwk.Set {
	t.Helper()
	res := env.do(t, request{method: "GET", path: "/.well-known/jwks.json"})
	if res.status != http.StatusOK {
		t.Fatalf("GET jwks = %d %s, want 200", res.status, res.body)
	}
	set, err := jwk.Parse(res.body)
	if err != nil {
		t.Fatalf("parse JWKS %s: %v", res.body, err)
	}
	return set
}

// verify checks token against the published JWKS with jwx, as any
// verifier would: signature by kid and alg, iss, aud, exp, nbf, iat.
func verify(t *testing.T, env *testEnv, token string) (jwt.Token, error) {
	t.Helper()
	return jwt.Parse([]byte(token),
		jwt.WithKeySet(fetchJWKS(t, env)),
		jwt.WithValidate(true),
		jwt.WithIssuer(env.svc.cfg.IssuerURL),
		jwt.WithAudience("tollgate"),
		jwt.WithClock(jwt.ClockFunc(env.clock.Now)),
		jwt.WithRequiredClaim("exp"),
	)
}

func mustVerify(t *testing.T, env *testEnv, token string) jwt.Token {
	t.Helper()
	tok, err := verify(t, env, token)
	if err != nil {
		t.Fatalf("verify token against the published JWKS: %v", err)
	}
	return tok
}

// tokenRoles returns the roles claim of a verified token.
func tokenRoles(t *testing.T, env *testEnv, token string) []string {
	t.Helper()
	v, _ := mustVerify(t, env, token).Get("roles")
	var roles []string
	for _, r := range v.([]any) {
		roles = append(roles, r.(string))
	}
	return roles
}

// tokenKID returns the kid and alg of a token's protected header.
func tokenKID(t *testing.T, token string) (kid, alg string) {
	t.Helper()
	msg, err := jws.Parse([]byte(token))
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	return h.KeyID(), h.Algorithm().String()
}

func TestTokenVerifiesAgainstJWKS(t *testing.T) {
	for _, alg := range []string{ES256, RS256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.SigningAlg = alg })
			id := env.mustRegister(t, "alain", goodPassword)
			token := env.mustLogin(t, "alain", goodPassword)

			kid, hdrAlg := tokenKID(t, token)
			if hdrAlg != alg {
				t.Errorf("token header alg = %s, want %s", hdrAlg, alg)
			}
			set := fetchJWKS(t, env)
			key, ok := set.LookupKeyID(kid)
			if !ok {
				t.Fatalf("token kid %q is not in the JWKS", kid)
			}
			if key.Algorithm().String() != alg {
				t.Errorf("JWKS key alg = %s, want %s", key.Algorithm(), alg)
			}

			tok := mustVerify(t, env, token)
			now := env.clock.Now().Truncate(time.Second)
			if diff := cmp.Diff([]string{"tollgate"}, tok.Audience()); diff != "" {
				t.Errorf("aud (-want +got):\n%s", diff)
			}
			for _, c := range []struct {
				claim     string
				got, want any
			}{
				{"iss", tok.Issuer(), "https://issuer.test"},
				{"sub", tok.Subject(), id},
				{"iat", tok.IssuedAt(), now},
				{"nbf", tok.NotBefore(), now},
				{"exp", tok.Expiration(), now.Add(45 * time.Minute)},
			} {
				if !cmp.Equal(c.got, c.want) {
					t.Errorf("claim %s = %v, want %v", c.claim, c.got, c.want)
				}
			}
			if tok.JwtID() == "" {
				t.Error("no jti")
			}
			if name, _ := tok.Get("name"); name != "alain" {
				t.Errorf("name = %v, want alain", name)
			}
			if diff := cmp.Diff([]string{"user"}, tokenRoles(t, env, token)); diff != "" {
				t.Errorf("roles (-want +got):\n%s", diff)
			}

			// Expired at exp, for a verifier with no leeway.
			env.clock.Advance(45 * time.Minute)
			if _, err := verify(t, env, token); err == nil {
				t.Error("token still valid 45 minutes after issue")
			}
		})
	}
}

func TestTokenTTLConfigurable(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.TokenTTL = 10 * time.Minute })
	env.mustRegister(t, "alain", goodPassword)
	res := env.login(t, "alain", goodPassword)
	var out tokenResponse
	res.json(t, &out)
	if out.ExpiresIn != 600 {
		t.Errorf("expires_in = %d, want 600", out.ExpiresIn)
	}
	tok := mustVerify(t, env, out.Token)
	if got := tok.Expiration().Sub(tok.IssuedAt()); got != 10*time.Minute {
		t.Errorf("exp - iat = %s, want 10m", got)
	}
}

func TestJWKSShapeAndCaching(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.JWKSMaxAge = 7 * time.Minute })
	res := env.do(t, request{method: "GET", path: "/.well-known/jwks.json"})
	if res.status != http.StatusOK {
		t.Fatalf("GET jwks = %d, want 200", res.status)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if cc := res.header.Get("Cache-Control"); cc != "public, max-age=420" {
		t.Errorf("Cache-Control = %q, want public, max-age=420", cc)
	}
	etag := res.header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || len(etag) < 10 {
		t.Errorf("ETag = %q, want a strong, quoted entity tag", etag)
	}

	var raw struct{ Keys []map[string]any }
	res.json(t, &raw)
	if len(raw.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(raw.Keys))
	}
	k := raw.Keys[0]
	var members []string
	for m := range k {
		members = append(members, m)
	}
	slices.Sort(members)
	if diff := cmp.Diff([]string{"alg", "crv", "kid", "kty", "use", "x", "y"}, members); diff != "" {
		t.Errorf("JWK members (-want +got), never a private part:\n%s", diff)
	}
	if k["use"] != "sig" || k["alg"] != "ES256" {
		t.Errorf("use, alg = %v, %v; want sig, ES256", k["use"], k["alg"])
	}
	// kid is the RFC 7638 thumbprint of the key itself.
	key, err := jwk.ParseKey(must(json.Marshal(k)))
	if err != nil {
		t.Fatal(err)
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.RawURLEncoding.EncodeToString(tp); k["kid"] != want {
		t.Errorf("kid = %v, want thumbprint %s", k["kid"], want)
	}

	for _, tc := range []struct {
		name, inm string
		want      int
	}{
		{"matching", etag, 304},
		{"weak form of it", "W/" + etag, 304},
		{"in a list", `"other", ` + etag, 304},
		{"star", "*", 304},
		{"other", `"other"`, 200},
	} {
		t.Run("If-None-Match "+tc.name, func(t *testing.T) {
			res := env.do(t, request{method: "GET", path: "/.well-known/jwks.json", headers: map[string]string{"If-None-Match": tc.inm}})
			if res.status != tc.want {
				t.Fatalf("GET jwks If-None-Match %s = %d, want %d", tc.inm, res.status, tc.want)
			}
			if tc.want == 304 && (len(res.body) != 0 || res.header.Get("ETag") != etag || res.header.Get("Cache-Control") == "") {
				t.Errorf("304 body %q ETag %q Cache-Control %q; want empty, %s, set", res.body, res.header.Get("ETag"), res.header.Get("Cache-Control"), etag)
			}
		})
	}

	// HEAD works, as caches use it.
	if res := env.do(t, request{method: "HEAD", path: "/.well-known/jwks.json"}); res.status != 200 || res.header.Get("ETag") != etag {
		t.Errorf("HEAD jwks = %d ETag %q, want 200 %s", res.status, res.header.Get("ETag"), etag)
	}
}

func TestOpenIDConfiguration(t *testing.T) {
	env := newEnv(t, func(c *Config) {
		c.IssuerURL = "https://auth.example.test/"
		c.DPoP.Algorithms = []string{"ES256", "EdDSA"}
	})
	res := env.do(t, request{method: "GET", path: "/.well-known/openid-configuration"})
	if res.status != http.StatusOK {
		t.Fatalf("GET openid-configuration = %d, want 200", res.status)
	}
	if cc := res.header.Get("Cache-Control"); !strings.HasPrefix(cc, "public, max-age=") {
		t.Errorf("Cache-Control = %q, want public", cc)
	}
	var doc discovery
	res.json(t, &doc)
	want := discovery{
		Issuer:            "https://auth.example.test",
		JWKSURI:           "https://auth.example.test/.well-known/jwks.json",
		TokenEndpoint:     "https://auth.example.test/token",
		TokenEndpointAuth: []string{"none"},
		// RFC 7009 / RFC 8414 §2: where and how to revoke.
		RevocationEndpoint:     "https://auth.example.test/revoke",
		RevocationEndpointAuth: []string{"none"},
		GrantTypes:             []string{"password", "refresh_token"},
		ResponseTypes:          []string{"token"},
		SubjectTypes:           []string{"public"},
		IDTokenSigningAlgs:     []string{"ES256"},
		ClaimsSupported:        []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "name", "roles", "cnf"},
		// RFC 9449 §5.1: the proof algorithms /token accepts, as
		// configured.
		DPoPSigningAlgs: []string{"ES256", "EdDSA"},
	}
	if diff := cmp.Diff(want, doc); diff != "" {
		t.Errorf("discovery document (-want +got):\n%s", diff)
	}
	// The iss of tokens is the discovery issuer exactly.
	env.mustRegister(t, "alain", goodPassword)
	if iss := mustVerify(t, env, env.mustLogin(t, "alain", goodPassword)).Issuer(); iss != doc.Issuer {
		t.Errorf("token iss %q != discovery issuer %q", iss, doc.Issuer)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
