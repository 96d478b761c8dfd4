package authz

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/internal/jose"
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

	// JSON the issuer signed but a map cannot hold: plus appends raw
	// members to the valid payload, header is the valid header.
	header := `{"alg":"ES256","kid":"` + es.kid + `","typ":"JWT"}`
	payload := func(c map[string]any) string {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	plus := func(c map[string]any, members string) string {
		return strings.TrimSuffix(payload(c), "}") + "," + members + "}"
	}
	numString := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	lifetime := func(iat, exp time.Duration) map[string]any {
		c := with("iat", now.Add(iat).Unix())
		c["nbf"] = c["iat"]
		c["exp"] = now.Add(exp).Unix()
		return c
	}
	noIat := func(exp time.Duration) map[string]any {
		c := with("iat", nil)
		c["exp"] = now.Add(exp).Unix()
		return c
	}
	const day = 24 * time.Hour

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

		// NumericDate is a JSON number (RFC 7519 §2); golang-jwt would
		// read a string holding one, and null as no claim.
		{name: "exp as a numeric string", tok: es.sign(t, with("exp", numString(time.Hour)), nil), reason: "malformed"},
		{name: "nbf as a numeric string", tok: es.sign(t, with("nbf", numString(0)), nil), reason: "malformed"},
		{name: "iat as a numeric string", tok: es.sign(t, with("iat", numString(0)), nil), reason: "malformed"},
		{name: "exp as a fractional numeric string", tok: es.sign(t, with("exp", numString(time.Hour)+".5"), nil), reason: "malformed"},
		{name: "exp null", tok: es.sign(t, with("exp", json.RawMessage("null")), nil), reason: "malformed"},
		{name: "nbf null", tok: es.sign(t, with("nbf", json.RawMessage("null")), nil), reason: "malformed"},
		{name: "iat null", tok: es.sign(t, with("iat", json.RawMessage("null")), nil), reason: "malformed"},
		{name: "nbf as an array", tok: es.sign(t, with("nbf", []int64{now.Unix()}), nil), reason: "malformed"},

		// Duplicate members, which golang-jwt resolves by taking the last
		// and a verifier beside us might resolve by taking the first.
		{name: "sub twice", tok: es.signJSON(t, header, plus(good, `"sub":"admin-user"`)), reason: "duplicate_key"},
		{name: "roles twice", tok: es.signJSON(t, header, plus(good, `"roles":["admin"]`)), reason: "duplicate_key"},
		{name: "exp twice", tok: es.signJSON(t, header, plus(good, `"exp":`+numString(1000*day))), reason: "duplicate_key"},
		{name: "sub twice, once escaped", tok: es.signJSON(t, header, plus(good, `"\u0073ub":"admin-user"`)), reason: "duplicate_key"},
		{name: "kid twice in the header", tok: es.signJSON(t, `{"alg":"ES256","kid":"other","kid":"`+es.kid+`"}`, payload(good)), reason: "duplicate_key"},
		{name: "alg twice in the header", tok: es.signJSON(t, `{"alg":"none","alg":"ES256","kid":"`+es.kid+`"}`, payload(good)), reason: "duplicate_key"},
		{name: "duplicate inside a header member", tok: es.signJSON(t, `{"alg":"ES256","kid":"`+es.kid+`","x":{"a":1,"a":2}}`, payload(good)), reason: "duplicate_key"},
		{name: "duplicate deep inside a claim", tok: es.signJSON(t, header, plus(good, `"ext":{"a":1,"b":{"c":1,"c":2}}`)), reason: "duplicate_key"},
		{name: "duplicate in an object in an array", tok: es.signJSON(t, header, plus(good, `"ext":[{"a":1},{"a":1,"a":2}]`)), reason: "duplicate_key"},
		{name: "duplicate hidden behind invalid UTF-8", tok: es.signJSON(t, header, plus(good, "\"x\":\"\xff\",\"sub\":\"admin-user\"")), reason: "malformed"},
		{name: "duplicate, old signature kept", tok: vh + "." + seg(t, plus(good, `"sub":"admin-user"`)) + "." + vs, reason: "duplicate_key"},

		// encoding/json matches claim names ignoring case, Unicode
		// folding included, so these would stand in for sub and exp.
		{name: "SUB beside sub", tok: es.signJSON(t, header, plus(good, `"SUB":"admin-user"`)), reason: "duplicate_key"},
		{name: "Exp as a numeric string instead of exp", tok: es.signJSON(t, header, plus(with("exp", nil), `"Exp":"`+numString(time.Hour)+`"`)), reason: "duplicate_key"},
		{name: "long-s sub (U+017F) beside sub", tok: es.signJSON(t, header, plus(good, `"ſub":"admin-user"`)), reason: "duplicate_key"},
		{name: "ROLES beside roles", tok: es.signJSON(t, header, plus(good, `"ROLES":["admin"]`)), reason: "duplicate_key"},

		// At most MaxTokenLifetime (24h here) between iat and exp, or
		// between now and exp without iat.
		{name: "lifetime 100 years", tok: es.sign(t, lifetime(0, 100*365*day), nil), reason: "lifetime_too_long"},
		{name: "lifetime a second over a day", tok: es.sign(t, lifetime(-time.Hour, day-time.Hour+time.Second), nil), reason: "lifetime_too_long"},
		{name: "issued 2 days ago, an hour left", tok: es.sign(t, lifetime(-2*day, time.Hour), nil), reason: "lifetime_too_long"},
		{name: "no iat, exp in 25 hours", tok: es.sign(t, noIat(25*time.Hour), nil), reason: "lifetime_too_long"},
		{name: "no iat, exp beyond the leeway", tok: es.sign(t, noIat(day+31*time.Second), nil), reason: "lifetime_too_long"},
		{name: "too long and expired: expired first", tok: es.sign(t, lifetime(-1000*day, -time.Hour), nil), reason: "expired"},
		{name: "too long and badly signed: signature first", tok: attacker.sign(t, lifetime(0, 100*365*day), map[string]any{"kid": es.kid}), reason: "bad_signature"},

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
		{name: "payload null", tok: vh + "." + seg(t, "null") + "." + vs, reason: "malformed"},
		{name: "payload true", tok: vh + "." + seg(t, "true") + "." + vs, reason: "malformed"},
		{name: "payload false", tok: vh + "." + seg(t, "false") + "." + vs, reason: "malformed"},
		{name: "payload 0", tok: vh + "." + seg(t, "0") + "." + vs, reason: "malformed"},
		{name: `payload "x"`, tok: vh + "." + seg(t, `"x"`) + "." + vs, reason: "malformed"},
		{name: "payload []", tok: vh + "." + seg(t, `[]`) + "." + vs, reason: "malformed"},
		{name: "exp set to null", tok: vh + "." + seg(t, with("exp", json.RawMessage("null"))) + "." + vs, reason: "malformed"},
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
		{"lifetime exactly the maximum", func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(-time.Hour).Unix(), now.Add(23*time.Hour).Unix()
		}},
		{"no iat, exp in a day", func(c map[string]any) { delete(c, "iat"); c["exp"] = now.Add(24 * time.Hour).Unix() }},
		{"no iat, exp a day and 10s away, within leeway", func(c map[string]any) {
			delete(c, "iat")
			c["exp"] = now.Add(24*time.Hour + 10*time.Second).Unix()
		}},
		{"fractional dates", func(c map[string]any) {
			c["iat"] = float64(now.Unix()) + 0.25
			c["nbf"] = json.Number(fmt.Sprint(now.Unix()) + ".5")
		}},
		{"same member names in sibling and nested objects", func(c map[string]any) {
			c["ext"] = []any{map[string]any{"a": 1, "sub": "x"}, map[string]any{"a": map[string]any{"a": 1}}}
		}},
		{"case variants of claim names below the top level", func(c map[string]any) { c["ext"] = map[string]any{"SUB": "x", "Exp": "soon"} }},
		{"a custom claim named like a prefix", func(c map[string]any) { c["subject"], c["expires"] = "x", "soon" }},
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
	if got := e.srv.defaultSource().keys().len(); got != 1 {
		t.Errorf("keys loaded = %d, want 1 (only the sound key)", got)
	}
	if got := counterValue(t, e.reg, "tollgate_authz_jwks_refused_keys", "issuer", DefaultIssuerName); got != 2 {
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

func TestConfigMaxTokenLifetime(t *testing.T) {
	if got := DefaultConfig().MaxTokenLifetime; got != DefaultMaxTokenLifetime {
		t.Errorf("DefaultConfig().MaxTokenLifetime = %v, want %v", got, DefaultMaxTokenLifetime)
	}
	for _, tt := range []struct {
		set     time.Duration
		wantErr bool
	}{
		{time.Hour, false},
		{0, true},
		{-time.Second, true},
	} {
		c := DefaultConfig()
		c.Issuer, c.MaxTokenLifetime = testIssuer, tt.set
		if err := c.Validate(); (err != nil) != tt.wantErr {
			t.Errorf("Validate(MaxTokenLifetime: %v) = %v, want error %v", tt.set, err, tt.wantErr)
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

// pssSign signs signing with PS* at an exact salt length, as a forger
// with a non-conforming signer would. rsa.SignPSS takes salt length 0 to
// mean "as long as possible", so an empty salt is encoded here (RFC 8017
// §9.1.1) and checked against crypto/rsa's own verifier before use.
func pssSign(t testing.TB, priv *rsa.PrivateKey, h crypto.Hash, signing string, salt int) []byte {
	t.Helper()
	hh := h.New()
	hh.Write([]byte(signing))
	digest := hh.Sum(nil)
	if salt > 0 {
		sig, err := rsa.SignPSS(rand.Reader, priv, h, digest, &rsa.PSSOptions{SaltLength: salt})
		if err != nil {
			t.Fatalf("SignPSS(salt %d): %v", salt, err)
		}
		return sig
	}
	emBits := priv.N.BitLen() - 1
	emLen := (emBits + 7) / 8
	mp := h.New()
	mp.Write(make([]byte, 8))
	mp.Write(digest)
	hPrime := mp.Sum(nil)
	db := make([]byte, emLen-h.Size()-1)
	db[len(db)-1] = 0x01 // PS is all zeros, then 0x01, then no salt
	mask := make([]byte, 0, len(db))
	for c := uint32(0); len(mask) < len(db); c++ {
		g := h.New()
		g.Write(hPrime)
		g.Write([]byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)})
		mask = g.Sum(mask)
	}
	for i := range db {
		db[i] ^= mask[i]
	}
	db[0] &= 0xff >> (8*emLen - emBits)
	em := append(append(db, hPrime...), 0xbc)
	s := new(big.Int).Exp(new(big.Int).SetBytes(em), priv.D, priv.N)
	sig := s.FillBytes(make([]byte, priv.Size()))
	if err := rsa.VerifyPSS(&priv.PublicKey, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}); err != nil {
		t.Fatalf("the salt-0 signature does not verify with auto-detection, so it tests nothing: %v", err)
	}
	return sig
}

// TestPSSSaltLength: PS256/384/512 verify only with the salt as long as
// the hash (RFC 7518 §3.5), not with whatever salt the signer chose.
func TestPSSSaltLength(t *testing.T) {
	keys := map[string]*testKey{}
	for _, alg := range []string{"PS256", "PS384", "PS512"} {
		keys[alg] = newTestKey(t, alg, "main")
	}
	hashes := map[string]crypto.Hash{"PS256": crypto.SHA256, "PS384": crypto.SHA384, "PS512": crypto.SHA512}
	e := newTestEnv(t, Config{Algorithms: []string{"PS256", "PS384", "PS512"}, RefetchInterval: time.Hour},
		keys["PS256"], keys["PS384"], keys["PS512"])
	e.waitReady()
	tests := []struct {
		alg  string
		salt int
		ok   bool
	}{
		{"PS256", 32, true},
		{"PS256", 0, false}, {"PS256", 1, false}, {"PS256", 20, false}, {"PS256", 31, false}, {"PS256", 33, false}, {"PS256", 222, false},
		{"PS384", 48, true},
		{"PS384", 0, false}, {"PS384", 32, false}, {"PS384", 47, false}, {"PS384", 49, false}, {"PS384", 206, false},
		{"PS512", 64, true},
		{"PS512", 0, false}, {"PS512", 32, false}, {"PS512", 63, false}, {"PS512", 65, false}, {"PS512", 190, false},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s salt %d", tt.alg, tt.salt)
		t.Run(name, func(t *testing.T) {
			k := keys[tt.alg]
			c := claimsFor("u-1", "user")
			signing := seg(t, map[string]any{"alg": tt.alg, "kid": k.kid, "typ": "JWT"}) + "." + seg(t, c)
			sig := pssSign(t, k.priv.(*rsa.PrivateKey), hashes[tt.alg], signing, tt.salt)
			tok := signing + "." + base64.RawURLEncoding.EncodeToString(sig)
			got := e.check(envoyRequest("GET", "/books", bearer(tok), nil))
			want := wantInvalid
			if tt.ok {
				want = wantAllow("u-1", "alice", "user", c["jti"].(string))
			}
			if diff := diffResponse(want, got); diff != "" {
				t.Errorf("Check(%s) = %s, want %s (%v); diff (-want +got):\n%s", name, describe(got), describe(want), e.logs.lastCheck(t)["err"], diff)
			}
			if r := e.logs.lastCheck(t)["reason"]; !tt.ok && r != "bad_signature" {
				t.Errorf("Check(%s) logged reason %v, want bad_signature", name, r)
			}
		})
	}
	// What golang-jwt itself signs (the issuer's way) verifies.
	for alg, k := range keys {
		c := claimsFor("u-2", "user")
		got := e.check(envoyRequest("GET", "/books", bearer(k.sign(t, c, nil)), nil))
		if diff := diffResponse(wantAllow("u-2", "alice", "user", c["jti"].(string)), got); diff != "" {
			t.Errorf("Check(%s signed by golang-jwt) = %s, want OK; diff:\n%s", alg, describe(got), diff)
		}
	}
}

// privateJWK returns k's private JWK, as an issuer that leaked it would
// publish it.
func (k *testKey) privateJWK(t testing.TB) map[string]any {
	t.Helper()
	j, err := jwk.FromRaw(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	must(t, j.Set(jwk.KeyIDKey, k.kid))
	must(t, j.Set(jwk.AlgorithmKey, jwa.SignatureAlgorithm(k.alg)))
	must(t, j.Set(jwk.KeyUsageKey, jwk.ForSignature))
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	must(t, json.Unmarshal(b, &m))
	return m
}

// TestJWKSPrivateKeys: a JWKS that publishes private key material means
// the issuer's key has leaked. Such a key is refused, whatever shape it
// has, with an error in the log and a metric, and its tokens do not
// verify.
func TestJWKSPrivateKeys(t *testing.T) {
	main := newTestKey(t, "ES256", "main")
	leakedRSA := newTestKey(t, "RS256", "leaked")
	leakedEC := newTestKey(t, "ES256", "leaked")
	leakedEd := newTestKey(t, "EdDSA", "leaked")
	strayP := newTestKey(t, "RS256", "stray")
	rsaPriv := leakedRSA.privateJWK(t)
	jwks := []any{
		main.jwkMap(t),
		rsaPriv,
		leakedEC.privateJWK(t),
		leakedEd.privateJWK(t),
		edit(strayP.jwkMap(t), "p", rsaPriv["p"]),
		map[string]any{"kty": "oct", "kid": "hmac", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))},
		edit(leakedRSA.jwkMap(t), "kid", "upper-d", "D", rsaPriv["d"]),
		edit(leakedRSA.jwkMap(t), "kid", "garbage-d", "d", "!!not base64!!"),
	}
	leakedKids := []string{leakedRSA.kid, leakedEC.kid, leakedEd.kid, strayP.kid, "hmac", "upper-d", "garbage-d"}
	jw := newJWKSServer(t)
	jw.setJWKs(t, jwks...)
	e := newTestEnvWithJWKS(t, Config{Algorithms: []string{"ES256", "RS256", "EdDSA"}, RefetchInterval: time.Hour}, jw)
	e.waitReady()

	for _, tt := range []struct {
		name string
		key  *testKey
	}{
		{"leaked RSA key", leakedRSA},
		{"leaked EC key", leakedEC},
		{"leaked Ed25519 key", leakedEd},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := e.check(envoyRequest("GET", "/books", bearer(tt.key.sign(t, claimsFor("u", "user"), nil)), nil))
			if diff := diffResponse(wantInvalid, got); diff != "" {
				t.Errorf("Check(token by %s) = %s, want 401; diff:\n%s", tt.name, describe(got), diff)
			}
			if r := e.logs.lastCheck(t)["reason"]; r != "unknown_kid" {
				t.Errorf("Check(token by %s) reason %v, want unknown_kid", tt.name, r)
			}
		})
	}
	if got := e.srv.defaultSource().keys().kids(); len(got) != 1 || got[0] != main.kid {
		t.Errorf("keys loaded = %q, want only %q", got, main.kid)
	}
	if got := counterValue(t, e.reg, "tollgate_authz_jwks_keys_refused_total", "reason", "private_key"); got != float64(len(leakedKids)) {
		t.Errorf(`tollgate_authz_jwks_keys_refused_total{reason="private_key"} = %v, want %d`, got, len(leakedKids))
	}
	logged := map[string]bool{}
	for _, r := range e.logs.lines() {
		if r["level"] == "ERROR" && strings.Contains(r["msg"].(string), "private key material") {
			logged[r["kid"].(string)] = true
		}
	}
	for _, kid := range leakedKids {
		if !logged[kid] {
			t.Errorf("no error-level log line for the private key material under kid %q; log: %s", kid, e.logs.all())
		}
	}
	for _, line := range e.logs.lines() {
		if s := fmt.Sprint(line); strings.Contains(s, rsaPriv["d"].(string)) {
			t.Errorf("a log line contains the leaked private exponent: %s", s)
		}
	}

	// With nothing but a leaked key the outage is visible: not ready.
	jw2 := newJWKSServer(t)
	jw2.setJWKs(t, rsaPriv)
	e2 := newTestEnvWithJWKS(t, Config{}, jw2)
	waitFor(t, "the fetch to end", func() bool {
		return counterValue(t, e2.reg, "tollgate_authz_jwks_fetches_total", "result", "ok")+
			counterValue(t, e2.reg, "tollgate_authz_jwks_fetches_total", "result", "error") > 0
	})
	if err := e2.srv.Ready(context.Background()); err == nil {
		t.Errorf("Ready() = nil with only a leaked private key in the JWKS, want an error")
	}
}

// rocaKey returns an RSA key of exactly bits bits whose primes are made
// the way the Infineon library behind ROCA (CVE-2017-15361) made them
// (Nemec et al., "The Return of Coppersmith's Attack", CCS 2017, §2.3):
// p = k*M + (65537^a mod M), M the product of the first 126 primes (the
// paper's M for 1984- to 3936-bit keys), k and a random.
func rocaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	m := big.NewInt(1)
	for p, n := int64(2), 0; n < 126; p++ {
		if big.NewInt(p).ProbablyPrime(0) {
			m.Mul(m, big.NewInt(p))
			n++
		}
	}
	e := big.NewInt(65537)
	one := big.NewInt(1)
	prime := func(pbits int) *big.Int {
		// k in [1.5*2^(pbits-1)/M, 2^pbits/M): p has pbits bits and is in
		// the top quarter, so p*q has exactly len(p)+len(q) bits.
		lo := new(big.Int).Div(new(big.Int).Lsh(big.NewInt(3), uint(pbits-2)), m)
		lo.Add(lo, one)
		span := new(big.Int).Sub(new(big.Int).Div(new(big.Int).Lsh(one, uint(pbits)), m), lo)
		span.Sub(span, one)
		for {
			a, _ := rand.Int(rand.Reader, m)
			k, _ := rand.Int(rand.Reader, span)
			k.Add(k, lo)
			p := new(big.Int).Mul(k, m)
			p.Add(p, new(big.Int).Exp(e, a, m))
			pm1 := new(big.Int).Sub(p, one)
			if p.BitLen() == pbits && p.ProbablyPrime(20) && new(big.Int).GCD(nil, nil, e, pm1).Cmp(one) == 0 {
				return p
			}
		}
	}
	p, q := prime((bits+1)/2), prime(bits/2)
	n := new(big.Int).Mul(p, q)
	if n.BitLen() != bits {
		t.Fatalf("ROCA-style key has %d bits, want %d", n.BitLen(), bits)
	}
	phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
	priv := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: n, E: 65537},
		D:         new(big.Int).ModInverse(e, phi),
		Primes:    []*big.Int{p, q},
	}
	priv.Precompute()
	if err := priv.Validate(); err != nil {
		t.Fatalf("ROCA-style key: %v", err)
	}
	return priv
}

// rocaPrimes and rocaFingerprint are the paper's published fingerprint
// test, written out plainly as a reference for rocacheck: N mod p must
// lie in the subgroup that 65537 generates mod p, for every one of the
// primes 3 to 167.
var rocaPrimes = []int64{3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167}

func rocaFingerprint(n *big.Int) bool {
	for _, p := range rocaPrimes {
		r := new(big.Int).Mod(n, big.NewInt(p)).Int64()
		g := 65537 % p
		in := false
		for x, i := int64(1), int64(0); i < p; x, i = x*g%p, i+1 {
			if x == r {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	return true
}

// rocaPublished is a ROCA-vulnerable 2048-bit public key from the test
// vectors of github.com/titanous/rocacheck (the first of its "bad" keys).
const rocaPublished = `-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAlze9c7qGdjDLVR/ntk+4
ZkfMcYsAnmfTFHfe3Xv7jRQqPCXCULtr0y0jG3aRJmEenoXO9uDveqr43gFB9yvA
dLEhu0aJqpB7lNZ+yXsvfVp/96dkSN8oWYL/dd9Z7GQOvVniHUY3Xsd7zdw2eYOy
HSXhhA2Ttwnj3c1jEYfC0y9q1cU99aL0ogGDqolcOvlkJu+mGb+6+WyboFa1gwRu
kYxBHZWKiHCt/eihvXsPTzTlXmTXWdGJtA1xZDnCBWuZ90b5R0agXVIESTl0cCyH
aQM/tLZmktJIU+Eu7ALBXemPg9kh3SCnYd3/YvDGCtYSXOWthHwlP5CImRBcQaNn
cQIDAQAB
-----END PUBLIC KEY-----`

var (
	rocaOnce sync.Once
	rocaPriv *rsa.PrivateKey
)

// rocaTestKey is a 2049-bit ROCA-style key as a testKey, made once per
// test binary.
func rocaTestKey(t testing.TB) *testKey {
	t.Helper()
	rocaOnce.Do(func() { rocaPriv = rocaKey(t, 2049) })
	k := &testKey{alg: "RS256", priv: rocaPriv}
	pub, err := jwk.FromRaw(rocaPriv.Public())
	if err != nil {
		t.Fatal(err)
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	k.kid = base64.RawURLEncoding.EncodeToString(tp)
	return k
}

// TestROCAFingerprint pins the fingerprint test authz relies on against
// the paper's plain one: the published vulnerable key and a key made
// the vulnerable way are flagged, ordinary keys are not.
func TestROCAFingerprint(t *testing.T) {
	block, _ := pem.Decode([]byte(rocaPublished))
	published, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  *rsa.PublicKey
		weak bool
	}{
		{"published vulnerable key", published.(*rsa.PublicKey), true},
		{"2049-bit key made the Infineon way", &rocaTestKey(t).priv.(*rsa.PrivateKey).PublicKey, true},
		{"crypto/rsa key", &newTestKey(t, "RS256", "main").priv.(*rsa.PrivateKey).PublicKey, false},
		{"another crypto/rsa key", &newTestKey(t, "PS256", "main").priv.(*rsa.PrivateKey).PublicKey, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rocaFingerprint(tt.pub.N); got != tt.weak {
				t.Fatalf("reference fingerprint(%s) = %v, want %v", tt.name, got, tt.weak)
			}
			j, err := jwk.FromRaw(tt.pub)
			if err != nil {
				t.Fatal(err)
			}
			err = jose.CheckRSA(j, tt.pub)
			if got := errors.Is(err, errWeakKey); got != tt.weak {
				t.Errorf("CheckRSA(%s) = %v, want weak %v", tt.name, err, tt.weak)
			}
		})
	}
}

// TestWeakRSAKeysRefused: a ROCA key and bad exponents are refused when
// the JWKS is loaded, so their tokens find no key, and a JWKS holding
// nothing else leaves authz not ready.
func TestWeakRSAKeysRefused(t *testing.T) {
	main := newTestKey(t, "ES256", "main")
	roca := rocaTestKey(t)
	rs := newTestKey(t, "RS256", "main")
	exp1 := edit(rs.jwkMap(t), "kid", "e-1", "e", "AQ")
	jw := newJWKSServer(t)
	jw.setJWKs(t, main.jwkMap(t), roca.jwkMap(t), exp1)
	e := newTestEnvWithJWKS(t, Config{RefetchInterval: time.Hour}, jw)
	e.waitReady()
	got := e.check(envoyRequest("GET", "/books", bearer(roca.sign(t, claimsFor("u", "user"), nil)), nil))
	if diff := diffResponse(wantInvalid, got); diff != "" {
		t.Errorf("Check(token by a ROCA key) = %s, want 401; diff:\n%s", describe(got), diff)
	}
	if r := e.logs.lastCheck(t)["reason"]; r != "unknown_kid" {
		t.Errorf("Check(token by a ROCA key) reason %v, want unknown_kid", r)
	}
	if got := counterValue(t, e.reg, "tollgate_authz_jwks_keys_refused_total", "reason", "weak_key"); got != 2 {
		t.Errorf(`tollgate_authz_jwks_keys_refused_total{reason="weak_key"} = %v, want 2`, got)
	}

	for _, tt := range []struct {
		name string
		jwk  map[string]any
	}{
		{"only an exponent-1 key", exp1},
		{"only a ROCA key", roca.jwkMap(t)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			jw := newJWKSServer(t)
			jw.setJWKs(t, tt.jwk)
			e := newTestEnvWithJWKS(t, Config{}, jw)
			waitFor(t, "the fetch to end", func() bool {
				return counterValue(t, e.reg, "tollgate_authz_jwks_fetches_total", "result", "ok")+
					counterValue(t, e.reg, "tollgate_authz_jwks_fetches_total", "result", "error") > 0
			})
			if err := e.srv.Ready(context.Background()); err == nil {
				t.Errorf("Ready() = nil with %s in the JWKS, want an error", tt.name)
			}
			if got := counterValue(t, e.reg, "tollgate_authz_jwks_keys_refused_total", "reason", "weak_key"); got != 1 {
				t.Errorf(`tollgate_authz_jwks_keys_refused_total{reason="weak_key"} = %v with %s, want 1`, got, tt.name)
			}
		})
	}
}

// dpopKey is a client's DPoP key pair, signing proofs.
func dpopKey(t testing.TB) *dpop.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// boundClaims are claimsFor with the token bound to s (cnf.jkt).
func boundClaims(s *dpop.Signer, sub string, roles ...string) map[string]any {
	c := claimsFor(sub, roles...)
	c["cnf"] = map[string]any{"jkt": s.JKT()}
	return c
}

// proof signs a proof by s for method and url, naming tok in ath; o's
// other fields are used as given.
func proof(t testing.TB, s *dpop.Signer, method, url, tok string, o dpop.ProofOptions) string {
	t.Helper()
	o.AccessToken = tok
	p, err := s.Proof(method, url, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// dpopHeaders are the headers of a DPoP request: the token under the
// DPoP scheme and the proofs (more than one joined with ",", as Envoy
// joins repeated headers).
func dpopHeaders(tok string, proofs ...string) map[string]string {
	h := map[string]string{"authorization": "DPoP " + tok}
	if len(proofs) > 0 {
		h["dpop"] = strings.Join(proofs, ",")
	}
	return h
}

// The DPoP section of the attack table (RFC 9449 §7): a bound token is
// worthless without a fresh proof by its key for this very request, and
// the DPoP scheme is worthless without a bound token. Each row names the
// reason that is its defence.
func TestAttackDPoP(t *testing.T) {
	e := newTestEnv(t, Config{CacheSize: 100})
	e.waitReady()
	key, other := dpopKey(t), dpopKey(t)
	bound := e.key.sign(t, boundClaims(key, "victim", "user"), nil)
	otherBound := e.key.sign(t, boundClaims(key, "victim", "user"), nil)
	unbound := e.key.sign(t, claimsFor("victim", "user"), nil)
	const url = "http://books.example/books"
	good := func() string { return proof(t, key, "GET", url, bound, dpop.ProofOptions{}) }
	// The cache holds the bound token from here on: every row below is
	// a cache hit for it, so none can pass on the token alone.
	if got := e.check(envoyRequest("GET", "/books", dpopHeaders(bound, good()), nil)); got.GetOkResponse() == nil {
		t.Fatalf("Check(bound token with a fresh proof) = %s, want OK (%v)", describe(got), e.logs.lastCheck(t)["err"])
	}
	wrongCNF := func(cnf any) string {
		c := claimsFor("victim", "user")
		c["cnf"] = cnf
		return e.key.sign(t, c, nil)
	}
	jktWrong := wrongCNF(map[string]any{"jkt": 5})

	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		ext     map[string]string
		reason  string
		status  int
	}{
		{name: "bound token as Bearer", headers: map[string]string{"authorization": "Bearer " + bound, "dpop": good()}, reason: "dpop_bound_as_bearer"},
		{name: "bound token as Bearer without proof", headers: bearer(bound), reason: "dpop_bound_as_bearer"},
		{name: "bound token in x-access-tokens", headers: map[string]string{"x-access-tokens": bound, "dpop": good()}, reason: "dpop_bound_as_bearer"},
		{name: "DPoP scheme without proof", headers: dpopHeaders(bound), reason: "dpop_no_proof"},
		{name: "DPoP scheme with an empty proof", headers: map[string]string{"authorization": "DPoP " + bound, "dpop": ""}, reason: "dpop_invalid_proof"},
		{name: "two DPoP headers", headers: dpopHeaders(bound, good(), good()), reason: "dpop_invalid_proof"},
		{name: "proof by another key", headers: dpopHeaders(bound, proof(t, other, "GET", url, bound, dpop.ProofOptions{})), reason: "dpop_key_mismatch"},
		{name: "proof whose ath names another token", headers: dpopHeaders(bound, proof(t, key, "GET", url, otherBound, dpop.ProofOptions{})), reason: "dpop_ath_mismatch"},
		{name: "proof without ath", headers: dpopHeaders(bound, proof(t, key, "GET", url, "", dpop.ProofOptions{})), reason: "dpop_ath_mismatch"},
		{name: "proof for another method", headers: dpopHeaders(bound, proof(t, key, "DELETE", url, bound, dpop.ProofOptions{})), reason: "dpop_invalid_proof"},
		{name: "proof for another path", headers: dpopHeaders(bound, proof(t, key, "GET", "http://books.example/users", bound, dpop.ProofOptions{})), reason: "dpop_invalid_proof"},
		{name: "proof for another host", headers: dpopHeaders(bound, proof(t, key, "GET", "http://evil.example/books", bound, dpop.ProofOptions{})), reason: "dpop_invalid_proof"},
		{name: "proof for another scheme", headers: dpopHeaders(bound, proof(t, key, "GET", "https://books.example/books", bound, dpop.ProofOptions{})), reason: "dpop_invalid_proof"},
		{name: "proof for another port", headers: dpopHeaders(bound, proof(t, key, "GET", "http://books.example:8443/books", bound, dpop.ProofOptions{})), reason: "dpop_invalid_proof"},
		{name: "proof too old", headers: dpopHeaders(bound, proof(t, key, "GET", url, bound, dpop.ProofOptions{IssuedAt: time.Now().Add(-2 * time.Minute)})), reason: "dpop_invalid_proof"},
		{name: "proof from the future", headers: dpopHeaders(bound, proof(t, key, "GET", url, bound, dpop.ProofOptions{IssuedAt: time.Now().Add(time.Minute)})), reason: "dpop_invalid_proof"},
		{name: "the token as its own proof", headers: dpopHeaders(bound, bound), reason: "dpop_invalid_proof"},
		{name: "unbound token with the DPoP scheme", headers: dpopHeaders(unbound, proof(t, key, "GET", url, unbound, dpop.ProofOptions{})), reason: "dpop_unbound_token"},
		{name: "dpop: required, bearer token", headers: bearer(unbound), ext: map[string]string{"dpop": "required"}, reason: "dpop_required"},
		{name: "dpop: required, bearer token with a stray proof", headers: map[string]string{"authorization": "Bearer " + unbound, "dpop": proof(t, key, "GET", url, unbound, dpop.ProofOptions{})}, ext: map[string]string{"dpop": "required"}, reason: "dpop_required"},
		{name: "dpop: misspelt value", headers: dpopHeaders(bound, good()), ext: map[string]string{"dpop": "yes"}, reason: "bad_policy", status: 403},
		{name: "cnf that is not an object", headers: bearer(wrongCNF("x")), reason: "bad_claims"},
		{name: "cnf without jkt", headers: bearer(wrongCNF(map[string]any{"x5t#S256": "abc"})), reason: "bad_claims"},
		{name: "cnf.jkt not a string", headers: dpopHeaders(jktWrong, proof(t, key, "GET", url, jktWrong, dpop.ProofOptions{})), reason: "bad_claims"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path := cmp.Or(tt.method, "GET"), cmp.Or(tt.path, "/books")
			got := e.check(envoyRequest(method, path, tt.headers, tt.ext))
			if s := statusOf(got); s != cmp.Or(tt.status, 401) {
				t.Errorf("Check(%s) = %s, want %d", tt.name, describe(got), cmp.Or(tt.status, 401))
			}
			if r := e.logs.lastCheck(t)["reason"]; r != tt.reason {
				t.Errorf("Check(%s) logged reason %v, want %s (err %v)", tt.name, r, tt.reason, e.logs.lastCheck(t)["err"])
			}
		})
	}
}

// A proof is used once: within one authz, whether the token is verified
// afresh or comes from the cache, and with the cache off.
func TestDPoPReplay(t *testing.T) {
	for _, cacheSize := range []int{0, 100} {
		t.Run(fmt.Sprintf("cache %d", cacheSize), func(t *testing.T) {
			e := newTestEnv(t, Config{CacheSize: cacheSize})
			e.waitReady()
			key := dpopKey(t)
			tok := e.key.sign(t, boundClaims(key, "u-1", "user"), nil)
			first := proof(t, key, "GET", "http://books.example/books", tok, dpop.ProofOptions{})
			second := proof(t, key, "GET", "http://books.example/books", tok, dpop.ProofOptions{})
			wantReason := map[int]string{0: "verified", 100: "cached"}[cacheSize]
			for _, st := range []struct {
				name, proof, reason string
				ok                  bool
			}{
				{"first proof", first, "verified", true},
				{"first proof again", first, "dpop_replayed", false},
				{"second proof", second, wantReason, true},
				{"second proof again", second, "dpop_replayed", false},
			} {
				got := e.check(envoyRequest("GET", "/books", dpopHeaders(tok, st.proof), nil))
				if (got.GetOkResponse() != nil) != st.ok {
					t.Errorf("Check(%s) = %s, want OK %v", st.name, describe(got), st.ok)
				}
				if r := e.logs.lastCheck(t)["reason"]; r != st.reason {
					t.Errorf("Check(%s) logged reason %v, want %s (err %v)", st.name, r, st.reason, e.logs.lastCheck(t)["err"])
				}
			}
		})
	}
}
