package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// hs256 signs header.payload with HMAC-SHA256 under secret, the way a
// key-confusion attacker would with a public key as the "secret".
func hs256(t testing.TB, header, payload any, secret []byte) string {
	t.Helper()
	signing := seg(t, header) + "." + seg(t, payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func parts(tok string) (h, p, s string) {
	ps := strings.Split(tok, ".")
	return ps[0], ps[1], ps[2]
}

// The security checklist's token section, one attack token per line;
// each must be denied, and for the reason that names its defence.
func TestAttackTokens(t *testing.T) {
	es := newTestKey(t, "ES256", "main")
	rs := newTestKey(t, "RS256", "main")
	ed := newTestKey(t, "EdDSA", "main")
	attacker := newTestKey(t, "ES256", "attacker")
	e := newTestEnv(t, Config{
		CacheSize:       100,
		Algorithms:      []string{"ES256", "ES384", "RS256", "PS256", "EdDSA"},
		RefetchInterval: time.Hour,
	}, es, rs, ed)
	e.waitReady()
	attackerJWKS := newJWKSServer(t, attacker)

	good := claimsFor("victim", "user")
	valid := es.sign(t, good, nil)
	vh, vp, vs := parts(valid)
	sigBytes, _ := base64.RawURLEncoding.DecodeString(vs)
	hdr := func(alg string) map[string]any { return map[string]any{"alg": alg, "typ": "JWT", "kid": es.kid} }
	with := func(k string, v any) map[string]any {
		c := claimsFor("victim", "user")
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	now := time.Now()

	ecPub, _ := x509.MarshalPKIXPublicKey(es.priv.Public())
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPub})
	rsPub, _ := x509.MarshalPKIXPublicKey(rs.priv.Public())
	rsPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsPub})
	rsJWK, _ := json.Marshal(rs.public(t))
	ecPoint := elliptic.Marshal(elliptic.P256(), es.priv.Public().(*ecdsa.PublicKey).X, es.priv.Public().(*ecdsa.PublicKey).Y)

	n := elliptic.P256().Params().N.FillBytes(make([]byte, 32))
	attackerCert := selfSignedCert(t, attacker)

	tests := []struct {
		name    string
		headers map[string]string // when nil, the token goes in Authorization
		tok     string
		want    *authv3.CheckResponse
		reason  string
	}{
		// alg none, in every spelling, with and without a signature.
		{name: "alg none", tok: rawToken(t, hdr("none"), good, []byte("x")), reason: "alg_not_allowed"},
		{name: "alg None", tok: rawToken(t, hdr("None"), good, []byte("x")), reason: "alg_not_allowed"},
		{name: "alg NONE", tok: rawToken(t, hdr("NONE"), good, []byte("x")), reason: "alg_not_allowed"},
		{name: "alg nOnE", tok: rawToken(t, hdr("nOnE"), good, []byte("x")), reason: "alg_not_allowed"},
		{name: "alg none, empty signature", tok: seg(t, hdr("none")) + "." + seg(t, good) + ".", reason: "malformed"},
		{name: "alg missing", tok: rawToken(t, map[string]any{"kid": es.kid}, good, sigBytes), reason: "alg_not_allowed"},
		{name: "alg empty", tok: rawToken(t, hdr(""), good, sigBytes), reason: "alg_not_allowed"},
		{name: "alg not a string", tok: rawToken(t, map[string]any{"alg": 256, "kid": es.kid}, good, sigBytes), reason: "alg_not_allowed"},
		{name: "alg unknown", tok: rawToken(t, hdr("ES999"), good, sigBytes), reason: "alg_not_allowed"},

		// Empty and truncated signatures.
		{name: "empty signature", tok: vh + "." + vp + ".", reason: "malformed"},
		{name: "signature one byte short", tok: vh + "." + vp + "." + base64.RawURLEncoding.EncodeToString(sigBytes[:63]), reason: "bad_signature"},
		{name: "signature half gone", tok: vh + "." + vp + "." + base64.RawURLEncoding.EncodeToString(sigBytes[:32]), reason: "bad_signature"},
		{name: "signature cut mid-character", tok: valid[:len(valid)-1], reason: "malformed"},

		// Key confusion: HMAC with the public key as the secret.
		{name: "HS256 keyed with EC public key PEM", tok: hs256(t, hdr("HS256"), good, ecPEM), reason: "alg_not_allowed"},
		{name: "HS256 keyed with EC public key DER", tok: hs256(t, hdr("HS256"), good, ecPub), reason: "alg_not_allowed"},
		{name: "HS256 keyed with EC point bytes", tok: hs256(t, hdr("HS256"), good, ecPoint), reason: "alg_not_allowed"},
		{name: "HS256 keyed with RSA public key PEM", tok: hs256(t, map[string]any{"alg": "HS256", "kid": rs.kid}, good, rsPEM), reason: "alg_not_allowed"},
		{name: "HS256 keyed with RSA public key DER", tok: hs256(t, map[string]any{"alg": "HS256", "kid": rs.kid}, good, rsPub), reason: "alg_not_allowed"},
		{name: "HS256 keyed with RSA JWK JSON", tok: hs256(t, map[string]any{"alg": "HS256", "kid": rs.kid}, good, rsJWK), reason: "alg_not_allowed"},

		// A key is used only with its own alg.
		{name: "PS256 token on an RS256 key (valid PSS signature)", tok: rs.signAs(t, "PS256", good, nil), reason: "alg_mismatch"},
		{name: "ES384 header on an ES256 key", tok: rawToken(t, hdr("ES384"), good, make([]byte, 96)), reason: "alg_mismatch"},
		{name: "ES256 header on an EdDSA key", tok: rawToken(t, map[string]any{"alg": "ES256", "kid": ed.kid}, good, sigBytes), reason: "alg_mismatch"},
		{name: "RS256 header on an ES256 key", tok: rawToken(t, hdr("RS256"), good, make([]byte, 256)), reason: "alg_mismatch"},

		// ECDSA: psychic signature (CVE-2022-21449) and out-of-range scalars.
		{name: "psychic signature r=s=0", tok: rawToken(t, hdr("ES256"), good, make([]byte, 64)), reason: "bad_signature"},
		{name: "r=s=n", tok: rawToken(t, hdr("ES256"), good, append(append([]byte{}, n...), n...)), reason: "bad_signature"},
		{name: "r=s=0xff..", tok: rawToken(t, hdr("ES256"), good, []byte(strings.Repeat("\xff", 64))), reason: "bad_signature"},

		// kid is required and only ever a lookup key.
		{name: "no kid", tok: es.sign(t, good, map[string]any{"kid": nil}), reason: "missing_kid"},
		{name: "empty kid", tok: es.sign(t, good, map[string]any{"kid": ""}), reason: "missing_kid"},
		{name: "kid not a string", tok: es.sign(t, good, map[string]any{"kid": 7}), reason: "missing_kid"},
		{name: "kid as a path", tok: es.sign(t, good, map[string]any{"kid": "../../../../../../dev/null"}), reason: "unknown_kid"},
		{name: "kid as an absolute path", tok: es.sign(t, good, map[string]any{"kid": "/etc/passwd"}), reason: "unknown_kid"},
		{name: "kid as a URL", tok: es.sign(t, good, map[string]any{"kid": attackerJWKS.jwksURL()}), reason: "unknown_kid"},
		{name: "kid as SQL", tok: es.sign(t, good, map[string]any{"kid": "' OR '1'='1"}), reason: "unknown_kid"},

		// Keys named by the token header are never fetched nor used.
		{name: "jku to the attacker's JWKS", tok: attacker.sign(t, good, map[string]any{"jku": attackerJWKS.jwksURL()}), reason: "unknown_kid"},
		{name: "jku with a trusted kid", tok: attacker.sign(t, good, map[string]any{"jku": attackerJWKS.jwksURL(), "kid": es.kid}), reason: "bad_signature"},
		{name: "x5u to the attacker", tok: attacker.sign(t, good, map[string]any{"x5u": attackerJWKS.URL + "/cert.pem"}), reason: "unknown_kid"},
		{name: "embedded jwk", tok: attacker.sign(t, good, map[string]any{"jwk": attacker.jwkMap(t)}), reason: "unknown_kid"},
		{name: "embedded jwk with a trusted kid", tok: attacker.sign(t, good, map[string]any{"jwk": attacker.jwkMap(t), "kid": es.kid}), reason: "bad_signature"},
		{name: "x5c chain", tok: attacker.sign(t, good, map[string]any{"x5c": []string{attackerCert}, "kid": es.kid}), reason: "bad_signature"},
		{name: "signed by an unknown key under a trusted kid", tok: attacker.sign(t, good, map[string]any{"kid": es.kid}), reason: "bad_signature"},

		// Time claims.
		{name: "no exp", tok: es.sign(t, with("exp", nil), nil), reason: "missing_claim"},
		{name: "expired", tok: es.sign(t, with("exp", now.Add(-time.Hour).Unix()), nil), reason: "expired"},
		{name: "expired beyond leeway", tok: es.sign(t, with("exp", now.Add(-31*time.Second).Unix()), nil), reason: "expired"},
		{name: "expired and badly signed", tok: attacker.sign(t, with("exp", now.Add(-time.Hour).Unix()), map[string]any{"kid": es.kid}), reason: "bad_signature"},
		{name: "expired and signature tampered", tok: func() string {
			h, p, _ := parts(es.sign(t, with("exp", now.Add(-time.Hour).Unix()), nil))
			return h + "." + p + "." + vs
		}(), reason: "bad_signature"},
		{name: "nbf in the future", tok: es.sign(t, with("nbf", now.Add(5*time.Minute).Unix()), nil), reason: "not_yet_valid"},
		{name: "iat in the future", tok: es.sign(t, with("iat", now.Add(5*time.Minute).Unix()), nil), reason: "issued_in_future"},
		{name: "exp as a string", tok: es.sign(t, with("exp", "tomorrow"), nil), reason: "malformed"},

		// Issuer and audience.
		{name: "wrong iss", tok: es.sign(t, with("iss", "https://evil.example"), nil), reason: "bad_issuer"},
		{name: "iss with a trailing slash", tok: es.sign(t, with("iss", testIssuer+"/"), nil), reason: "bad_issuer"},
		{name: "no iss", tok: es.sign(t, with("iss", nil), nil), reason: "missing_claim"},
		{name: "wrong aud", tok: es.sign(t, with("aud", []string{"books"}), nil), reason: "bad_audience"},
		{name: "no aud", tok: es.sign(t, with("aud", nil), nil), reason: "missing_claim"},

		// Strict compact form and size.
		{name: "many dots, huge", tok: strings.Repeat(".", 100000), reason: "too_large"},
		{name: "one byte over the cap", tok: vh + "." + vp + "." + strings.Repeat("A", MaxTokenBytes-len(vh)-len(vp)-1), reason: "too_large"},
		{name: "four segments", tok: valid + ".x", reason: "malformed"},
		{name: "two segments", tok: vh + "." + vp, reason: "malformed"},
		{name: "many dots, small", tok: "a.b.c.d.e.f.g", reason: "malformed"},
		{name: "JWE compact (five segments)", tok: "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d", reason: "malformed"},
		{name: "JSON serialization", tok: `{"payload":"` + vp + `","protected":"` + vh + `","signature":"` + vs + `"}`, reason: "malformed"},
		{name: "flattened JSON without protected header", tok: `{"payload":"` + vp + `","header":{"alg":"ES256"},"signature":"` + vs + `"}`, reason: "malformed"},
		{name: "no protected header", tok: "." + vp + "." + vs, reason: "malformed"},
		{name: "protected header {}", tok: seg(t, "{}") + "." + vp + "." + vs, reason: "alg_not_allowed"},
		{name: "protected header null", tok: seg(t, "null") + "." + vp + "." + vs, reason: "alg_not_allowed"},
		{name: "protected header not JSON", tok: seg(t, "ES256") + "." + vp + "." + vs, reason: "malformed"},
		{name: "padding", tok: vh + "=." + vp + "." + vs, reason: "malformed"},
		{name: "standard base64 alphabet", tok: strings.ReplaceAll(strings.ReplaceAll(valid, "-", "+"), "_", "/") + "+/", reason: "malformed"},
		{name: "space inside", tok: vh + "." + vp[:10] + " " + vp[10:] + "." + vs, reason: "malformed"},
		{name: "newline inside", tok: vh + "." + vp[:10] + "\n" + vp[10:] + "." + vs, reason: "malformed"},
		{name: "tab inside", tok: vh + ".\t" + vp + "." + vs, reason: "malformed"},
		{name: "trailing junk", tok: valid + " junk", reason: "malformed"},
		{name: "trailing newline", tok: valid + "\n", reason: "malformed"},
		{name: "non-ASCII", tok: valid + "é", reason: "malformed"},

		// Tampering, with the old signature kept.
		{name: "payload tamper: admin role", tok: vh + "." + seg(t, claimsFor("victim", "admin", "user")) + "." + vs, reason: "bad_signature"},
		{name: "payload tamper: other sub", tok: vh + "." + seg(t, with("sub", "someone-else")) + "." + vs, reason: "bad_signature"},
		{name: "header tamper", tok: seg(t, map[string]any{"alg": "ES256", "kid": es.kid, "typ": "at+jwt"}) + "." + vp + "." + vs, reason: "bad_signature"},
		{name: "payload null", tok: vh + "." + seg(t, "null") + "." + vs, reason: "bad_signature"},
		{name: "payload true", tok: vh + "." + seg(t, "true") + "." + vs, reason: "malformed"},
		{name: "payload false", tok: vh + "." + seg(t, "false") + "." + vs, reason: "malformed"},
		{name: "payload 0", tok: vh + "." + seg(t, "0") + "." + vs, reason: "malformed"},
		{name: `payload "x"`, tok: vh + "." + seg(t, `"x"`) + "." + vs, reason: "malformed"},
		{name: "payload []", tok: vh + "." + seg(t, `[]`) + "." + vs, reason: "malformed"},
		{name: "exp set to null", tok: vh + "." + seg(t, with("exp", json.RawMessage("null"))) + "." + vs, reason: "bad_signature"},
		{name: "exp set to true", tok: vh + "." + seg(t, with("exp", true)) + "." + vs, reason: "malformed"},
		{name: "roles set to false", tok: vh + "." + seg(t, with("roles", false)) + "." + vs, reason: "malformed"},
		{name: "sub set to 0", tok: vh + "." + seg(t, with("sub", 0)) + "." + vs, reason: "malformed"},
		{name: `aud set to "x"`, tok: vh + "." + seg(t, with("aud", "x")) + "." + vs, reason: "bad_signature"},

		// Signed by the issuer, but not safe to pass upstream.
		{name: "roles as a string", tok: es.sign(t, with("roles", "admin"), nil), reason: "malformed"},
		{name: "role with a comma", tok: es.sign(t, with("roles", []string{"user,admin"}), nil), reason: "bad_claims"},
		{name: "role with a space", tok: es.sign(t, with("roles", []string{"user admin"}), nil), reason: "bad_claims"},
		{name: "name with a newline", tok: es.sign(t, with("name", "alice\r\nx-user-roles: admin"), nil), reason: "bad_claims"},
		{name: "no sub", tok: es.sign(t, with("sub", nil), nil), reason: "bad_claims"},
		{name: "empty sub", tok: es.sign(t, with("sub", ""), nil), reason: "bad_claims"},
		{name: "sub as a number", tok: es.sign(t, with("sub", 42), nil), reason: "malformed"},

		// Extensions the verifier does not understand.
		{name: "crit b64=false", tok: es.sign(t, good, map[string]any{"crit": []string{"b64"}, "b64": false}), reason: "crit_header"},

		// The token in the tutorial header, same defences.
		{name: "x-access-tokens: alg none", headers: map[string]string{"x-access-tokens": rawToken(t, hdr("none"), good, []byte("x"))}, reason: "alg_not_allowed"},
		{name: "x-access-tokens: many dots", headers: map[string]string{"x-access-tokens": strings.Repeat(".", 9000)}, reason: "too_large"},
		{name: "Bearer with extra words", headers: map[string]string{"authorization": "Bearer " + valid + " extra"}, reason: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := tt.headers
			if headers == nil {
				headers = bearer(tt.tok)
			}
			want := tt.want
			if want == nil {
				want = wantInvalid
			}
			got := e.check(envoyRequest("GET", "/books", headers, nil))
			if diff := diffResponse(want, got); diff != "" {
				t.Errorf("Check(%s) = %s, want %s; diff (-want +got):\n%s", tt.name, describe(got), describe(want), diff)
			}
			if r := e.logs.lastCheck(t)["reason"]; r != tt.reason {
				t.Errorf("Check(%s) logged reason %v, want %s (err %v)", tt.name, r, tt.reason, e.logs.lastCheck(t)["err"])
			}
		})
	}
	if n := attackerJWKS.hits.Load(); n != 0 {
		t.Errorf("the attacker's JWKS was fetched %d times; header-named keys must never be fetched", n)
	}
	// The table has many unknown kids but a refetch interval of an hour
	// that the initial load started: no refetch at all.
	if n := e.jwks.hits.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times for a run of unknown kids, want 1", n)
	}
}

// TestEdgesStillValid pins the other side of the time and audience
// checks: the leeway is honoured and a string aud is fine.
func TestEdgesStillValid(t *testing.T) {
	e := newTestEnv(t, Config{Leeway: 30 * time.Second})
	e.waitReady()
	now := time.Now()
	tests := []struct {
		name string
		edit func(map[string]any)
	}{
		{"exp 10s ago, within leeway", func(c map[string]any) { c["exp"] = now.Add(-10 * time.Second).Unix() }},
		{"nbf 10s ahead, within leeway", func(c map[string]any) { c["nbf"] = now.Add(10 * time.Second).Unix() }},
		{"iat 10s ahead, within leeway", func(c map[string]any) { c["iat"] = now.Add(10 * time.Second).Unix() }},
		{"aud as a string", func(c map[string]any) { c["aud"] = testAudience }},
		{"aud among others", func(c map[string]any) { c["aud"] = []string{"books", testAudience} }},
		{"no nbf, no iat", func(c map[string]any) { delete(c, "nbf"); delete(c, "iat") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := claimsFor("u-1", "user")
			tt.edit(c)
			got := e.check(envoyRequest("GET", "/books", bearer(e.key.sign(t, c, nil)), nil))
			want := wantAllow("u-1", "alice", "user", c["jti"].(string))
			if diff := diffResponse(want, got); diff != "" {
				t.Errorf("Check(%s) = %s, want OK (%v); diff (-want +got):\n%s", tt.name, describe(got), e.logs.lastCheck(t)["err"], diff)
			}
		})
	}
}

// TestWeakAndBrokenJWKSKeys: keys the JWKS publishes but authz must not
// trust are refused, so their tokens find no key.
func TestWeakAndBrokenJWKSKeys(t *testing.T) {
	main := newTestKey(t, "ES256", "main")
	weak := newTestKey(t, "RS1024", "weak")
	offCurve := newTestKey(t, "ES256", "offcurve")
	bad := offCurve.jwkMap(t)
	bad["y"] = bad["x"] // (x, x) is not on P-256
	jw := newJWKSServer(t)
	jw.setJWKs(t, main.jwkMap(t), weak.jwkMap(t), bad)
	e := newTestEnvWithJWKS(t, Config{RefetchInterval: time.Hour}, jw)
	e.waitReady()
	for _, tt := range []struct {
		name string
		tok  string
	}{
		{"RSA-1024 key", weak.sign(t, claimsFor("u", "user"), nil)},
		{"EC key off its curve", offCurve.sign(t, claimsFor("u", "user"), nil)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := e.check(envoyRequest("GET", "/books", bearer(tt.tok), nil))
			if diff := diffResponse(wantInvalid, got); diff != "" {
				t.Errorf("Check(token by %s) = %s, want 401; diff:\n%s", tt.name, describe(got), diff)
			}
			if r := e.logs.lastCheck(t)["reason"]; r != "unknown_kid" {
				t.Errorf("Check(token by %s) reason %v, want unknown_kid", tt.name, r)
			}
		})
	}
	if got := e.srv.keys.keys().len(); got != 1 {
		t.Errorf("keys loaded = %d, want 1 (only the sound key)", got)
	}
	if got := counterValue(t, e.reg, "tollgate_authz_jwks_refused_keys", "", ""); got != 2 {
		t.Errorf("tollgate_authz_jwks_refused_keys = %v, want 2", got)
	}
}

// TestNoKeysDenies: with an empty or unfetchable JWKS nothing is ready
// and every token is denied (503, fail closed), while a missing token is
// still a 401.
func TestNoKeysDenies(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(*jwksServer)
	}{
		{"empty JWKS", func(jw *jwksServer) { jw.setJWKs(t) }},
		{"JWKS answers 500", func(jw *jwksServer) { jw.fail(500) }},
		{"JWKS is not JSON", func(jw *jwksServer) {
			jw.mu.Lock()
			jw.body = []byte("<html>maintenance</html>")
			jw.mu.Unlock()
		}},
		{"JWKS unreachable", func(jw *jwksServer) { jw.Close() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := newTestKey(t, "ES256", "main")
			jw := newJWKSServer(t, k)
			tt.setup(jw)
			e2 := newTestEnvWithJWKS(t, Config{}, jw)
			errors := func() float64 { return counterValue(t, e2.reg, "tollgate_authz_jwks_fetches_total", "result", "error") }
			waitFor(t, "a failed fetch", func() bool { return errors() > 0 })
			if err := e2.srv.Ready(context.Background()); err == nil {
				t.Fatalf("Ready() = nil with %s, want an error", tt.name)
			}
			got := e2.check(envoyRequest("GET", "/books", bearer(k.sign(t, claimsFor("u", "user"), nil)), nil))
			if diff := diffResponse(wantUnavailable, got); diff != "" {
				t.Errorf("Check(valid token, %s) = %s, want 503; diff:\n%s", tt.name, describe(got), diff)
			}
			if r := e2.logs.lastCheck(t)["reason"]; r != "no_keys" {
				t.Errorf("reason = %v, want no_keys", r)
			}
			got = e2.check(envoyRequest("GET", "/books", nil, nil))
			if diff := diffResponse(wantNoToken, got); diff != "" {
				t.Errorf("Check(no token, %s) = %s, want 401; diff:\n%s", tt.name, describe(got), diff)
			}
		})
	}
}

func TestConfigRefusesUnsafeAlgorithms(t *testing.T) {
	for _, algs := range [][]string{{"HS256"}, {"none"}, {"ES256", "HS512"}, {}, {"es256"}} {
		if _, err := New(context.Background(), Config{Issuer: testIssuer, Algorithms: algs}, nil, nil); err == nil {
			t.Errorf("New(Algorithms: %q) succeeded, want an error", algs)
		}
	}
}

// selfSignedCert returns a base64 DER certificate for k, as an attacker
// would put in x5c.
func selfSignedCert(t testing.TB, k *testKey) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.priv.Public(), k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}
