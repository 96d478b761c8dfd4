package authz

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/jose"
)

// fuzzNow is the fixed clock of the fuzz targets, so the tokens in the
// seed corpus (signed by testdata/fuzz-es256.pem, exp in 2100) stay valid.
var fuzzNow = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// fuzzRoles are the only identities the fuzz key ever signed.
var fuzzRoles = map[string][]string{"fuzz-user": {"user"}, "fuzz-admin": {"admin", "user"}}

func fuzzKey(t testing.TB) *testKey {
	t.Helper()
	b, err := os.ReadFile("testdata/fuzz-es256.pem")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k := &testKey{alg: "ES256", priv: priv.(*ecdsa.PrivateKey)}
	pub, _ := jwk.FromRaw(k.priv.Public())
	tp, _ := pub.Thumbprint(crypto.SHA256)
	k.kid = base64.RawURLEncoding.EncodeToString(tp)
	return k
}

func fuzzClaims(sub string) map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": testAudience, "sub": sub, "name": sub, "jti": sub + "-jti",
		"iat": fuzzNow.Add(-time.Hour).Unix(), "nbf": fuzzNow.Add(-time.Hour).Unix(),
		"exp":   time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).Unix(),
		"roles": fuzzRoles[sub],
	}
}

// storedSeed returns the token header value of a FuzzCheck corpus file.
func storedSeed(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/fuzz/FuzzCheck/" + name)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	v, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "string("), ")"))
	if err != nil {
		t.Fatalf("corpus file %s: %v", name, err)
	}
	return v
}

// parseExt turns "k=v;k=v" into context_extensions.
func parseExt(s string) map[string]string {
	if s == "" {
		return nil
	}
	m := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

var denialBodies = map[int32]string{
	16: "", // two possible bodies, checked below
	7:  `{"message":"insufficient permissions"}` + "\n",
	14: `{"message":"authorization is unavailable"}` + "\n",
}

// FuzzCheck feeds arbitrary token header values and policies through
// the whole Check path. Whatever the input: no panic, no RPC error, a
// well-formed answer, and an allow only for a token the fuzz key signed,
// with a policy that holds.
func FuzzCheck(f *testing.F) {
	k := fuzzKey(f)
	jw := newJWKSServer(f, k)
	srv, err := New(context.Background(), testConfig(Config{
		Issuer: testIssuer, JWKSURL: jw.jwksURL(), CacheSize: 64,
		MinRefresh: time.Hour, MaxRefresh: time.Hour, RefetchInterval: time.Hour,
		// The stored corpus's tokens live from 2026 to 2100.
		MaxTokenLifetime: 100 * 365 * 24 * time.Hour,
	}), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	waitFor(f, "ready", func() bool { return srv.Ready(context.Background()) == nil })
	srv.now = func() time.Time { return fuzzNow }

	user := k.sign(f, fuzzClaims("fuzz-user"), nil)
	admin := k.sign(f, fuzzClaims("fuzz-admin"), nil)
	// The target is only worth running if its valid tokens, fresh and
	// from the stored corpus, are allowed: an allow is what it guards.
	for _, v := range []string{"Bearer " + user, storedSeed(f, "valid-bearer")} {
		resp, _ := srv.Check(context.Background(), envoyRequest("GET", "/books", map[string]string{"authorization": v}, nil))
		if resp.GetOkResponse() == nil {
			f.Fatalf("FuzzCheck setup: a valid token was denied: %v", resp)
		}
	}
	h, p, s := parts(user)
	f.Add(uint8(0), "Bearer "+user, "")
	f.Add(uint8(0), "bearer "+admin, "require=admin;route=users")
	f.Add(uint8(1), user, "require=admin")
	f.Add(uint8(2), admin, "require=user, admin")
	f.Add(uint8(0), "Bearer "+h+"."+p+".", "")
	f.Add(uint8(1), seg(f, map[string]any{"alg": "none", "kid": k.kid})+"."+p+"."+s, "")
	f.Add(uint8(1), strings.Repeat(".", 9000), "")
	f.Add(uint8(0), `Bearer {"payload":"`+p+`","protected":"`+h+`","signature":"`+s+`"}`, "")
	f.Add(uint8(2), user+","+admin, "requires=admin")

	tokenHeaders := DefaultTokenHeaders
	f.Fuzz(func(t *testing.T, header uint8, value, ext string) {
		name := tokenHeaders[int(header)%len(tokenHeaders)]
		extMap := parseExt(ext)
		req := envoyRequest("GET", "/books", map[string]string{name: value}, extMap)
		resp, err := srv.Check(context.Background(), req)
		if err != nil || resp == nil {
			t.Fatalf("Check = %v, %v; want a CheckResponse", resp, err)
		}
		code := resp.GetStatus().GetCode()
		if ok := resp.GetOkResponse(); ok != nil {
			if code != 0 {
				t.Fatalf("OK response with status %d", code)
			}
			sub := resp.GetDynamicMetadata().GetFields()["sub"].GetStringValue()
			roles, signed := fuzzRoles[sub]
			if !signed {
				t.Fatalf("allowed sub %q that no trusted key signed (header %s: %q)", sub, name, value)
			}
			pol, err := srv.parsePolicy(extMap)
			if err != nil {
				t.Fatalf("allowed under a bad policy %q: %v", ext, err)
			}
			if m := pol.missingRole(roles); m != "" {
				t.Fatalf("allowed %s without required role %s", sub, m)
			}
			for _, hv := range ok.GetHeaders() {
				if hv.GetAppend() != nil || hv.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
					t.Fatalf("identity header %s is not a plain overwrite", hv.GetHeader().GetKey())
				}
			}
			for _, th := range tokenHeaders {
				if !slices.Contains(ok.GetHeadersToRemove(), th) {
					t.Fatalf("token header %s is not removed", th)
				}
			}
			return
		}
		d := resp.GetDeniedResponse()
		if d == nil {
			t.Fatalf("response is neither OK nor denied: %v", resp)
		}
		want, known := denialBodies[code]
		if !known {
			t.Fatalf("denied with status %d, want 16, 7 or 14", code)
		}
		if code == 16 {
			if d.GetBody() != `{"message":"token is invalid"}`+"\n" && d.GetBody() != `{"message":"a valid token is missing"}`+"\n" && d.GetBody() != `{"message":"DPoP proof is invalid"}`+"\n" {
				t.Fatalf("401 body %q", d.GetBody())
			}
		} else if d.GetBody() != want {
			t.Fatalf("status %d body %q, want %q", code, d.GetBody(), want)
		}
		if !json.Valid([]byte(d.GetBody())) {
			t.Fatalf("denial body is not JSON: %q", d.GetBody())
		}
	})
}

// FuzzKeySet feeds arbitrary JWKS documents to the key set parser and
// builder: no panic, and every key it trusts is safe (kid set, alg
// allowlisted and fitting the key, RSA at least 2048 bits with a sound
// exponent, EC points on their curve, no private key material).
func FuzzKeySet(f *testing.F) {
	for _, k := range []*testKey{fuzzKey(f), newTestKey(f, "RS256", "main"), newTestKey(f, "EdDSA", "main"), newTestKey(f, "RS1024", "weak")} {
		b, _ := json.Marshal(map[string]any{"keys": []any{k.jwkMap(f)}})
		f.Add(b, false)
		m := k.jwkMap(f)
		delete(m, "alg")
		b, _ = json.Marshal(map[string]any{"keys": []any{m}})
		f.Add(b, true)
	}
	f.Add([]byte(`{"keys":[{"kty":"oct","kid":"h","alg":"HS256","k":"c2VjcmV0"}]}`), false)
	f.Add([]byte(`{"keys":[{"kty":"EC","kid":"e","crv":"P-256","x":"AA","y":"AA"}]}`), false)
	priv, _ := json.Marshal(map[string]any{"keys": []any{newTestKey(f, "RS256", "main").privateJWK(f)}})
	f.Add(priv, false)
	f.Fuzz(func(t *testing.T, data []byte, morePS bool) {
		set, _, err := parseJWKS(data)
		if err != nil {
			return
		}
		allowed := DefaultAlgorithms
		if morePS {
			allowed = []string{"ES256", "RS256", "PS256", "EdDSA"}
		}
		ks, _ := buildKeySet(set, allowed, nil)
		for i := 0; i < set.Len(); i++ {
			k, _ := set.Key(i)
			if names := privateParts(k); len(names) > 0 && ks.lookup(k.KeyID()) != nil {
				t.Fatalf("key %q with private members %v trusted", k.KeyID(), names)
			}
		}
		for kid, k := range ks.keys {
			if kid == "" || k.kid != kid {
				t.Fatalf("key under kid %q says kid %q", kid, k.kid)
			}
			if !slices.Contains(allowed, k.alg) || !algFits(k.alg, k.pub) {
				t.Fatalf("key %q trusted with alg %s outside %v or not fitting %s", kid, k.alg, allowed, describeKey(k.pub))
			}
			switch p := k.pub.(type) {
			case *rsa.PublicKey:
				if p.N.BitLen() < jose.MinRSABits {
					t.Fatalf("trusted RSA-%d key", p.N.BitLen())
				}
				if p.E < jose.MinRSAExponent || p.E%2 == 0 {
					t.Fatalf("trusted RSA key with exponent %d", p.E)
				}
			case *ecdsa.PublicKey:
				if _, err := p.ECDH(); err != nil {
					t.Fatalf("trusted EC key off its curve")
				}
			}
		}
	})
}
