// Package dpop verifies and makes DPoP proofs (RFC 9449): the JWTs a
// client signs with its own key on every request, so that a token bound
// to that key is worthless to anyone who holds the token but not the key.
//
// The issuer verifies a proof at its token endpoints (§5) and binds the
// tokens it issues to the proof key's RFC 7638 thumbprint (cnf.jkt);
// authz verifies a proof with every request that presents a bound token
// (§7). Both use Verifier, which checks everything §4.3 lists; the
// replay store it takes decides whether a jti is fresh, in memory for one
// process or in PostgreSQL for several.
package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/tollgate-dev/tollgate/internal/jose"
)

// Header names (RFC 9449 §4.1, §8).
const (
	// Header carries the proof; Envoy presents it lowercase.
	Header = "dpop"
	// NonceHeader carries a server nonce to the client.
	NonceHeader = "DPoP-Nonce"
	// Scheme is the Authorization scheme of a DPoP-bound token (§7.1).
	Scheme = "DPoP"
	// ProofType is the typ every proof's header must carry (§4.2).
	ProofType = "dpop+jwt"
)

// Defaults for Config.
const (
	DefaultMaxAge    = 60 * time.Second
	DefaultMaxFuture = 5 * time.Second
	// MaxProofBytes caps a proof before any parsing. A proof with an RSA
	// 4096 key in its header is under 2 KiB.
	MaxProofBytes = 8 << 10
)

// DefaultAlgorithms are the asymmetric algorithms a proof may use. There
// is never a symmetric one or "none": the proof key is public (§4.3).
var DefaultAlgorithms = []string{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"}

// Why a proof is refused. Every error Verify returns wraps exactly one
// of these, and ErrInvalidProof wraps all but ErrUseNonce, so a caller
// that only needs the RFC's error code tests ErrInvalidProof and
// ErrUseNonce; the others name the check, for logs and metrics.
var (
	// ErrInvalidProof is RFC 9449's invalid_dpop_proof.
	ErrInvalidProof = errors.New("invalid DPoP proof")
	// ErrUseNonce is use_dpop_nonce: the proof has no nonce, or one this
	// server no longer accepts; the client retries with DPoP-Nonce.
	ErrUseNonce = errors.New("DPoP proof needs a fresh server nonce")
	// ErrReplayed means the proof's jti was seen within its window.
	ErrReplayed = fmt.Errorf("%w: jti already used", ErrInvalidProof)
	// ErrKeyMismatch means the proof key is not the one the token is
	// bound to (§7.1: its thumbprint is not cnf.jkt).
	ErrKeyMismatch = fmt.Errorf("%w: key is not the token's", ErrInvalidProof)
	// ErrTokenHash means ath does not name the presented token.
	ErrTokenHash = fmt.Errorf("%w: ath does not match the access token", ErrInvalidProof)
	// ErrReplayStore means the replay store could not answer; nothing
	// about the proof is known to be wrong.
	ErrReplayStore = errors.New("DPoP replay store unavailable")
)

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidProof}, a...)...)
}

// Config is what NewVerifier needs. Start from DefaultConfig; every field
// is then taken literally.
type Config struct {
	// Algorithms is the allowlist of proof signature algorithms.
	Algorithms []string
	// MaxAge is how old a proof's iat may be, and MaxFuture how far ahead
	// of this server's clock (§4.3 step 11, §11.1).
	MaxAge, MaxFuture time.Duration
	// Replay remembers the proofs already used. Required.
	Replay ReplayStore
	// Nonces, when set, makes every proof carry a nonce it issued (§8).
	Nonces *Nonces
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the RFC's defaults with an in-memory replay
// store of DefaultReplayCapacity entries and nonces off.
func DefaultConfig() Config {
	return Config{
		Algorithms: slices.Clone(DefaultAlgorithms),
		MaxAge:     DefaultMaxAge,
		MaxFuture:  DefaultMaxFuture,
		Replay:     NewMemoryReplay(DefaultReplayCapacity),
	}
}

// Verifier checks proofs. It is safe for concurrent use.
type Verifier struct {
	algs      []string
	methods   map[string]jwt.SigningMethod
	maxAge    time.Duration
	maxFuture time.Duration
	replay    ReplayStore
	nonces    *Nonces
	now       func() time.Time
	parser    *jwt.Parser
	keys      keyCache
}

// keyCache remembers the proof keys of recent proof headers. A client
// sends the same header (typ, alg, jwk) with every proof, so the bytes of
// its header segment name the checks already passed and the key they
// gave; only the claims and signature are new each time.
type keyCache struct {
	mu sync.Mutex
	m  map[string]headerKey
}

// keyCacheSize bounds keyCache; when it is full it starts over.
const keyCacheSize = 4096

func (c *keyCache) get(seg string) (headerKey, bool) {
	c.mu.Lock()
	k, ok := c.m[seg]
	c.mu.Unlock()
	return k, ok
}

func (c *keyCache) put(seg string, k headerKey) {
	c.mu.Lock()
	if c.m == nil || len(c.m) >= keyCacheSize {
		c.m = make(map[string]headerKey, 64)
	}
	c.m[seg] = k
	c.mu.Unlock()
}

// NewVerifier checks cfg and returns its Verifier.
func NewVerifier(cfg Config) (*Verifier, error) {
	if len(cfg.Algorithms) == 0 {
		return nil, errors.New("dpop: no proof algorithms allowed")
	}
	methods := map[string]jwt.SigningMethod{}
	for _, a := range cfg.Algorithms {
		m := method(a)
		if m == nil {
			return nil, fmt.Errorf("dpop: algorithm %q is not an asymmetric JWS algorithm (one of %s)", a, strings.Join(DefaultAlgorithms, ", "))
		}
		methods[a] = m
	}
	if cfg.MaxAge <= 0 || cfg.MaxFuture < 0 {
		return nil, fmt.Errorf("dpop: proof window must have a positive age and a non-negative future, not %v and %v", cfg.MaxAge, cfg.MaxFuture)
	}
	if cfg.Replay == nil {
		return nil, errors.New("dpop: no replay store")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	v := &Verifier{
		algs:      slices.Clone(cfg.Algorithms),
		methods:   methods,
		maxAge:    cfg.MaxAge,
		maxFuture: cfg.MaxFuture,
		replay:    cfg.Replay,
		nonces:    cfg.Nonces,
		now:       now,
	}
	v.parser = jwt.NewParser(jwt.WithValidMethods(v.algs), jwt.WithoutClaimsValidation(), jwt.WithJSONNumber())
	return v, nil
}

// Algorithms returns the allowlist, as discovery documents and
// WWW-Authenticate challenges advertise it.
func (v *Verifier) Algorithms() []string { return slices.Clone(v.algs) }

// Nonces returns the server nonces proofs must carry, or nil.
func (v *Verifier) Nonces() *Nonces { return v.nonces }

func method(alg string) jwt.SigningMethod {
	if !slices.Contains(DefaultAlgorithms, alg) {
		return nil
	}
	return jose.Method(alg)
}

// Request is what a proof must match.
type Request struct {
	// Method is the HTTP method, compared exactly with htm.
	Method string
	// URL is the absolute URL the client sent the request to, as it used
	// it (scheme and host as seen before any TLS-terminating proxy); the
	// query and fragment are ignored, as in htu.
	URL string
	// AccessToken is the token presented with the proof. When set, ath
	// must be its hash; when empty (a token endpoint), ath must be
	// absent.
	AccessToken string
	// JKT, when set, is the thumbprint the proof key must have: the
	// cnf.jkt of the token or refresh token presented with it.
	JKT string
}

// Proof is what a verified proof says.
type Proof struct {
	// JKT is the RFC 7638 SHA-256 thumbprint of the proof key, base64url.
	JKT string
	// JTI is the proof's unique identifier.
	JTI string
	// IssuedAt is the proof's iat.
	IssuedAt time.Time
}

// claims are a proof's claims (§4.2). Dates are numbers: a string iat
// fails to decode.
type claims struct {
	JTI   string       `json:"jti"`
	HTM   string       `json:"htm"`
	HTU   string       `json:"htu"`
	IAT   *numericDate `json:"iat"`
	ATH   *string      `json:"ath"`
	Nonce *string      `json:"nonce"`
}

func (claims) GetExpirationTime() (*jwt.NumericDate, error) { return nil, nil }
func (claims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (claims) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, nil }
func (claims) GetIssuer() (string, error)                   { return "", nil }
func (claims) GetSubject() (string, error)                  { return "", nil }
func (claims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

// numericDate is a JSON number of seconds (RFC 7519 §2). A string,
// which golang-jwt's NumericDate would take, is refused.
type numericDate struct{ time.Time }

func (d *numericDate) UnmarshalJSON(b []byte) error {
	var n json.Number
	if len(b) == 0 || b[0] == '"' || json.Unmarshal(b, &n) != nil {
		return errors.New("iat is not a number")
	}
	f, err := n.Float64()
	if err != nil {
		return errors.New("iat is not a number")
	}
	d.Time = time.Unix(int64(f), 0)
	return nil
}

// headerKey is the proof key: the header's jwk, public, of a type
// and size that fits alg.
type headerKey struct {
	pub crypto.PublicKey
	jkt string
}

// Verify checks proof, the value of the request's one DPoP header,
// against req, in the order of RFC 9449 §4.3, and records its jti. It
// returns the proof's key thumbprint, or an error wrapping
// ErrInvalidProof or ErrUseNonce (or ErrReplayStore when the store is
// down). The jti is recorded only once everything else holds, so an
// invalid proof never uses up a jti.
func (v *Verifier) Verify(ctx context.Context, proof string, req Request) (*Proof, error) {
	// Step 1: one proof. Envoy and Go join repeated headers with ",",
	// which no compact JWS contains.
	if proof == "" {
		return nil, invalid("no proof")
	}
	if strings.ContainsAny(proof, ", ") {
		return nil, invalid("more than one DPoP header")
	}
	if len(proof) > MaxProofBytes {
		return nil, invalid("proof is over %d bytes", MaxProofBytes)
	}
	// Steps 2-7: a JWT, typ dpop+jwt, an allowed asymmetric alg, a
	// public jwk, and a valid signature by that jwk.
	var hk headerKey
	var c claims
	seg, _, _ := strings.Cut(proof, ".")
	tok, err := v.parser.ParseWithClaims(proof, &c, func(t *jwt.Token) (any, error) {
		if k, ok := v.keys.get(seg); ok {
			hk = k
			return k.pub, nil
		}
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, ProofType) {
			return nil, invalid("typ is %q, not %q", typ, ProofType)
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, invalid("crit header parameters are not understood")
		}
		alg, _ := t.Header["alg"].(string)
		k, err := parseHeaderKey(t.Header["jwk"], alg)
		if err != nil {
			return nil, err
		}
		hk = k
		v.keys.put(seg, k)
		return k.pub, nil
	})
	if err != nil {
		if errors.Is(err, ErrInvalidProof) {
			return nil, err
		}
		return nil, invalid("%v", err)
	}
	if !tok.Valid {
		return nil, invalid("signature does not verify")
	}
	if tok.Method != v.methods[tok.Method.Alg()] {
		// WithValidMethods checked the name; this is the salt-exact PSS.
		if err := v.methods[tok.Method.Alg()].Verify(signingString(proof), tok.Signature, hk.pub); err != nil {
			return nil, invalid("signature does not verify: %v", err)
		}
	}
	// Step 5: the claims a proof must have.
	if c.JTI == "" || c.HTM == "" || c.HTU == "" || c.IAT == nil {
		return nil, invalid("jti, htm, htu and iat are required")
	}
	if len(c.JTI) > 256 {
		return nil, invalid("jti is over 256 bytes")
	}
	// Step 8: htm.
	if c.HTM != req.Method {
		return nil, invalid("htm %q is not the request's method %q", truncate(c.HTM, 16), req.Method)
	}
	// Step 9: htu, normalised, without query and fragment.
	want, err := NormalizeURL(req.URL)
	if err != nil {
		return nil, fmt.Errorf("dpop: request URL: %w", err)
	}
	got, err := NormalizeURL(c.HTU)
	if err != nil || got != want {
		return nil, invalid("htu %q is not the request's URL %q", truncate(c.HTU, 256), want)
	}
	// Step 10: the nonce, when this server hands them out.
	if v.nonces != nil && (c.Nonce == nil || !v.nonces.Valid(*c.Nonce)) {
		return nil, ErrUseNonce
	}
	// Step 11: iat within the window.
	now := v.now()
	iat := c.IAT.Time
	if iat.Before(now.Add(-v.maxAge)) {
		return nil, invalid("iat is %v old, over %v", now.Sub(iat).Round(time.Second), v.maxAge)
	}
	if iat.After(now.Add(v.maxFuture)) {
		return nil, invalid("iat is %v ahead, over %v", iat.Sub(now).Round(time.Second), v.maxFuture)
	}
	// Step 12: ath names the presented token; a token endpoint gets none.
	switch {
	case req.AccessToken != "" && c.ATH == nil:
		return nil, fmt.Errorf("%w (ath is missing)", ErrTokenHash)
	case req.AccessToken != "" && *c.ATH != TokenHash(req.AccessToken):
		return nil, ErrTokenHash
	case req.AccessToken == "" && c.ATH != nil:
		return nil, invalid("ath given where no access token is presented")
	}
	// Step 13: the key the token is bound to.
	if req.JKT != "" && hk.jkt != req.JKT {
		return nil, ErrKeyMismatch
	}
	// The jti, last: once per window. The entry outlives any iat the
	// window still accepts.
	fresh, err := v.replay.Claim(ctx, replayKey(hk.jkt, c.JTI), now.Add(v.maxAge+v.maxFuture))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReplayStore, err)
	}
	if !fresh {
		return nil, ErrReplayed
	}
	return &Proof{JKT: hk.jkt, JTI: c.JTI, IssuedAt: iat}, nil
}

func signingString(proof string) string {
	return proof[:strings.LastIndexByte(proof, '.')]
}

// replayKey is what the replay store keeps of a proof: a hash of its key
// and jti, so that one client cannot use up another's jti.
func replayKey(jkt, jti string) [32]byte {
	h := sha256.New()
	h.Write([]byte(jkt))
	h.Write([]byte{0})
	h.Write([]byte(jti))
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// parseHeaderKey turns the proof header's jwk into the key to verify
// with: an object, with no private member (in any case), a public EC,
// RSA or OKP key that fits alg, RSA of at least 2048 bits with an odd
// exponent of at least 65537.
func parseHeaderKey(v any, alg string) (headerKey, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return headerKey{}, invalid("header has no jwk object")
	}
	for name := range obj {
		if jose.IsPrivateMember(name) {
			return headerKey{}, invalid("jwk carries private key material (%q)", name)
		}
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return headerKey{}, invalid("jwk: %v", err)
	}
	k, err := jwk.ParseKey(raw)
	if err != nil {
		return headerKey{}, invalid("jwk: %v", err)
	}
	var pub any
	if err := k.Raw(&pub); err != nil {
		return headerKey{}, invalid("jwk: %v", err)
	}
	if err := fits(alg, pub, k); err != nil {
		return headerKey{}, err
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return headerKey{}, invalid("jwk thumbprint: %v", err)
	}
	return headerKey{pub: pub, jkt: base64.RawURLEncoding.EncodeToString(tp)}, nil
}

// fits refuses a key that alg cannot verify with, or that is weak.
func fits(alg string, pub any, k jwk.Key) error {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		want := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg]
		if want == nil || p.Curve != want {
			return invalid("alg %q does not fit a %s key", alg, p.Curve.Params().Name)
		}
		return nil
	case *rsa.PublicKey:
		if !strings.HasPrefix(alg, "RS") && !strings.HasPrefix(alg, "PS") {
			return invalid("alg %q does not fit an RSA key", alg)
		}
		if err := jose.CheckRSA(k, p); err != nil {
			return invalid("%v", err)
		}
		return nil
	case ed25519.PublicKey:
		if alg != "EdDSA" {
			return invalid("alg %q does not fit an Ed25519 key", alg)
		}
		return nil
	}
	return invalid("jwk is not a public EC, RSA or Ed25519 key (%T)", pub)
}

// TokenHash is the ath of token: base64url of its SHA-256 (§4.2).
func TokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of key's public part,
// base64url, as cnf.jkt carries it.
func Thumbprint(key crypto.PublicKey) (string, error) {
	k, err := jwk.FromRaw(key)
	if err != nil {
		return "", err
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
