package authz

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
)

// PolicyConfig is a policy in the configuration file: the same keys as
// context_extensions, with YAML lists for the list keys.
type PolicyConfig struct {
	Route      string   `yaml:"route"`
	Require    []string `yaml:"require"`
	RequireAny []string `yaml:"require_any"`
	Scopes     []string `yaml:"scopes"`
	Issuers    []string `yaml:"issuers"`
	CEL        string   `yaml:"cel"`
	// DPoP "required" refuses tokens that are not DPoP-bound.
	DPoP string `yaml:"dpop"`
}

// RouteConfig is one authz-side route: a match and the policy beside it.
type RouteConfig struct {
	Match        RouteMatch `yaml:"match"`
	PolicyConfig `yaml:",inline"`
}

// RouteMatch selects requests. Every field given must match; an empty
// match matches every request.
type RouteMatch struct {
	// Methods are HTTP methods, any of which matches (upper case).
	Methods []string `yaml:"methods"`
	// Hosts are host names without port, matched case-insensitively,
	// exactly or, with a leading "*.", as any subdomain.
	Hosts []string `yaml:"hosts"`
	// Path is an exact path (the query is ignored).
	Path string `yaml:"path"`
	// PathPrefix matches whole segments: /users matches /users and
	// /users/x, not /usersx.
	PathPrefix string `yaml:"path_prefix"`
}

// route is a RouteConfig, checked.
type route struct {
	methods    []string
	hosts      []string // lowercase; "*.x" matches any subdomain of x
	path       string
	pathPrefix string // without a trailing slash, except "/"
	pol        policy
}

// newPolicy checks a PolicyConfig with the same rules as a policy in
// context_extensions.
func (s *Server) newPolicy(pc PolicyConfig, st *trustState) (policy, error) {
	var p policy
	var errs []error
	set := func(k string, v string) {
		if err := s.setPolicyIn(&p, k, v, st); err != nil {
			errs = append(errs, err)
		}
	}
	if pc.Route != "" {
		set(policyRoute, pc.Route)
	}
	for _, kv := range []struct {
		k string
		v []string
	}{{policyRequire, pc.Require}, {policyRequireAny, pc.RequireAny}, {policyScopes, pc.Scopes}, {policyIssuers, pc.Issuers}} {
		if kv.v == nil {
			continue
		}
		for _, item := range kv.v {
			if strings.Contains(item, ",") {
				errs = append(errs, fmt.Errorf("%w: %s item %q has a comma (write a YAML list)", errBadPolicy, kv.k, truncate(item, 64)))
			}
		}
		set(kv.k, strings.Join(kv.v, ","))
	}
	if pc.CEL != "" {
		set(policyCEL, pc.CEL)
	}
	if pc.DPoP != "" {
		set(policyDPoP, pc.DPoP)
	}
	return p, errors.Join(errs...)
}

// setPolicyIn is setPolicy against a state being built (whose issuer
// names are not yet the server's).
func (s *Server) setPolicyIn(p *policy, k, v string, st *trustState) error {
	if k == policyIssuers {
		err := checkList(v, func(n string) error {
			if st.byName[n] == nil {
				return fmt.Errorf("no issuer is named %q", truncate(n, 64))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%w: issuers %q: %w", errBadPolicy, truncate(v, 64), err)
		}
		p.issuers = v
		return nil
	}
	return s.setPolicy(p, k, v)
}

// newRoute checks a RouteConfig.
func (s *Server) newRoute(rc RouteConfig, st *trustState) (route, error) {
	var r route
	var errs []error
	for _, m := range rc.Match.Methods {
		if m == "" || strings.ToUpper(m) != m || !validHeaderName(strings.ToLower(m)) {
			errs = append(errs, fmt.Errorf("match.methods: %q is not an upper-case HTTP method", m))
		}
		r.methods = append(r.methods, m)
	}
	for _, h := range rc.Match.Hosts {
		lh := strings.ToLower(h)
		name := strings.TrimPrefix(lh, "*.")
		if (name == "" || strings.ContainsAny(name, ":*/ ") || !printableASCII(name, false)) && net.ParseIP(name) == nil {
			errs = append(errs, fmt.Errorf("match.hosts: %q is not a host name (without port) or *.name", h))
		}
		r.hosts = append(r.hosts, lh)
	}
	if rc.Match.Path != "" && rc.Match.PathPrefix != "" {
		errs = append(errs, errors.New("match: path and path_prefix are exclusive"))
	}
	for _, p := range []struct{ k, v string }{{"path", rc.Match.Path}, {"path_prefix", rc.Match.PathPrefix}} {
		if p.v != "" && (p.v[0] != '/' || strings.ContainsAny(p.v, "?# ")) {
			errs = append(errs, fmt.Errorf("match.%s: %q must start with / and have no query", p.k, p.v))
		}
	}
	r.path = rc.Match.Path
	r.pathPrefix = rc.Match.PathPrefix
	if len(r.pathPrefix) > 1 {
		r.pathPrefix = strings.TrimSuffix(r.pathPrefix, "/")
	}
	pol, err := s.newPolicy(rc.PolicyConfig, st)
	if err != nil {
		errs = append(errs, err)
	}
	r.pol = pol
	return r, errors.Join(errs...)
}

// matches reports whether the request is r's. path has no query.
func (r *route) matches(method, host, path string) bool {
	if len(r.methods) > 0 && !slices.Contains(r.methods, method) {
		return false
	}
	if len(r.hosts) > 0 && !hostMatches(r.hosts, host) {
		return false
	}
	switch {
	case r.path != "":
		return path == r.path
	case r.pathPrefix == "/":
		return strings.HasPrefix(path, "/")
	case r.pathPrefix != "":
		rest, ok := strings.CutPrefix(path, r.pathPrefix)
		return ok && (rest == "" || rest[0] == '/')
	}
	return true
}

// hostMatches matches a request's host (port removed, any case).
func hostMatches(hosts []string, host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range hosts {
		if suffix, ok := strings.CutPrefix(h, "*"); ok {
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

// routePolicy returns the policy for a request from the file's routes:
// the first that matches, else the default.
func (st *trustState) routePolicy(method, host, path string) *policy {
	path, _, _ = strings.Cut(path, "?")
	for i := range st.routes {
		if st.routes[i].matches(method, host, path) {
			return &st.routes[i].pol
		}
	}
	return &st.def
}
