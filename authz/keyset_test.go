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
