package authz

import (
	"errors"
	"fmt"
	"strings"
)

// Policy keys, in Envoy's per-route check_settings.context_extensions and,
// for forward-auth, in request headers named policyHeaderPrefix + key.
const (
	policyRequire = "require"
	policyRoute   = "route"

	policyHeaderPrefix = "x-tollgate-"
)

const (
	maxRoleLen  = 64
	maxRouteLen = 128
)

// policy is what one route asks of a verified token. The zero policy
// accepts any valid token.
type policy struct {
	route   string
	require string // validated comma-separated roles, all required; "" = none
}

// errBadPolicy wraps every policy that cannot be understood; such a
// route denies everything (fail closed) until its configuration is fixed.
var errBadPolicy = errors.New("bad policy")

// parsePolicy reads a policy from context_extensions. Unknown keys and
// malformed values are errors: a typo such as "requires: admin" must not
// silently open an admin route to every user.
func parsePolicy(ext map[string]string) (policy, error) {
	var p policy
	for k, v := range ext {
		if err := p.set(k, v); err != nil {
			return policy{}, err
		}
	}
	return p, nil
}

// set applies one policy key.
func (p *policy) set(k, v string) error {
	switch k {
	case policyRequire:
		if err := checkRoleList(v); err != nil {
			return fmt.Errorf("%w: require %q: %w", errBadPolicy, truncate(v, 64), err)
		}
		p.require = v
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

// checkRoleList checks a comma-separated list of roles; spaces around a
// role are allowed, empty items are not.
func checkRoleList(v string) error {
	if v == "" {
		return errors.New("empty")
	}
	for rest := v; ; {
		item, more, found := strings.Cut(rest, ",")
		if !validLabel(strings.TrimSpace(item), maxRoleLen, false) {
			return fmt.Errorf("role %q is not 1-%d characters of [A-Za-z0-9._:-]", truncate(item, 64), maxRoleLen)
		}
		if !found {
			return nil
		}
		rest = more
	}
}

// missingRole returns the first role p requires that roles lacks, or "".
func (p policy) missingRole(roles []string) string {
	for rest := p.require; rest != ""; {
		item, more, _ := strings.Cut(rest, ",")
		rest = more
		want := strings.TrimSpace(item)
		found := false
		for _, r := range roles {
			if r == want {
				found = true
				break
			}
		}
		if !found {
			return want
		}
	}
	return ""
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
