package gateway

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/tollgate-dev/tollgate/envoy"
)

// routeTable is a compiled RouteConfiguration.
type routeTable struct {
	vhosts []*virtualHost
}

type virtualHost struct {
	name    string
	domains []string
	routes  []*route
	authz   *authzPerRoute // typed_per_filter_config of the ext_authz filter, or nil
}

type route struct {
	name  string
	match routeMatch
	// Exactly one of cluster and direct is set.
	cluster string
	// timeout is RouteAction.timeout: from the end of the downstream
	// request to the end of the upstream response; 0 disables it.
	timeout                time.Duration
	direct                 *directResponse
	requestHeadersToRemove []string
	responseHeadersToAdd   []headerMutation
	authz                  *authzPerRoute
}

type directResponse struct {
	status int
	body   string
}

// authzPerRoute is a compiled ExtAuthzPerRoute.
type authzPerRoute struct {
	disabled          bool
	contextExtensions map[string]string
}

type pathMatchKind int

const (
	matchPath pathMatchKind = iota
	matchPrefix
	matchRegex
)

type routeMatch struct {
	kind          pathMatchKind
	value         string
	re            *regexp.Regexp
	caseSensitive bool
	headers       []headerMatcher
}

type headerMatcher struct {
	name    string
	present *bool
	str     *stringMatcher
	invert  bool
}

type stringMatchKind int

const (
	strExact stringMatchKind = iota
	strPrefix
	strSuffix
	strContains
	strRegex
)

type stringMatcher struct {
	kind       stringMatchKind
	value      string
	re         *regexp.Regexp
	ignoreCase bool
}

// compileRegex compiles an Envoy RE2 safe_regex, which must match the
// whole input.
func compileRegex(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)$`)
}

func compileStringMatcher(m *matcherv3.StringMatcher, path string) (*stringMatcher, error) {
	sm := &stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = strExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = strPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = strSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = strContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex.GetRegex())
		if err != nil {
			return nil, envoy.ConfigErrorf(path+".safe_regex.regex", "%v", err)
		}
		sm.kind, sm.re = strRegex, re
	default:
		return nil, &UnsupportedError{Path: path, Reason: fmt.Sprintf("match pattern %T", p)}
	}
	return sm, nil
}

func (m *stringMatcher) matches(v string) bool {
	if m.kind == strRegex {
		// Envoy's ignore_case does not apply to safe_regex.
		return m.re.MatchString(v)
	}
	want := m.value
	if m.ignoreCase {
		v, want = strings.ToLower(v), strings.ToLower(want)
	}
	switch m.kind {
	case strExact:
		return v == want
	case strPrefix:
		return strings.HasPrefix(v, want)
	case strSuffix:
		return strings.HasSuffix(v, want)
	case strContains:
		return strings.Contains(v, want)
	}
	return false
}

func compileRoute(r *routev3.Route, path string) (*route, error) {
	out := &route{name: r.GetName()}
	m := r.GetMatch()
	rm := routeMatch{caseSensitive: true}
	if cs := m.GetCaseSensitive(); cs != nil {
		rm.caseSensitive = cs.GetValue()
	}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Path:
		rm.kind, rm.value = matchPath, p.Path
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.value = matchPrefix, p.Prefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(p.SafeRegex.GetRegex())
		if err != nil {
			return nil, envoy.ConfigErrorf(path+".match.safe_regex.regex", "%v", err)
		}
		rm.kind, rm.re = matchRegex, re
	default:
		return nil, &UnsupportedError{Path: path + ".match", Reason: fmt.Sprintf("path specifier %T", p)}
	}
	if !rm.caseSensitive {
		rm.value = strings.ToLower(rm.value)
	}
	for i, h := range m.GetHeaders() {
		hp := fmt.Sprintf("%s.match.headers[%d]", path, i)
		hm := headerMatcher{name: strings.ToLower(h.GetName()), invert: h.GetInvertMatch()}
		switch s := h.GetHeaderMatchSpecifier().(type) {
		case *routev3.HeaderMatcher_StringMatch:
			sm, err := compileStringMatcher(s.StringMatch, hp+".string_match")
			if err != nil {
				return nil, err
			}
			hm.str = sm
		case *routev3.HeaderMatcher_PresentMatch:
			present := s.PresentMatch
			hm.present = &present
		default:
			return nil, &UnsupportedError{Path: hp, Reason: fmt.Sprintf("header match specifier %T", s)}
		}
		rm.headers = append(rm.headers, hm)
	}
	out.match = rm

	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		out.cluster = a.Route.GetCluster()
		if out.cluster == "" {
			return nil, &UnsupportedError{Path: path + ".route", Reason: "only route.cluster is implemented"}
		}
		out.timeout = defaultRouteTimeout
		if t := a.Route.GetTimeout(); t != nil {
			if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
				return nil, envoy.ConfigErrorf(path+".route.timeout", "a route timeout must be a valid duration of 0 (no timeout) or more")
			}
			out.timeout = t.AsDuration()
		}
	case *routev3.Route_DirectResponse:
		out.direct = &directResponse{
			status: int(a.DirectResponse.GetStatus()),
			body:   a.DirectResponse.GetBody().GetInlineString(),
		}
	default:
		return nil, &UnsupportedError{Path: path, Reason: fmt.Sprintf("route action %T", a)}
	}
	for _, h := range r.GetRequestHeadersToRemove() {
		out.requestHeadersToRemove = append(out.requestHeadersToRemove, strings.ToLower(h))
	}
	for i, o := range r.GetResponseHeadersToAdd() {
		hm, err := compileRouteHeaderOption(o.GetHeader().GetKey(), o.GetHeader().GetValue(), o.GetAppendAction().String(), fmt.Sprintf("%s.response_headers_to_add[%d]", path, i))
		if err != nil {
			return nil, err
		}
		out.responseHeadersToAdd = append(out.responseHeadersToAdd, hm)
	}
	return out, nil
}

// compileRouteHeaderOption maps a route-level HeaderValueOption to a
// mutation. Values are taken literally: the gateway does not implement
// Envoy's %VAR% formatters, so a value containing '%' is refused.
func compileRouteHeaderOption(key, value, action, path string) (headerMutation, error) {
	if strings.Contains(value, "%") {
		return headerMutation{}, &UnsupportedError{Path: path + ".header.value", Reason: "header value formatters (%...%)"}
	}
	m := headerMutation{key: strings.ToLower(key), value: value}
	switch action {
	case "APPEND_IF_EXISTS_OR_ADD":
		m.action = mutAdd
	case "ADD_IF_ABSENT":
		m.action = mutAddIfAbsent
	case "OVERWRITE_IF_EXISTS_OR_ADD":
		m.action = mutSet
	case "OVERWRITE_IF_EXISTS":
		m.action = mutOverwriteIfExists
	default:
		return headerMutation{}, &UnsupportedError{Path: path + ".append_action", Reason: "value " + action}
	}
	return m, nil
}

// pathMatches implements RouteMatch path/prefix/safe_regex: path and
// safe_regex compare the path without its query string, prefix compares
// the start of the whole :path.
func (m *routeMatch) pathMatches(fullPath string) bool {
	path, _ := splitQuery(fullPath)
	switch m.kind {
	case matchPath:
		if !m.caseSensitive {
			path = strings.ToLower(path)
		}
		return path == m.value
	case matchPrefix:
		if !m.caseSensitive {
			fullPath = strings.ToLower(fullPath)
		}
		return strings.HasPrefix(fullPath, m.value)
	case matchRegex:
		return m.re.MatchString(path)
	}
	return false
}

// matches reports whether the route matches the request headers: the path
// matcher, then every header matcher.
func (m *routeMatch) matches(h *headerMap) bool {
	if !m.pathMatches(h.value(":path")) {
		return false
	}
	for _, hm := range m.headers {
		if !hm.matches(h) {
			return false
		}
	}
	return true
}

// matches implements HeaderMatcher: repeated headers are matched as their
// comma-joined value; a missing header never matches a string matcher,
// and invert_match inverts the result (Envoy's HeaderUtility::matchHeaders).
func (hm *headerMatcher) matches(h *headerMap) bool {
	v, ok := h.joined(hm.name)
	var result bool
	switch {
	case hm.present != nil:
		result = ok == *hm.present
	case !ok:
		// A missing header fails a string match, inverted or not.
		return false
	default:
		result = hm.str.matches(v)
	}
	return result != hm.invert
}

// findVirtualHost selects the virtual host for an :authority the way Envoy
// does: an exact domain, then the longest suffix wildcard ("*.example.com"),
// then the longest prefix wildcard ("example.*"), then "*". Matching is
// case-insensitive and includes the port, if any.
func (t *routeTable) findVirtualHost(authority string) *virtualHost {
	host := strings.ToLower(authority)
	var best *virtualHost
	bestLen, bestRank := -1, 4
	for _, vh := range t.vhosts {
		for _, d := range vh.domains {
			d = strings.ToLower(d)
			rank, length := 4, 0
			switch {
			case d == "*":
				rank = 3
			case strings.HasPrefix(d, "*"):
				if len(host) > len(d)-1 && strings.HasSuffix(host, d[1:]) {
					rank, length = 1, len(d)
				}
			case strings.HasSuffix(d, "*"):
				if len(host) > len(d)-1 && strings.HasPrefix(host, d[:len(d)-1]) {
					rank, length = 2, len(d)
				}
			case d == host:
				rank = 0
			}
			if rank < bestRank || (rank == bestRank && length > bestLen) {
				best, bestRank, bestLen = vh, rank, length
			}
		}
	}
	if bestRank == 4 {
		return nil
	}
	return best
}

// findRoute returns the virtual host and the first route matching h, or
// nil when there is none (Envoy then answers 404 and skips ext_authz).
func (t *routeTable) findRoute(h *headerMap) (*virtualHost, *route) {
	vh := t.findVirtualHost(h.value(":authority"))
	if vh == nil {
		return nil, nil
	}
	for _, r := range vh.routes {
		if r.match.matches(h) {
			return vh, r
		}
	}
	return vh, nil
}

// authzSettings resolves the ext_authz per-route settings for a route:
// the most specific config decides whether the check is disabled, and
// context_extensions are merged from the virtual host to the route, the
// more specific value winning per key (FilterConfigPerRoute::merge).
func authzSettings(vh *virtualHost, r *route) (disabled bool, ctx map[string]string) {
	ctx = map[string]string{}
	for _, c := range []*authzPerRoute{vh.authz, r.authz} {
		if c == nil {
			continue
		}
		disabled = c.disabled
		for k, v := range c.contextExtensions {
			ctx[k] = v
		}
	}
	return disabled, ctx
}
