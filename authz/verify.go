package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
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
// immutable once built, so cache entries share it.
type identity struct {
	sub, name, jti string
	roles          []string
	rolesHeader    string // roles joined with ",", the x-user-roles value
	exp            time.Time
	iat            time.Time  // zero when the token has none
	allow          allowParts // built by newIdentity
}

// values returns the identity header values, in identityHeaders order.
func (id *identity) values() [len(identityHeaders)]string {
	return [...]string{id.sub, id.name, id.rolesHeader}
}

// claims are the JWT claims Tollgate reads. Decoding into typed fields
// means a claim of the wrong JSON type ("roles": "admin", "exp": "x",
// "sub": 0) makes the token malformed instead of being coerced.
type claims struct {
	jwt.RegisteredClaims
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
}

// verifier checks a token's form, signature and claims.
type verifier struct {
	parser      *jwt.Parser
	allowed     map[string]bool
	src         *keySource
	now         func() time.Time
	maxLifetime time.Duration
	leeway      time.Duration
}

func newVerifier(cfg Config, src *keySource, now func() time.Time) *verifier {
	allowed := map[string]bool{}
	for _, a := range cfg.Algorithms {
		allowed[a] = true
	}
	return &verifier{
		// The allowlist is enforced in the keyfunc, not with
		// WithValidMethods, so a refused alg is told apart from a bad
		// signature in logs and metrics.
		parser: jwt.NewParser(
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.Audience),
			jwt.WithLeeway(cfg.Leeway),
			jwt.WithStrictDecoding(),
			jwt.WithTimeFunc(now),
		),
		allowed:     allowed,
		src:         src,
		now:         now,
		maxLifetime: cfg.MaxTokenLifetime,
		leeway:      cfg.Leeway,
	}
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

// verify checks tok completely and returns who it identifies and the key
// that verified it. tok must already be within MaxTokenBytes.
func (v *verifier) verify(ctx context.Context, tok string) (*identity, *verifyKey, error) {
	if err := checkCompact(tok); err != nil {
		return nil, nil, err
	}
	if err := checkStrictJSON(tok); err != nil {
		return nil, nil, err
	}
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
	id, err := newIdentity(&c)
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

// newIdentity checks the claims that end up in headers and metadata.
// They are signed by the issuer, but a header value with a newline, or a
// role with a comma ("user,admin" would read as two roles in
// x-user-roles), must never reach an upstream.
func newIdentity(c *claims) (*identity, error) {
	if c.ExpiresAt == nil {
		// The parser requires exp; the cache relies on it, so check again.
		return nil, fmt.Errorf("%w: no exp", errBadClaims)
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: no sub", errBadClaims)
	}
	for _, f := range []struct{ name, v string }{{"sub", c.Subject}, {"name", c.Name}, {"jti", c.ID}} {
		if !headerSafe(f.v) {
			return nil, fmt.Errorf("%w: %s is over %d bytes or has control characters", errBadClaims, f.name, maxClaimLen)
		}
	}
	if len(c.Roles) > maxRoles {
		return nil, fmt.Errorf("%w: %d roles, over %d", errBadClaims, len(c.Roles), maxRoles)
	}
	for _, r := range c.Roles {
		if !validLabel(r, maxRoleLen, false) {
			return nil, fmt.Errorf("%w: role %q is not 1-%d characters of [A-Za-z0-9._:-]", errBadClaims, truncate(r, 64), maxRoleLen)
		}
	}
	id := &identity{
		sub:         c.Subject,
		name:        c.Name,
		jti:         c.ID,
		roles:       c.Roles,
		rolesHeader: strings.Join(c.Roles, ","),
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
