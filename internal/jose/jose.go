// Package jose holds the key rules every Tollgate verifier shares: authz
// for the keys an issuer publishes, internal/dpop for the key a client
// puts in a proof. A key either passes all of them or is refused.
package jose

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/titanous/rocacheck"
)

// MinRSABits is the smallest RSA modulus a key may have (RFC 8725 §3.5,
// NIST SP 800-131A).
const MinRSABits = 2048

// RSA public exponents a key may have: odd, at least 65537 (FIPS 186-5
// §5.5(e) asks for over 2^16) and below 2^31 (crypto/rsa refuses larger
// ones when it verifies). So e = 1, which no token verifies with, or 3,
// which Bleichenbacher's signature forgery needs, is never a usable key.
const (
	MinRSAExponent = 65537
	MaxRSAExponent = 1<<31 - 1
)

// ErrWeakKey means a key a forger could break.
var ErrWeakKey = errors.New("key is weak")

// PrivateMembers are the JWK members only a private or secret key has:
// RSA's d, p, q, dp, dq, qi and oth (RFC 7518 §6.3.2), EC's and OKP's d
// (§6.2.2, RFC 8037 §2), and a symmetric key's k (§6.4.1).
var PrivateMembers = [...]string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// IsPrivateMember reports whether a JWK member name is one of
// PrivateMembers, ignoring case as jwx's own decoding does when it tells
// a private key from a public one.
func IsPrivateMember(name string) bool {
	for _, p := range PrivateMembers {
		if strings.EqualFold(name, p) {
			return true
		}
	}
	return false
}

// pssMethods verify RSA-PSS with the salt as long as the hash, which RFC
// 7518 §3.5 requires. golang-jwt's registered PS* methods accept any salt
// length (rsa.PSSSaltLengthAuto) for old tokens' sake.
var pssMethods = map[string]jwt.SigningMethod{}

func init() {
	for _, m := range []*jwt.SigningMethodRSAPSS{jwt.SigningMethodPS256, jwt.SigningMethodPS384, jwt.SigningMethodPS512} {
		exact := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}
		pssMethods[m.Alg()] = &jwt.SigningMethodRSAPSS{SigningMethodRSA: m.SigningMethodRSA, Options: exact, VerifyOptions: exact}
	}
}

// Method is the signing method that verifies alg: golang-jwt's, except
// that PS256/384/512 require the salt length of their hash. Nil for an
// algorithm golang-jwt does not know.
func Method(alg string) jwt.SigningMethod {
	if m := pssMethods[alg]; m != nil {
		return m
	}
	return jwt.GetSigningMethod(alg)
}

// CheckRSA refuses RSA keys a forger could break: a modulus under
// MinRSABits, an exponent that is even or outside [MinRSAExponent,
// MaxRSAExponent], or a modulus with the fingerprint of the Infineon key
// generator that ROCA (CVE-2017-15361) factors. The exponent is read
// from the JWK's own bytes, as jwx truncates it to an int. Every refusal
// wraps ErrWeakKey.
func CheckRSA(k jwk.Key, p *rsa.PublicKey) error {
	if n := p.N.BitLen(); n < MinRSABits {
		return fmt.Errorf("%w: RSA key has %d bits, under %d", ErrWeakKey, n, MinRSABits)
	}
	rk, ok := k.(jwk.RSAPublicKey)
	if !ok {
		return fmt.Errorf("RSA key is a %T", k)
	}
	e := new(big.Int).SetBytes(rk.E())
	if e.Bit(0) == 0 || e.Cmp(big.NewInt(MinRSAExponent)) < 0 || e.Cmp(big.NewInt(MaxRSAExponent)) > 0 {
		es := e.String()
		if len(es) > 32 {
			es = es[:32] + "…"
		}
		return fmt.Errorf("%w: RSA exponent %s is not odd in [%d, 2^31)", ErrWeakKey, es, MinRSAExponent)
	}
	if rocacheck.IsWeak(p) {
		return fmt.Errorf("%w: RSA modulus has the ROCA fingerprint (CVE-2017-15361)", ErrWeakKey)
	}
	return nil
}
