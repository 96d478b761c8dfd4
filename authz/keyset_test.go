package authz

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

func parseSet(t *testing.T, keys ...map[string]any) jwk.Set {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.Parse(b, jwk.WithIgnoreParseError(true))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func edit(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func TestBuildKeySet(t *testing.T) {
	es := newTestKey(t, "ES256", "main").jwkMap(t)
	es384 := newTestKey(t, "ES384", "main").jwkMap(t)
	rs := newTestKey(t, "RS256", "main").jwkMap(t)
	weak := newTestKey(t, "RS1024", "weak").jwkMap(t)
	ed := newTestKey(t, "EdDSA", "main").jwkMap(t)
	x, _ := ecdh.X25519().GenerateKey(rand.Reader)
	x25519 := map[string]any{"kty": "OKP", "crv": "X25519", "kid": "x25519",
		"x": base64.RawURLEncoding.EncodeToString(x.PublicKey().Bytes())}
	oct := map[string]any{"kty": "oct", "kid": "hmac", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))}
	defaults := []string{"ES256", "RS256", "EdDSA"}
	rsPriv := newTestKey(t, "RS256", "main").privateJWK(t)
	esPriv := newTestKey(t, "ES256", "main").privateJWK(t)
	edPriv := newTestKey(t, "EdDSA", "main").privateJWK(t)
	roca := rocaTestKey(t).jwkMap(t)

	tests := []struct {
		name        string
		allowed     []string
		keys        []map[string]any
		want        map[string]string // kid -> alg bound
		wantRefused int
	}{
		{"issuer's ES256 key", defaults, []map[string]any{es}, map[string]string{es["kid"].(string): "ES256"}, 0},
		{"RS256 and EdDSA keys", defaults, []map[string]any{rs, ed}, map[string]string{rs["kid"].(string): "RS256", ed["kid"].(string): "EdDSA"}, 0},
		{"no alg, EC P-256: the curve names ES256", defaults, []map[string]any{edit(es, "alg", nil)}, map[string]string{es["kid"].(string): "ES256"}, 0},
		{"no alg, Ed25519", defaults, []map[string]any{edit(ed, "alg", nil)}, map[string]string{ed["kid"].(string): "EdDSA"}, 0},
		{"no alg, RSA with one RSA alg allowed", defaults, []map[string]any{edit(rs, "alg", nil)}, map[string]string{rs["kid"].(string): "RS256"}, 0},
		{"no alg, RSA with two RSA algs allowed", []string{"RS256", "PS256"}, []map[string]any{edit(rs, "alg", nil)}, map[string]string{}, 1},
		{"no alg, EC P-384 with ES384 not allowed", defaults, []map[string]any{edit(es384, "alg", nil)}, map[string]string{}, 1},
		{"alg outside the allowlist", defaults, []map[string]any{es384}, map[string]string{}, 1},
		{"alg not fitting the curve", []string{"ES256", "ES384"}, []map[string]any{edit(es, "alg", "ES384")}, map[string]string{}, 1},
		{"alg not fitting the key type", defaults, []map[string]any{edit(es, "alg", "RS256")}, map[string]string{}, 1},
		{"RSA under 2048 bits", defaults, []map[string]any{weak}, map[string]string{}, 1},
		{"RSA exponent 65537", defaults, []map[string]any{edit(rs, "e", "AQAB")}, map[string]string{rs["kid"].(string): "RS256"}, 0},
		{"RSA exponent 2^31-1, the largest", defaults, []map[string]any{edit(rs, "e", "f____w")}, map[string]string{rs["kid"].(string): "RS256"}, 0},
		{"RSA exponent 1", defaults, []map[string]any{edit(rs, "e", "AQ")}, map[string]string{}, 1},
		{"RSA exponent 3", defaults, []map[string]any{edit(rs, "e", "Aw")}, map[string]string{}, 1},
		{"RSA exponent 65535, odd but small", defaults, []map[string]any{edit(rs, "e", "__8")}, map[string]string{}, 1},
		{"RSA exponent 65538, even", defaults, []map[string]any{edit(rs, "e", "AQAC")}, map[string]string{}, 1},
		{"RSA exponent 2^31+1", defaults, []map[string]any{edit(rs, "e", "gAAAAQ")}, map[string]string{}, 1},
		{"RSA exponent 2^72+65537, which jwx truncates to 65537", defaults, []map[string]any{edit(rs, "e", "AQAAAAAAAAEAAQ")}, map[string]string{}, 1},
		{"RSA key with the ROCA fingerprint", defaults, []map[string]any{roca}, map[string]string{}, 1},
		{"RSA private key", defaults, []map[string]any{rsPriv}, map[string]string{}, 1},
		{"EC private key", defaults, []map[string]any{esPriv}, map[string]string{}, 1},
		{"Ed25519 private key", defaults, []map[string]any{edPriv}, map[string]string{}, 1},
		{"RSA public key with a stray q", defaults, []map[string]any{edit(rs, "q", rsPriv["q"])}, map[string]string{}, 1},
		{"symmetric key", []string{"ES256"}, []map[string]any{oct}, map[string]string{}, 1},
		{"X25519 is not a signature key", defaults, []map[string]any{x25519}, map[string]string{}, 1},
		{"use enc", defaults, []map[string]any{edit(es, "use", "enc")}, map[string]string{}, 1},
		{"key_ops without verify", defaults, []map[string]any{edit(es, "key_ops", []string{"encrypt"})}, map[string]string{}, 1},
		{"key_ops with verify", defaults, []map[string]any{edit(es, "key_ops", []string{"verify"})}, map[string]string{es["kid"].(string): "ES256"}, 0},
		{"no kid", defaults, []map[string]any{edit(es, "kid", nil)}, map[string]string{}, 1},
		{"EC point off the curve", defaults, []map[string]any{edit(es, "y", es["x"])}, map[string]string{}, 1},
		{"duplicate kid refuses both", defaults, []map[string]any{es, edit(rs, "kid", es["kid"])}, map[string]string{}, 2},
		{"duplicate kid with a refused twin", defaults, []map[string]any{es, edit(weak, "kid", es["kid"])}, map[string]string{}, 2},
		{"bad keys do not spoil good ones", defaults, []map[string]any{weak, es, oct}, map[string]string{es["kid"].(string): "ES256"}, 2},
		{"unparseable key is dropped", defaults, []map[string]any{{"kty": "EC", "kid": "junk", "crv": "P-256"}, es}, map[string]string{es["kid"].(string): "ES256"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, refused := buildKeySet(parseSet(t, tt.keys...), tt.allowed, nil)
			got := map[string]string{}
			for kid, k := range ks.keys {
				got[kid] = k.alg
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("buildKeySet(%s) keys (-want +got):\n%s", tt.name, diff)
			}
			if len(refused) != tt.wantRefused {
				var errs []string
				for _, r := range refused {
					errs = append(errs, r.kid+": "+r.err.Error())
				}
				sort.Strings(errs)
				t.Errorf("buildKeySet(%s) refused %d keys %q, want %d", tt.name, len(refused), errs, tt.wantRefused)
			}
		})
	}
}

// TestBuildKeySetKeepsIdentity: an unchanged key keeps its identity
// across refreshes (so cached verifications survive), a changed key
// under the same kid does not (so they die).
func TestBuildKeySetKeepsIdentity(t *testing.T) {
	es := newTestKey(t, "ES256", "main").jwkMap(t)
	other := newTestKey(t, "ES256", "other").jwkMap(t)
	allowed := []string{"ES256"}
	kid := es["kid"].(string)
	first, _ := buildKeySet(parseSet(t, es), allowed, nil)
	same, _ := buildKeySet(parseSet(t, es, other), allowed, first)
	if first.keys[kid] != same.keys[kid] {
		t.Errorf("refresh with the same key material gave a new key identity; cached tokens would be dropped needlessly")
	}
	swapped, _ := buildKeySet(parseSet(t, edit(other, "kid", kid)), allowed, same)
	if swapped.keys[kid] == same.keys[kid] {
		t.Errorf("new key material under an old kid kept the old identity; tokens cached under the old key would stay valid")
	}
	if !swapped.holds(swapped.keys[kid]) || swapped.holds(same.keys[kid]) {
		t.Errorf("holds() does not track key identity")
	}
}

// TestRefusalReasons pins the reason label each refusal is counted
// under in tollgate_authz_jwks_keys_refused_total.
func TestRefusalReasons(t *testing.T) {
	rs := newTestKey(t, "RS256", "main").jwkMap(t)
	es := newTestKey(t, "ES256", "main").jwkMap(t)
	rsPriv := newTestKey(t, "RS256", "main").privateJWK(t)
	tests := []struct {
		name string
		key  map[string]any
		want string
	}{
		{"RSA private key", rsPriv, refusedPrivate},
		{"EC private key", newTestKey(t, "ES256", "main").privateJWK(t), refusedPrivate},
		{"public key with a stray dp", edit(rs, "dp", rsPriv["dp"]), refusedPrivate},
		{"RSA-1024", newTestKey(t, "RS1024", "weak").jwkMap(t), refusedWeak},
		{"exponent 1", edit(rs, "e", "AQ"), refusedWeak},
		{"exponent 2^72+65537", edit(rs, "e", "AQAAAAAAAAEAAQ"), refusedWeak},
		{"ROCA fingerprint", rocaTestKey(t).jwkMap(t), refusedWeak},
		{"no kid", edit(es, "kid", nil), refusedUnusable},
		{"use enc", edit(es, "use", "enc"), refusedUnusable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, refused := buildKeySet(parseSet(t, tt.key), DefaultAlgorithms, nil)
			if len(refused) != 1 {
				t.Fatalf("buildKeySet(%s) refused %d keys, want 1", tt.name, len(refused))
			}
			if got := refused[0].reason(); got != tt.want {
				t.Errorf("buildKeySet(%s) refused it as %s (%v), want %s", tt.name, got, refused[0].err, tt.want)
			}
		})
	}
}

// TestParseJWKS: private key material is refused by member name before
// jwx parses the key, so even a leaked key jwx would drop is reported.
func TestParseJWKS(t *testing.T) {
	es := newTestKey(t, "ES256", "main").jwkMap(t)
	rsPriv := newTestKey(t, "RS256", "main").privateJWK(t)
	doc := func(keys ...any) string {
		b, err := json.Marshal(map[string]any{"keys": keys})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name        string
		body        string
		wantKeys    int
		wantRefused []string // kids refused as private keys
		wantErr     bool
	}{
		{"public keys", doc(es), 1, nil, false},
		{"empty set", `{"keys":[]}`, 0, nil, false},
		{"a private key beside a public one", doc(es, rsPriv), 1, []string{rsPriv["kid"].(string)}, false},
		{"d in upper case, which jwx drops", doc(edit(es, "kid", "D", "D", rsPriv["d"])), 0, []string{"D"}, false},
		{"d not base64, which jwx drops", doc(edit(es, "kid", "junk", "d", "!!")), 0, []string{"junk"}, false},
		{"d null", doc(edit(es, "kid", "null-d", "d", json.RawMessage("null"))), 0, []string{"null-d"}, false},
		{"oth", doc(edit(es, "kid", "oth", "oth", []any{})), 0, []string{"oth"}, false},
		{"oct key", doc(map[string]any{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}), 0, []string{"h"}, false},
		{"private key without a kid", doc(edit(rsPriv, "kid", nil)), 0, []string{""}, false},
		{"a key that is not an object", doc("x", es), 1, nil, false},
		{"an unparseable public key is dropped", doc(map[string]any{"kty": "EC", "kid": "junk", "crv": "P-256"}, es), 1, nil, false},
		{"not JSON", `<html>`, 0, nil, true},
		{"no keys member", `{"kty":"EC"}`, 0, nil, true},
		{"keys not an array", `{"keys":{}}`, 0, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, refused, err := parseJWKS([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseJWKS(%s) error = %v, want error %v", tt.name, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if set.Len() != tt.wantKeys {
				t.Errorf("parseJWKS(%s) kept %d keys, want %d", tt.name, set.Len(), tt.wantKeys)
			}
			var kids []string
			for _, r := range refused {
				if r.reason() != refusedPrivate {
					t.Errorf("parseJWKS(%s) refused %q as %s, want %s", tt.name, r.kid, r.reason(), refusedPrivate)
				}
				kids = append(kids, r.kid)
			}
			if diff := cmp.Diff(tt.wantRefused, kids); diff != "" {
				t.Errorf("parseJWKS(%s) refused kids (-want +got):\n%s", tt.name, diff)
			}
		})
	}
}
