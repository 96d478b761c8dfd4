package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// Limits on the claims copied into headers, metadata and logs.
const (
	maxClaimLen = 256
	maxRoles    = 64
)

// Verification failures that golang-jwt does not name itself. The
// keyfunc returns them, and golang-jwt wraps them so errors.Is finds them.
var (
	errNotCompact    = errors.New("token is not in strict compact form")
	errAlgNotAllowed = errors.New("alg is not in the allowlist")
	errMissingKid    = errors.New("token header has no kid")
	errAlgMismatch   = errors.New("token alg differs from its key's alg")
	errCritHeader    = errors.New("token header has crit extensions")
	errBadClaims     = errors.New("token claims are unusable")
	errTooLong       = errors.New("token lifetime is over the maximum")
)

// identity is what a verified token says about its holder. It is
// immutable once built (celValues is computed once, on first use), so
// cache entries share it.
type identity struct {
	issuer         *trustedIssuer
	sub, name, jti string
	roles          []string
	scopes         []string
	rolesHeader    string      // roles joined with ",", the x-user-roles value
	mapped         [][2]string // mapped headers with a value, by name
	omitted        []string    // mapped headers left out, and why, for the log
	claims         map[string]any
	jkt            string // cnf.jkt: the proof key a DPoP-bound token needs; "" when unbound
	exp            time.Time
	iat            time.Time  // zero when the token has none
	allow          allowParts // built by newIdentity

	celOnce sync.Once
	cel     celValues
}

// celValues returns the identity's CEL variables, converted on first use.
func (id *identity) celValues() *celValues {
	id.celOnce.Do(func() {
		a := types.DefaultTypeAdapter
		id.cel.claims = a.NativeToValue(id.claims)
		// Lists of CEL strings, converted once, so that `in` compares
		// without converting each item again.
		id.cel.roles = stringList(id.roles)
		id.cel.scopes = stringList(id.scopes)
	})
	return &id.cel
}

func stringList(ss []string) ref.Val {
	vs := make([]ref.Val, len(ss))
	for i, s := range ss {
		vs[i] = types.String(s)
	}
	return types.NewRefValList(types.DefaultTypeAdapter, vs)
}

// claims are the JWT claims Tollgate reads by type. Decoding into typed
// fields means a claim of the wrong JSON type ("roles": "admin", "exp":
// "x", "sub": 0) makes the token malformed instead of being coerced. The
// whole payload is kept too, for claim mappings and CEL.
type claims struct {
	jwt.RegisteredClaims
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
	raw   map[string]any
}

// UnmarshalJSON decodes the typed claims and keeps the payload.
func (c *claims) UnmarshalJSON(b []byte) error {
	type typed claims
	var t typed
	if err := json.Unmarshal(b, &t); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &t.raw); err != nil {
		return err
	}
	*c = claims(t)
	return nil
}

// verifier checks a token's form, signature and claims for one issuer.
type verifier struct {
	parser      *jwt.Parser
	allowed     map[string]bool
	src         *keySource
	now         func() time.Time
	maxLifetime time.Duration
	leeway      time.Duration
}

func newVerifier(ic IssuerConfig, leeway time.Duration, src *keySource, now func() time.Time) *verifier {
	allowed := map[string]bool{}
	for _, a := range ic.Algorithms {
		allowed[a] = true
	}
	return &verifier{
		// The allowlist is enforced in the keyfunc, not with
		// WithValidMethods, so a refused alg is told apart from a bad
		// signature in logs and metrics.
		parser: jwt.NewParser(
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithIssuer(ic.Issuer),
			jwt.WithAudience(ic.Audiences...),
			jwt.WithLeeway(leeway),
			jwt.WithStrictDecoding(),
			jwt.WithTimeFunc(now),
		),
		allowed:     allowed,
		src:         src,
		now:         now,
		maxLifetime: ic.MaxTokenLifetime,
		leeway:      leeway,
	}
}

var (
	// errNoIssuer means the payload has no iss to route the token by.
	errNoIssuer = errors.New("token has no iss")
	// errUnknownIssuer means no configured issuer has the token's iss.
	errUnknownIssuer = errors.New("token's iss is not a trusted issuer")
)

// verify checks tok completely and returns who it identifies and the key
// that verified it. tok must already be within MaxTokenBytes. The token
// is routed to its issuer by the iss the strictness check read, before
// any key is looked at: it is verified only with that issuer's keys and
// algorithms, and an unknown iss costs no fetch.
func (st *trustState) verify(ctx context.Context, tok string) (*identity, *verifyKey, error) {
	if err := checkCompact(tok); err != nil {
		return nil, nil, err
	}
	iss, hasIss, err := checkStrictJSON(tok)
	if err != nil {
		return nil, nil, err
	}
	ti := st.byIss[iss]
	switch {
	case ti != nil:
	case !hasIss:
		return nil, nil, fmt.Errorf("%w: %w", jwt.ErrTokenRequiredClaimMissing, errNoIssuer)
	default:
		return nil, nil, fmt.Errorf("%w: %w %q", jwt.ErrTokenInvalidIssuer, errUnknownIssuer, truncate(iss, 128))
	}
	return ti.verifier.verify(ctx, tok, ti)
}

// checkCompact enforces the strict JWS compact form before any parsing:
// exactly three non-empty base64url segments, nothing else (no padding,
// whitespace, JSON serialization or trailing junk). A five-segment JWE
// fails here too, so nothing ever decrypts a client's token.
func checkCompact(tok string) error {
	dots := 0
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.':
			dots++
			if dots > 2 {
				return fmt.Errorf("%w: more than three segments", errNotCompact)
			}
		default:
			return fmt.Errorf("%w: byte %#02x at offset %d is not base64url", errNotCompact, c, i)
		}
	}
	if dots != 2 {
		return fmt.Errorf("%w: %d segments", errNotCompact, dots+1)
	}
	h, rest, _ := strings.Cut(tok, ".")
	p, s, _ := strings.Cut(rest, ".")
	if h == "" || p == "" || s == "" {
		return fmt.Errorf("%w: empty segment", errNotCompact)
	}
	return nil
}

// verify checks a token routed to ti completely (checkCompact and
// checkStrictJSON have passed) and returns who it identifies and the key
// that verified it.
func (v *verifier) verify(ctx context.Context, tok string, ti *trustedIssuer) (*identity, *verifyKey, error) {
	var key *verifyKey
	var c claims
	_, err := v.parser.ParseWithClaims(tok, &c, func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		if !v.allowed[alg] {
			return nil, fmt.Errorf("%w: %q", errAlgNotAllowed, truncate(alg, 32))
		}
		if _, ok := t.Header["crit"]; ok {
			// RFC 7515 §4.1.11: extensions we do not understand (b64
			// among them) mean the token must be rejected.
			return nil, errCritHeader
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errMissingKid
		}
		k, err := v.key(ctx, kid)
		if err != nil {
			return nil, err
		}
		if k.alg != alg {
			return nil, fmt.Errorf("%w: token says %s, key %q is %s", errAlgMismatch, alg, truncate(kid, 64), k.alg)
		}
		key = k
		// Verify with the key's own method, not the one golang-jwt's
		// registry gave the token: for PS* it takes only the salt length
		// RFC 7518 §3.5 requires, where the registry's takes any.
		t.Method = k.method
		return k.pub, nil
	})
	if err != nil {
		return nil, nil, err
	}
	if err := v.checkLifetime(&c); err != nil {
		return nil, nil, err
	}
	id, err := newIdentity(&c, ti)
	if err != nil {
		return nil, nil, err
	}
	return id, key, nil
}

// checkLifetime refuses a token meant to live longer than the maximum:
// exp - iat, both the issuer's clock, so no leeway; without iat, exp -
// now, allowing the leeway for the issuer's clock being ahead of ours.
// A stolen token's usefulness is bounded by its lifetime, and the issuer
// never mints one over a day.
func (v *verifier) checkLifetime(c *claims) error {
	if c.ExpiresAt == nil {
		return nil // the parser refused it already; newIdentity checks again
	}
	exp := c.ExpiresAt.Time
	if c.IssuedAt != nil {
		if d := exp.Sub(c.IssuedAt.Time); d > v.maxLifetime {
			return fmt.Errorf("%w: exp is %v after iat, over %v", errTooLong, d, v.maxLifetime)
		}
		return nil
	}
	if d := exp.Sub(v.now()); d > v.maxLifetime && d-v.leeway > v.maxLifetime {
		return fmt.Errorf("%w: no iat, and exp is %v away, over %v", errTooLong, d.Round(time.Second), v.maxLifetime)
	}
	return nil
}

// key returns the trusted key for kid. An unknown kid triggers a
// refetch (rate-limited by keySource) before the token is refused.
func (v *verifier) key(ctx context.Context, kid string) (*verifyKey, error) {
	ks := v.src.keys()
	if ks == nil {
		return nil, errNoKeys
	}
	if k := ks.lookup(kid); k != nil {
		return k, nil
	}
	if v.src.refetch(ctx) {
		ks = v.src.keys()
		if k := ks.lookup(kid); k != nil {
			return k, nil
		}
	}
	if ks.len() == 0 {
		return nil, errNoKeys
	}
	return nil, fmt.Errorf("%w: %q", errUnknownKid, truncate(kid, 64))
}

// newIdentity reads the identity out of verified claims through ti's
// mapping and checks what ends up in headers and metadata. It is signed
// by the issuer, but a header value with a newline, or a role with a
// comma ("user,admin" would read as two roles in x-user-roles), must
// never reach an upstream.
func newIdentity(c *claims, ti *trustedIssuer) (*identity, error) {
	if c.ExpiresAt == nil {
		// The parser requires exp; the cache relies on it, so check again.
		return nil, fmt.Errorf("%w: no exp", errBadClaims)
	}
	m, err := ti.mapping.apply(c.raw)
	if err != nil {
		return nil, err
	}
	if m.sub == "" {
		return nil, fmt.Errorf("%w: no sub", errBadClaims)
	}
	for _, f := range []struct{ name, v string }{{"sub", m.sub}, {"name", m.name}, {"jti", c.ID}} {
		if !headerSafe(f.v) {
			return nil, fmt.Errorf("%w: %s is over %d bytes or has control characters", errBadClaims, f.name, maxClaimLen)
		}
	}
	jkt, err := cnfJKT(c.raw)
	if err != nil {
		return nil, err
	}
	if len(m.roles) > maxRoles {
		return nil, fmt.Errorf("%w: %d roles, over %d", errBadClaims, len(m.roles), maxRoles)
	}
	for _, r := range m.roles {
		if !validLabel(r, maxRoleLen, true) {
			return nil, fmt.Errorf("%w: role %q is not 1-%d characters of [A-Za-z0-9._:/-]", errBadClaims, truncate(r, 64), maxRoleLen)
		}
	}
	id := &identity{
		issuer:      ti,
		sub:         m.sub,
		name:        m.name,
		jti:         c.ID,
		roles:       m.roles,
		scopes:      m.scopes,
		rolesHeader: strings.Join(m.roles, ","),
		mapped:      m.headers,
		omitted:     m.omitted,
		claims:      c.raw,
		jkt:         jkt,
		exp:         c.ExpiresAt.Time,
	}
	if c.IssuedAt != nil {
		id.iat = c.IssuedAt.Time
	}
	id.allow = newAllowParts(id)
	return id, nil
}

// headerSafe reports whether s can be an HTTP header value as is: short,
// valid UTF-8, no control characters.
func headerSafe(s string) bool {
	if len(s) > maxClaimLen || !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
