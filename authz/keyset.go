package authz

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/tollgate-dev/tollgate/internal/jose"
)

// Why a JWKS key is refused, as the label of
// tollgate_authz_jwks_keys_refused_total.
const (
	refusedPrivate  = "private_key" // the JWK carries private key material
	refusedWeak     = "weak_key"    // short modulus, bad exponent, ROCA
	refusedUnusable = "unusable"    // anything else
)

var (
	// errPrivateKey means a JWKS published private key material: the
	// issuer's key has leaked, and trusting it would hide that.
	errPrivateKey = errors.New("key carries private key material")
	// errWeakKey means a key a forger could break.
	errWeakKey = jose.ErrWeakKey
)

// verifyKey is one trusted key from the JWKS, bound to exactly one
// algorithm. It is immutable; a refresh that finds the same key material
// under the same kid keeps the same *verifyKey, so a cached verification
// stays valid exactly as long as the pointer is still in the current set.
type verifyKey struct {
	kid    string
	alg    string
	method jwt.SigningMethod
	pub    crypto.PublicKey
	thumb  string // RFC 7638 thumbprint, to recognise the key across refreshes
}

// keySet is an immutable set of verification keys by kid, replaced whole
// on every refresh.
type keySet struct {
	keys map[string]*verifyKey
}

func (s *keySet) len() int {
	if s == nil {
		return 0
	}
	return len(s.keys)
}

// lookup returns the key for kid, or nil.
func (s *keySet) lookup(kid string) *verifyKey {
	if s == nil {
		return nil
	}
	return s.keys[kid]
}

// holds reports whether k is still a member of s.
func (s *keySet) holds(k *verifyKey) bool {
	return s != nil && k != nil && s.keys[k.kid] == k
}

// refusedKey is a JWK that parseJWKS or buildKeySet would not trust,
// with why.
type refusedKey struct {
	kid string
	err error
}

// reason is the metric label for why r was refused.
func (r refusedKey) reason() string {
	switch {
	case errors.Is(r.err, errPrivateKey):
		return refusedPrivate
	case errors.Is(r.err, errWeakKey):
		return refusedWeak
	}
	return refusedUnusable
}

// parseJWKS parses a JWK Set document key by key. A key that carries a
// private member is refused by that member's name alone, before jwx
// parses it, so that a leak is reported even when the leaked key is
// malformed; a key jwx cannot parse is dropped rather than failing the
// set, and the keys it can parse still go through buildKeySet's checks.
func parseJWKS(body []byte) (jwk.Set, []refusedKey, error) {
	var doc struct {
		Keys *[]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, fmt.Errorf("not a JWK set: %w", err)
	}
	if doc.Keys == nil {
		return nil, nil, errors.New(`not a JWK set: no "keys" array`)
	}
	set := jwk.NewSet()
	var refused []refusedKey
	for _, raw := range *doc.Keys {
		var members map[string]json.RawMessage
		if json.Unmarshal(raw, &members) != nil {
			continue // not an object, so not a key
		}
		if names := privateMemberNames(members); len(names) > 0 {
			var kid string
			json.Unmarshal(members["kid"], &kid)
			refused = append(refused, refusedKey{kid: kid, err: fmt.Errorf("%w (%s)", errPrivateKey, strings.Join(names, ", "))})
			continue
		}
		k, err := jwk.ParseKey(raw)
		if err != nil {
			continue
		}
		set.AddKey(k)
	}
	return set, refused, nil
}

// privateMemberNames returns the members of a JWK object that name
// private key material. Case is ignored, as jwx's own decoding does when
// it tells a private key from a public one.
func privateMemberNames(members map[string]json.RawMessage) []string {
	var names []string
	for name := range members {
		if jose.IsPrivateMember(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// buildKeySet turns a parsed JWKS into verification keys. Every key that
// is not safe to trust is refused and reported, never half-used: private
// key material (which parseJWKS refuses first; checked again so that a
// set from anywhere is safe), no kid, a symmetric key, a use or key_ops
// that excludes verification, RSA under 2048 bits or with a bad exponent
// or the ROCA fingerprint, an EC point off its curve, an alg outside
// allowed or not matching the key, or a kid that appears twice. Keys
// unchanged since prev keep their identity.
func buildKeySet(set jwk.Set, allowed []string, prev *keySet) (*keySet, []refusedKey) {
	var refused []refusedKey
	seen := map[string]int{}
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		seen[k.KeyID()]++
	}
	keys := map[string]*verifyKey{}
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if kid := k.KeyID(); kid != "" && seen[kid] > 1 {
			// Even one bad twin makes the kid ambiguous: refuse them all.
			refused = append(refused, refusedKey{kid: kid, err: errors.New("kid appears more than once in the key set")})
			continue
		}
		vk, err := newVerifyKey(k, allowed)
		if err != nil {
			refused = append(refused, refusedKey{kid: k.KeyID(), err: err})
			continue
		}
		if old := prev.lookup(vk.kid); old != nil && old.thumb == vk.thumb && old.alg == vk.alg {
			vk = old
		}
		keys[vk.kid] = vk
	}
	return &keySet{keys: keys}, refused
}

// newVerifyKey checks one JWK and binds it to its algorithm.
//
// A JWK without "alg" is accepted only when exactly one allowlisted
// algorithm fits its key type (an EC key's curve names one; an RSA key
// fits one only when the allowlist has a single RSA algorithm), so a key
// is never usable with two algorithms and the token never chooses.
func newVerifyKey(k jwk.Key, allowed []string) (*verifyKey, error) {
	if names := privateParts(k); len(names) > 0 {
		return nil, fmt.Errorf("%w (%s)", errPrivateKey, strings.Join(names, ", "))
	}
	kid := k.KeyID()
	if kid == "" {
		return nil, errors.New("key has no kid")
	}
	if u := k.KeyUsage(); u != "" && u != string(jwk.ForSignature) {
		return nil, fmt.Errorf("key use is %q, not sig", u)
	}
	if ops := k.KeyOps(); len(ops) > 0 && !slices.Contains(ops, jwk.KeyOpVerify) {
		return nil, fmt.Errorf("key_ops %v does not include verify", ops)
	}
	pk, err := k.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	var raw any
	if err := pk.Raw(&raw); err != nil {
		return nil, fmt.Errorf("key material: %w", err)
	}
	var pub crypto.PublicKey
	switch p := raw.(type) {
	case *rsa.PublicKey:
		if err := jose.CheckRSA(pk, p); err != nil {
			return nil, err
		}
		pub = p
	case *ecdsa.PublicKey:
		// jwx builds the point without checking it; ECDH() does.
		if _, err := p.ECDH(); err != nil {
			return nil, fmt.Errorf("EC key is not a valid point: %w", err)
		}
		pub = p
	case ed25519.PublicKey:
		if len(p) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("Ed25519 key has %d bytes", len(p))
		}
		pub = p
	default:
		return nil, fmt.Errorf("key type %s is not a signature verification key", k.KeyType())
	}

	alg := ""
	if a := k.Algorithm(); a != nil {
		alg = a.String()
	}
	if alg != "" {
		if !slices.Contains(allowed, alg) {
			return nil, fmt.Errorf("alg %q is not in the allowlist", alg)
		}
		if !algFits(alg, pub) {
			return nil, fmt.Errorf("alg %q does not fit a %s key", alg, describeKey(pub))
		}
	} else {
		var fits []string
		for _, a := range allowed {
			if algFits(a, pub) {
				fits = append(fits, a)
			}
		}
		if len(fits) != 1 {
			return nil, fmt.Errorf("key has no alg and %d allowlisted algorithms fit a %s key", len(fits), describeKey(pub))
		}
		alg = fits[0]
	}
	method := jose.Method(alg)
	if method == nil {
		return nil, fmt.Errorf("alg %q has no verifier", alg)
	}
	tp, err := pk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("thumbprint: %w", err)
	}
	return &verifyKey{
		kid:    kid,
		alg:    alg,
		method: method,
		pub:    pub,
		thumb:  base64.RawURLEncoding.EncodeToString(tp),
	}, nil
}

// privateParts returns the private members that k carries: d and the
// rest when jwx parsed it as a private key, k for a symmetric one, or a
// stray one jwx kept as an extra member of a public key.
func privateParts(k jwk.Key) []string {
	var names []string
	for _, p := range jose.PrivateMembers {
		if _, ok := k.Get(p); ok {
			names = append(names, p)
		}
	}
	return names
}

// algFits reports whether alg verifies with pub's key type (and curve).
func algFits(alg string, pub crypto.PublicKey) bool {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return p.Curve == elliptic.P256()
		case "ES384":
			return p.Curve == elliptic.P384()
		case "ES512":
			return p.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

func describeKey(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", p.N.BitLen())
	case *ecdsa.PublicKey:
		return "EC " + p.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}
