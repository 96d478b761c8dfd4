package authz

import (
	"errors"
	"fmt"
	"strings"
)

// Policy keys, in Envoy's per-route check_settings.context_extensions and,
// for forward-auth, in request headers named policyHeaderPrefix + key.
// In the configuration file the list keys are YAML lists.
const (
	policyRequire    = "require"     // all of these roles
	policyRequireAny = "require_any" // at least one of these roles
	policyScopes     = "scopes"      // all of these scopes
	policyIssuers    = "issuers"     // the token's issuer is one of these names
	policyCEL        = "cel"         // a CEL expression that must be true
	policyRoute      = "route"       // a label for the log

	policyHeaderPrefix = "x-tollgate-"
)

const (
	maxRoleLen  = 64
	maxRouteLen = 128
)

// policy is what one route asks of a verified token. The zero policy
// accepts any valid token. The lists are validated comma-separated
// strings, so that a policy read per request allocates nothing for them.
type policy struct {
	route      string
	require    string // all required; "" = none
	requireAny string // one required; "" = none
	scopes     string // all required; "" = none
	issuers    string // one of these issuer names; "" = any
	cel        *celProgram
	dpop       bool // dpop: required, only DPoP-bound tokens
}

// errBadPolicy wraps every policy that cannot be understood; such a
// route denies everything (fail closed) until its configuration is fixed.
var errBadPolicy = errors.New("bad policy")

// parsePolicy reads a policy from context_extensions. Unknown keys and
// malformed values are errors: a typo such as "requires: admin" must not
// silently open an admin route to every user.
func (s *Server) parsePolicy(ext map[string]string) (policy, error) {
	var p policy
	for k, v := range ext {
		if err := s.setPolicy(&p, k, v); err != nil {
			return policy{}, err
		}
	}
	return p, nil
}

// setPolicy applies one policy key given as a string.
func (s *Server) setPolicy(p *policy, k, v string) error {
	bad := func(err error) error {
		return fmt.Errorf("%w: %s %q: %w", errBadPolicy, k, truncate(v, 64), err)
	}
	switch k {
	case policyRequire, policyRequireAny, policyScopes:
		check := checkRoleList
		if k == policyScopes {
			check = checkScopeList
		}
		if err := check(v); err != nil {
			return bad(err)
		}
		switch k {
		case policyRequire:
			p.require = v
		case policyRequireAny:
			p.requireAny = v
		default:
			p.scopes = v
		}
	case policyIssuers:
		if err := s.checkIssuerList(v); err != nil {
			return bad(err)
		}
		p.issuers = v
	case policyCEL:
		prg, err := s.programs.get(v)
		if err != nil {
			return fmt.Errorf("%w: cel: %w", errBadPolicy, err)
		}
		p.cel = prg
	case policyDPoP:
		if v != dpopRequired {
			return fmt.Errorf("%w: dpop %q: the only value is %q", errBadPolicy, truncate(v, 64), dpopRequired)
		}
		p.dpop = true
	case policyRoute:
		if !validLabel(v, maxRouteLen, true) {
			return fmt.Errorf("%w: route %q is not 1-%d characters of [A-Za-z0-9._:/-]", errBadPolicy, truncate(v, 64), maxRouteLen)
		}
		p.route = v
	default:
		return fmt.Errorf("%w: unknown key %q", errBadPolicy, truncate(k, 64))
	}
	return nil
}

// checkList checks a comma-separated list; spaces around an item are
// allowed, empty items are not.
func checkList(v string, item func(string) error) error {
	if v == "" {
		return errors.New("empty")
	}
	for rest := v; ; {
		it, more, found := strings.Cut(rest, ",")
		if err := item(strings.TrimSpace(it)); err != nil {
			return err
		}
		if !found {
			return nil
		}
		rest = more
	}
}

// checkRoleList checks a comma-separated list of roles.
func checkRoleList(v string) error {
	return checkList(v, func(r string) error {
		if !validLabel(r, maxRoleLen, true) {
			return fmt.Errorf("role %q is not 1-%d characters of [A-Za-z0-9._:/-]", truncate(r, 64), maxRoleLen)
		}
		return nil
	})
}

// checkScopeList checks a comma-separated list of scopes.
func checkScopeList(v string) error {
	return checkList(v, func(sc string) error {
		if sc == "" || len(sc) > maxScopeLen || !printableASCII(sc, false) {
			return fmt.Errorf("scope %q is not 1-%d printable ASCII characters without space or comma", truncate(sc, 64), maxScopeLen)
		}
		return nil
	})
}

// checkIssuerList checks a comma-separated list of configured issuer
// names: a name no issuer has is a typo that would deny everything.
func (s *Server) checkIssuerList(v string) error {
	st := s.state.Load()
	return checkList(v, func(n string) error {
		if st == nil || st.byName[n] == nil {
			return fmt.Errorf("no issuer is named %q", truncate(n, 64))
		}
		return nil
	})
}

// eachItem calls f with each item of a validated comma list until f
// returns false.
func eachItem(list string, f func(string) bool) {
	for rest := list; rest != ""; {
		item, more, _ := strings.Cut(rest, ",")
		rest = more
		if !f(strings.TrimSpace(item)) {
			return
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// evaluate checks a verified identity against p, returning the reason
// to deny and why, or reasonVerified.
func (p *policy) evaluate(id *identity, req *requestInfo) (reason, error) {
	var missing string
	eachItem(p.require, func(r string) bool {
		if !contains(id.roles, r) {
			missing = r
		}
		return missing == ""
	})
	if missing != "" {
		return reasonMissingRole, errors.New("token lacks role " + missing)
	}
	if p.requireAny != "" {
		found := false
		eachItem(p.requireAny, func(r string) bool {
			found = contains(id.roles, r)
			return !found
		})
		if !found {
			return reasonMissingRole, errors.New("token has none of the roles " + p.requireAny)
		}
	}
	eachItem(p.scopes, func(sc string) bool {
		if !contains(id.scopes, sc) {
			missing = sc
		}
		return missing == ""
	})
	if missing != "" {
		return reasonMissingScope, errors.New("token lacks scope " + missing)
	}
	if p.issuers != "" {
		found := false
		eachItem(p.issuers, func(n string) bool {
			found = n == id.issuer.name
			return !found
		})
		if !found {
			return reasonWrongIssuer, errors.New("token's issuer " + id.issuer.name + " is not one of " + p.issuers)
		}
	}
	if p.cel != nil {
		if err := p.cel.allows(id, req); err != nil {
			return reasonPolicyDenied, err
		}
	}
	return reasonVerified, nil
}

// validLabel reports whether s is 1..n bytes of [A-Za-z0-9._:-], plus
// '/' when slash is set. Roles use it too, so a role can never contain
// the comma that joins roles in x-user-roles.
func validLabel(s string, n int, slash bool) bool {
	if s == "" || len(s) > n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '-':
		case c == '/' && slash:
		default:
			return false
		}
	}
	return true
}
