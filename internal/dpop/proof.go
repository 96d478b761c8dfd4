package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Signer makes proofs with one private key, the client's side of RFC
// 9449 §4. The issuer never needs one; the tollgate dpop command, the
// benchmark driver and the tests do.
type Signer struct {
	key    crypto.Signer
	method jwt.SigningMethod
	jwk    map[string]any // the public key, as the header carries it
	jkt    string
}

// NewSigner returns a Signer for key (ECDSA P-256/P-384/P-521, RSA or
// Ed25519), signing with the algorithm that fits it: ES256/384/512, PS256
// or EdDSA.
func NewSigner(key crypto.Signer) (*Signer, error) {
	var alg string
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		alg = map[elliptic.Curve]string{elliptic.P256(): "ES256", elliptic.P384(): "ES384", elliptic.P521(): "ES512"}[k.Curve]
	case *rsa.PrivateKey:
		alg = "PS256"
	case ed25519.PrivateKey:
		alg = "EdDSA"
	}
	if alg == "" {
		return nil, fmt.Errorf("dpop: a %T cannot sign proofs", key)
	}
	pk, err := jwk.FromRaw(key.Public())
	if err != nil {
		return nil, fmt.Errorf("dpop: public key: %w", err)
	}
	b, err := json.Marshal(pk)
	if err != nil {
		return nil, err
	}
	var pub map[string]any
	if err := json.Unmarshal(b, &pub); err != nil {
		return nil, err
	}
	jkt, err := Thumbprint(key.Public())
	if err != nil {
		return nil, err
	}
	return &Signer{key: key, method: method(alg), jwk: pub, jkt: jkt}, nil
}

// JKT is the thumbprint of the signer's key, the cnf.jkt of tokens bound
// to it.
func (s *Signer) JKT() string { return s.jkt }

// Alg is the algorithm the signer signs with.
func (s *Signer) Alg() string { return s.method.Alg() }

// ProofOptions are a proof's optional claims.
type ProofOptions struct {
	// AccessToken, when set, is named in ath (resource requests).
	AccessToken string
	// Nonce is a server nonce from DPoP-Nonce.
	Nonce string
	// IssuedAt is the proof's iat; zero means now.
	IssuedAt time.Time
	// JTI is the proof's jti; empty means 16 random bytes.
	JTI string
}

// Proof signs a proof for a request of method to url.
func (s *Signer) Proof(method, url string, o ProofOptions) (string, error) {
	if method == "" || url == "" {
		return "", errors.New("dpop: a proof needs a method and a URL")
	}
	jti := o.JTI
	if jti == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		jti = base64.RawURLEncoding.EncodeToString(b[:])
	}
	iat := o.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	c := jwt.MapClaims{"jti": jti, "htm": method, "htu": url, "iat": iat.Unix()}
	if o.AccessToken != "" {
		c["ath"] = TokenHash(o.AccessToken)
	}
	if o.Nonce != "" {
		c["nonce"] = o.Nonce
	}
	t := jwt.NewWithClaims(s.method, c)
	t.Header["typ"] = ProofType
	t.Header["jwk"] = s.jwk
	return t.SignedString(s.key)
}
