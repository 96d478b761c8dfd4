package authz

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultIssuerName is the name of the one issuer that Config's
// single-issuer fields (Issuer, JWKSURL, Audience) describe.
const DefaultIssuerName = "tollgate"

// HeaderUserIssuer carries the name of the issuer that signed the token.
const HeaderUserIssuer = "x-user-issuer"

// Limits on what an issuer's claim mapping produces.
const (
	maxMappedHeaderLen = 1024 // a mapped header longer than this is omitted
	maxScopes          = 64
	maxScopeLen        = 256
	maxIssuerNameLen   = 63
)

// IssuerConfig is one trusted issuer: where its keys are, what its tokens
// must say, and where identity comes from in them.
type IssuerConfig struct {
	// Name is a short label: the x-user-issuer value and what a policy's
	// issuers list names.
	Name string `yaml:"name"`
	// Issuer is the exact iss of its tokens.
	Issuer string `yaml:"issuer"`
	// JWKSURL is where its keys are; empty means OpenID discovery at
	// Issuer (trailing slash removed) + /.well-known/openid-configuration.
	JWKSURL string `yaml:"jwks_url"`
	// Audiences: a token's aud must contain one of them.
	Audiences []string `yaml:"audiences"`
	// Algorithms is its signature algorithm allowlist; empty means
	// Config.Algorithms.
	Algorithms []string `yaml:"algorithms"`
	// MaxTokenLifetime bounds its tokens' lifetime; zero means
	// Config.MaxTokenLifetime.
	MaxTokenLifetime time.Duration `yaml:"max_token_lifetime"`
	// Required (the default, when nil) makes authz unready while this
	// issuer has no usable key set; false lets authz serve without it
	// (its tokens are then refused with 503).
	Required *bool `yaml:"required"`
	// Claims says which claims hold the identity.
	Claims ClaimsConfig `yaml:"claims"`
	// Headers maps upstream header names to claim paths.
	Headers map[string]string `yaml:"headers"`
}

// ClaimsConfig maps identity to claim paths. A path is dotted
// (realm_access.roles); a key that itself contains dots is written in
// brackets and double quotes (["https://example.com/roles"]).
type ClaimsConfig struct {
	// Subject is the x-user-id claim; default "sub".
	Subject string `yaml:"subject"`
	// Name is the x-user-name claim; default "name".
	Name string `yaml:"name"`
	// Roles are claims whose string lists are merged into the roles;
	// default ["roles"].
	Roles []string `yaml:"roles"`
	// Scopes are claims holding a space-delimited string or a list of
	// scopes, merged; default ["scope", "scp"].
	Scopes []string `yaml:"scopes"`
}

// claimPath is a parsed claim path: the keys from the payload down.
type claimPath []string

func (p claimPath) String() string {
	var b strings.Builder
	for i, k := range p {
		if strings.ContainsAny(k, ".[]\"") || k == "" {
			b.WriteString("[" + strconv.Quote(k) + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(k)
	}
	return b.String()
}

// parseClaimPath parses a dotted claim path with bracketed, quoted keys.
func parseClaimPath(s string) (claimPath, error) {
	if s == "" {
		return nil, errors.New("empty claim path")
	}
	var p claimPath
	for i := 0; i < len(s); {
		if s[i] == '[' {
			// ["key"]: a JSON-style double-quoted string, then ].
			end := -1
			for j := i + 2; j < len(s); j++ {
				if s[j] == '\\' {
					j++
					continue
				}
				if s[j] == '"' {
					end = j
					break
				}
			}
			if i+1 >= len(s) || s[i+1] != '"' || end < 0 || end+1 >= len(s) || s[end+1] != ']' {
				return nil, fmt.Errorf("claim path %q: a bracket must hold a double-quoted key, as in [\"https://example.com/roles\"]", s)
			}
			k, err := strconv.Unquote(s[i+1 : end+1])
			if err != nil || k == "" {
				return nil, fmt.Errorf("claim path %q: bad quoted key %s", s, s[i+1:end+1])
			}
			p = append(p, k)
			i = end + 2
		} else {
			j := i
			for j < len(s) && s[j] != '.' && s[j] != '[' {
				if s[j] == ']' || s[j] == '"' || s[j] < 0x21 || s[j] > 0x7e {
					return nil, fmt.Errorf("claim path %q: unexpected %q (quote keys like this in brackets)", s, s[j])
				}
				j++
			}
			if j == i {
				return nil, fmt.Errorf("claim path %q: empty key", s)
			}
			p = append(p, s[i:j])
			i = j
		}
		if i < len(s) {
			switch s[i] {
			case '.':
				i++
				if i == len(s) {
					return nil, fmt.Errorf("claim path %q ends with a dot", s)
				}
			case '[':
			default:
				return nil, fmt.Errorf("claim path %q: unexpected %q after a key", s, s[i])
			}
		}
	}
	return p, nil
}

// lookup returns the value at p in a decoded payload.
func (p claimPath) lookup(claims map[string]any) (any, bool) {
	var v any = claims
	for _, k := range p {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// mappedHeader is one upstream header filled from a claim.
type mappedHeader struct {
	name string
	path claimPath
}

// claimMapping is an issuer's ClaimsConfig and Headers, parsed.
type claimMapping struct {
	subject, name claimPath
	roles, scopes []claimPath
	headers       []mappedHeader // sorted by name
}

// reservedHeaders are names a claim mapping may not write: the ones
// authz fills itself, the token and policy headers, and those that
// frame or route the request.
var reservedHeaders = map[string]bool{
	HeaderUserID: true, HeaderUserName: true, HeaderUserRoles: true, HeaderUserIssuer: true,
	"host": true, "authorization": true, "x-access-tokens": true, "x-access-token": true,
	"connection": true, "keep-alive": true, "proxy-authenticate": true, "proxy-authorization": true,
	"proxy-connection": true, "te": true, "trailer": true, "transfer-encoding": true, "upgrade": true,
	"content-length": true, "content-type": true, "cookie": true, HeaderRemove: true,
}

// checkMappedHeaderName refuses a header name a mapping may not set.
func checkMappedHeaderName(h string, tokenHeaders []string) error {
	switch {
	case !validHeaderName(h):
		return fmt.Errorf("header %q is not a lowercase HTTP token (pseudo-headers cannot be set)", h)
	case reservedHeaders[h], slices.Contains(tokenHeaders, h):
		return fmt.Errorf("header %q is reserved", h)
	case strings.HasPrefix(h, policyHeaderPrefix), strings.HasPrefix(h, "x-envoy-"):
		return fmt.Errorf("header %q is reserved (x-tollgate-* and x-envoy-* are the proxy's)", h)
	}
	return nil
}

func newClaimMapping(c ClaimsConfig, headers map[string]string, tokenHeaders []string) (claimMapping, error) {
	var m claimMapping
	var errs []error
	one := func(what, s, def string) claimPath {
		if s == "" {
			s = def
		}
		p, err := parseClaimPath(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("claims.%s: %w", what, err))
		}
		return p
	}
	many := func(what string, ss, def []string) []claimPath {
		if len(ss) == 0 {
			ss = def
		}
		var out []claimPath
		for _, s := range ss {
			p, err := parseClaimPath(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("claims.%s: %w", what, err))
				continue
			}
			out = append(out, p)
		}
		return out
	}
	m.subject = one("subject", c.Subject, "sub")
	m.name = one("name", c.Name, "name")
	m.roles = many("roles", c.Roles, []string{"roles"})
	m.scopes = many("scopes", c.Scopes, []string{"scope", "scp"})
	for _, h := range slices.Sorted(func(yield func(string) bool) {
		for h := range headers {
			if !yield(h) {
				return
			}
		}
	}) {
		if err := checkMappedHeaderName(h, tokenHeaders); err != nil {
			errs = append(errs, fmt.Errorf("headers: %w", err))
			continue
		}
		p, err := parseClaimPath(headers[h])
		if err != nil {
			errs = append(errs, fmt.Errorf("headers.%s: %w", h, err))
			continue
		}
		m.headers = append(m.headers, mappedHeader{name: h, path: p})
	}
	return m, errors.Join(errs...)
}

// errUnsafeClaims means a verified token's claims cannot be rendered
// into headers safely; such a token is refused (403), never truncated.
var errUnsafeClaims = errors.New("claims cannot be passed upstream safely")

// mapped is what a claim mapping found in one payload.
type mapped struct {
	sub, name string
	roles     []string
	scopes    []string
	headers   [][2]string // name, value; only those with a value
	omitted   []string    // mapped headers left out, with why, for the log
}

// apply reads the identity out of a verified payload. The typed claims
// (sub, name, roles) were already checked by their types when Tollgate's
// own names are used.
func (m *claimMapping) apply(claims map[string]any) (mapped, error) {
	var out mapped
	v, ok := m.subject.lookup(claims)
	if s, isStr := v.(string); ok && isStr {
		out.sub = s
	} else if ok {
		return out, fmt.Errorf("%w: subject claim %s is not a string", errBadClaims, m.subject)
	}
	if v, ok := m.name.lookup(claims); ok {
		s, isStr := v.(string)
		if !isStr {
			return out, fmt.Errorf("%w: name claim %s is not a string", errBadClaims, m.name)
		}
		out.name = s
	}
	for _, p := range m.roles {
		v, ok := p.lookup(claims)
		if !ok {
			continue
		}
		list, ok := v.([]any)
		if !ok {
			return out, fmt.Errorf("%w: roles claim %s is not a list", errBadClaims, p)
		}
		for _, item := range list {
			r, ok := item.(string)
			if !ok {
				return out, fmt.Errorf("%w: roles claim %s holds a %T", errBadClaims, p, item)
			}
			if !slices.Contains(out.roles, r) {
				out.roles = append(out.roles, r)
			}
		}
	}
	for _, p := range m.scopes {
		v, ok := p.lookup(claims)
		if !ok {
			continue
		}
		var items []string
		switch t := v.(type) {
		case string:
			items = strings.Fields(t)
		case []any:
			for _, item := range t {
				s, ok := item.(string)
				if !ok {
					return out, fmt.Errorf("%w: scopes claim %s holds a %T", errBadClaims, p, item)
				}
				items = append(items, s)
			}
		default:
			return out, fmt.Errorf("%w: scopes claim %s is a %T, not a string or a list", errBadClaims, p, v)
		}
		for _, s := range items {
			if s == "" || len(s) > maxScopeLen || !printableASCII(s, true) || strings.ContainsAny(s, " ,") {
				return out, fmt.Errorf("%w: scope %q is not 1-%d printable ASCII characters without space or comma", errBadClaims, truncate(s, 64), maxScopeLen)
			}
			if !slices.Contains(out.scopes, s) {
				out.scopes = append(out.scopes, s)
			}
		}
	}
	if len(out.scopes) > maxScopes {
		return out, fmt.Errorf("%w: %d scopes, over %d", errBadClaims, len(out.scopes), maxScopes)
	}
	for _, h := range m.headers {
		v, ok := h.path.lookup(claims)
		if !ok || v == nil {
			continue
		}
		val, err := renderHeader(v)
		switch {
		case errors.Is(err, errUnsafeClaims):
			return out, fmt.Errorf("%w: header %s from %s: %w", errUnsafeClaims, h.name, h.path, err)
		case err != nil:
			out.omitted = append(out.omitted, h.name+": "+err.Error())
			continue
		}
		out.headers = append(out.headers, [2]string{h.name, val})
	}
	return out, nil
}

// renderHeader turns a claim value into a header value: a string as it
// is, a number or boolean in JSON form, a list of those joined with ",".
// An item that would be ambiguous or unsafe (a comma in a list item, a
// control character, a non-ASCII byte) is errUnsafeClaims; an object or
// a value over maxMappedHeaderLen is another error, and is omitted.
func renderHeader(v any) (string, error) {
	scalar := func(v any) (string, bool) {
		switch t := v.(type) {
		case string:
			return t, true
		case bool:
			return strconv.FormatBool(t), true
		case float64:
			return strconv.FormatFloat(t, 'f', -1, 64), true
		}
		return "", false
	}
	var s string
	switch t := v.(type) {
	case []any:
		parts := make([]string, 0, len(t))
		for _, item := range t {
			p, ok := scalar(item)
			if !ok {
				return "", fmt.Errorf("a list holding a %T is not a header value", item)
			}
			if strings.Contains(p, ",") || !printableASCII(p, true) {
				return "", fmt.Errorf("%w: list item %q has a comma, a control character or a non-ASCII byte", errUnsafeClaims, truncate(p, 64))
			}
			parts = append(parts, p)
		}
		s = strings.Join(parts, ",")
	case map[string]any:
		return "", errors.New("an object is not a header value")
	default:
		p, ok := scalar(v)
		if !ok {
			return "", fmt.Errorf("a %T is not a header value", v)
		}
		if !printableASCII(p, true) {
			return "", fmt.Errorf("%w: value has a control character or a non-ASCII byte", errUnsafeClaims)
		}
		s = p
	}
	if len(s) > maxMappedHeaderLen {
		return "", fmt.Errorf("value is %d bytes, over %d", len(s), maxMappedHeaderLen)
	}
	return s, nil
}

// printableASCII reports whether s is printable ASCII (space allowed
// when space is set).
func printableASCII(s string, space bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || (c == ' ' && !space) {
			return false
		}
	}
	return true
}

// trustedIssuer is one configured issuer at run time: its key source,
// its verifier and its claim mapping. A reload builds new ones (reusing
// the key source when the key settings are unchanged); live turns false
// when one is replaced, which ends its cached verifications.
type trustedIssuer struct {
	name     string
	iss      string
	required bool
	src      *keySource
	verifier *verifier
	mapping  claimMapping
	// managed is every header name any issuer of the same configuration
	// may set, so an allow answer removes the ones this token leaves
	// empty, whoever's mapping they come from.
	managed      []string
	tokenHeaders []string // removed on every allow
	live         atomic.Bool
	// keyID says when two configurations may share a key source: the
	// same iss, JWKS URL and algorithms.
	keyID string
}

// checkIssuerName reports whether n can name an issuer.
func checkIssuerName(n string) error {
	if !validLabel(n, maxIssuerNameLen, false) || strings.Contains(n, ",") {
		return fmt.Errorf("name %q is not 1-%d characters of [A-Za-z0-9._:-]", n, maxIssuerNameLen)
	}
	return nil
}
