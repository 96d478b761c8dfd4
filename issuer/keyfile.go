package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// The signing algorithms the issuer supports.
const (
	ES256 = "ES256"
	RS256 = "RS256"
	EdDSA = "EdDSA"
)

const (
	// minRSABits is the smallest RSA key loaded from a key directory.
	minRSABits = 2048
	// DefaultRSABits is the size of generated RSA keys.
	DefaultRSABits = 3072
	// maxKeyFileSize bounds what is read from a key directory.
	maxKeyFileSize = 64 << 10
)

// keyPair is a loaded private signing key and its public JWK.
type keyPair struct {
	kid     string
	alg     jwa.SignatureAlgorithm
	private jwk.Key
	public  jwk.Key
}

// parseAlg returns the JWA algorithm for one of ES256, RS256, EdDSA.
func parseAlg(alg string) (jwa.SignatureAlgorithm, error) {
	switch alg {
	case ES256:
		return jwa.ES256, nil
	case RS256:
		return jwa.RS256, nil
	case EdDSA:
		return jwa.EdDSA, nil
	}
	return "", fmt.Errorf("unsupported signing algorithm %q (want ES256, RS256 or EdDSA)", alg)
}

// parseKeyPEM reads one private key from PEM data: PKCS #8 ("PRIVATE
// KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY"). The key
// type decides the algorithm: P-256 signs ES256, RSA of at least 2048
// bits RS256, Ed25519 EdDSA.
func parseKeyPEM(data []byte) (keyPair, error) {
	var block *pem.Block
	for {
		block, data = pem.Decode(data)
		if block == nil {
			return keyPair{}, errors.New("no PEM private key block")
		}
		if block.Type == "PRIVATE KEY" || block.Type == "EC PRIVATE KEY" || block.Type == "RSA PRIVATE KEY" {
			break
		}
	}
	var raw any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		raw, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		raw, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		raw, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	if err != nil {
		return keyPair{}, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	return newKeyPair(raw)
}

func newKeyPair(raw any) (keyPair, error) {
	var alg jwa.SignatureAlgorithm
	var pub crypto.PublicKey
	switch k := raw.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return keyPair{}, fmt.Errorf("unsupported EC curve %s (want P-256)", k.Curve.Params().Name)
		}
		alg, pub = jwa.ES256, k.Public()
	case *rsa.PrivateKey:
		if k.N.BitLen() < minRSABits {
			return keyPair{}, fmt.Errorf("RSA key of %d bits is too small (want at least %d)", k.N.BitLen(), minRSABits)
		}
		alg, pub = jwa.RS256, k.Public()
	case ed25519.PrivateKey:
		alg, pub = jwa.EdDSA, k.Public()
	default:
		return keyPair{}, fmt.Errorf("unsupported key type %T", raw)
	}
	private, err := jwk.FromRaw(raw)
	if err != nil {
		return keyPair{}, fmt.Errorf("private key: %w", err)
	}
	public, err := jwk.FromRaw(pub)
	if err != nil {
		return keyPair{}, fmt.Errorf("public key: %w", err)
	}
	tp, err := public.Thumbprint(crypto.SHA256)
	if err != nil {
		return keyPair{}, fmt.Errorf("key thumbprint: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	for _, k := range []jwk.Key{private, public} {
		if err := k.Set(jwk.KeyIDKey, kid); err != nil {
			return keyPair{}, fmt.Errorf("set kid: %w", err)
		}
		if err := k.Set(jwk.AlgorithmKey, alg); err != nil {
			return keyPair{}, fmt.Errorf("set alg: %w", err)
		}
	}
	if err := public.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
		return keyPair{}, fmt.Errorf("set use: %w", err)
	}
	return keyPair{kid: kid, alg: alg, private: private, public: public}, nil
}

// GenerateKeyPEM returns a new private key for alg (ES256, RS256 or
// EdDSA; RSA keys have DefaultRSABits) as a PKCS #8 PEM block, and its
// kid, the RFC 7638 thumbprint of its public key.
func GenerateKeyPEM(alg string) (pemData []byte, kid string, err error) {
	a, err := parseAlg(alg)
	if err != nil {
		return nil, "", err
	}
	var raw any
	switch a {
	case jwa.ES256:
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.RS256:
		raw, err = rsa.GenerateKey(rand.Reader, DefaultRSABits)
	case jwa.EdDSA:
		_, raw, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, "", fmt.Errorf("generate %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(raw)
	if err != nil {
		return nil, "", fmt.Errorf("encode %s key: %w", alg, err)
	}
	kp, err := newKeyPair(raw)
	if err != nil {
		return nil, "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), kp.kid, nil
}

// GenerateKeyFile writes a new alg private key into dir (created if
// missing) as <kid>.pem, readable by the owner only, and returns its path
// and kid. The file appears whole or not at all, so a directory watcher
// never reads half a key.
func GenerateKeyFile(dir, alg string) (path, kid string, err error) {
	data, kid, err := GenerateKeyPEM(alg)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create key directory: %w", err)
	}
	// A leading dot keeps key directory scans from reading the temporary
	// file.
	tmp, err := os.CreateTemp(dir, ".key-*.tmp")
	if err != nil {
		return "", "", fmt.Errorf("write key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", "", fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", "", fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", "", fmt.Errorf("write key: %w", err)
	}
	path = filepath.Join(dir, kid+".pem")
	if err := os.Link(tmp.Name(), path); err != nil {
		return "", "", fmt.Errorf("write key %s: %w", path, err)
	}
	return path, kid, nil
}
