package gateway

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	ext_authzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/tollgate-dev/tollgate/envoy"
)

// dpopHeader is the DPoP proof header as Envoy keys it.
const dpopHeader = "dpop"

// stringMatches applies an Envoy StringMatcher to a lowercase header name.
func stringMatches(m *matcherv3.StringMatcher, s string) bool {
	v := s
	fold := func(p string) string { return p }
	if m.GetIgnoreCase() {
		v, fold = strings.ToLower(s), strings.ToLower
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return v == fold(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(v, fold(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(v, fold(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(v, fold(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		return err == nil && re.MatchString(s)
	}
	return false
}

func listMatches(l *matcherv3.ListStringMatcher, s string) bool {
	for _, m := range l.GetPatterns() {
		if stringMatches(m, s) {
			return true
		}
	}
	return false
}

// extAuthzSendsHeader reports why a bootstrap's ext_authz filters would
// not send header to authz ("" when every one sends it): gRPC mode sends
// every header unless allowed_headers limits them or disallowed_headers
// drops them (spec §1); http_service sends only allow-listed ones.
func extAuthzSendsHeader(data []byte, header string) (string, error) {
	b, err := envoy.ValidateYAML(data)
	if err != nil {
		return "", err
	}
	n := 0
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(hcm) != nil {
					continue
				}
				for _, hf := range hcm.GetHttpFilters() {
					if hf.GetTypedConfig().GetTypeUrl() != envoy.TypeExtAuthz {
						continue
					}
					ea := &ext_authzv3.ExtAuthz{}
					if err := hf.GetTypedConfig().UnmarshalTo(ea); err != nil {
						return "", err
					}
					n++
					where := fmt.Sprintf("listener %s filter %s", l.GetName(), hf.GetName())
					if ea.GetHttpService() != nil {
						if !listMatches(ea.GetAllowedHeaders(), header) && !listMatches(ea.GetHttpService().GetAuthorizationRequest().GetAllowedHeaders(), header) {
							return where + ": http_service without " + header + " in allowed_headers", nil
						}
					}
					if ea.GetAllowedHeaders() != nil && !listMatches(ea.GetAllowedHeaders(), header) {
						return where + ": allowed_headers does not include " + header, nil
					}
					if listMatches(ea.GetDisallowedHeaders(), header) {
						return where + ": disallowed_headers drops " + header, nil
					}
				}
			}
		}
	}
	if n == 0 {
		return "no ext_authz filter", nil
	}
	return "", nil
}

// The DPoP proof must reach authz, or every DPoP request is refused: the
// shipped envoy.yaml (whose listeners the chart's bootstrap copies) sends
// every header, and a config that adds allowed_headers without dpop, or
// disallows it, is caught here.
func TestEnvoyConfigSendsDPoPHeader(t *testing.T) {
	const anchor = "validate_mutations: true"
	tests := []struct {
		name   string
		config []byte
		ok     bool
	}{
		{"shipped envoy.yaml", []byte(readShipped(t)), true},
		{"allowed_headers with dpop", edit(t, anchor, anchor+"\n              allowed_headers: {patterns: [{exact: authorization}, {exact: DPoP, ignore_case: true}]}"), true},
		{"allowed_headers with a prefix matching dpop", edit(t, anchor, anchor+"\n              allowed_headers: {patterns: [{prefix: dp}]}"), true},
		{"allowed_headers without dpop", edit(t, anchor, anchor+"\n              allowed_headers: {patterns: [{exact: authorization}, {exact: x-access-tokens}]}"), false},
		{"allowed_headers with DPoP, case-sensitive", edit(t, anchor, anchor+"\n              allowed_headers: {patterns: [{exact: DPoP}]}"), false},
		{"disallowed_headers dpop", edit(t, anchor, anchor+"\n              disallowed_headers: {patterns: [{safe_regex: {regex: \"dp.p\"}}]}"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why, err := extAuthzSendsHeader(tt.config, dpopHeader)
			if err != nil {
				t.Fatal(err)
			}
			if (why == "") != tt.ok {
				t.Errorf("ext_authz sends %s (%s) = %v (%s), want %v", dpopHeader, tt.name, why == "", why, tt.ok)
			}
		})
	}

	// The chart renders its listeners from a copy of envoy.yaml's
	// (deploy/chartcheck keeps them equal); nothing in the template may
	// limit the headers either.
	tpl, err := os.ReadFile("../../charts/tollgate/templates/_envoy.tpl")
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"allowed_headers", "disallowed_headers"} {
		if strings.Contains(string(tpl), field) && !strings.Contains(string(tpl), dpopHeader) {
			t.Errorf("charts/tollgate/templates/_envoy.tpl sets %s without %s", field, dpopHeader)
		}
	}
}

// The Istio and Envoy Gateway examples send every header to authz over
// gRPC unless a list limits them; if one does, it must name dpop.
func TestExamplesSendDPoPHeader(t *testing.T) {
	lists := func(v any) (names []string, set bool) {
		if v == nil {
			return nil, false
		}
		for _, x := range asList(v) {
			s, _ := x.(string)
			names = append(names, strings.ToLower(s))
		}
		return names, true
	}
	sends := func(names []string, set bool) bool {
		if !set {
			return true
		}
		for _, n := range names {
			if n == dpopHeader || (strings.HasSuffix(n, "*") && strings.HasPrefix(dpopHeader, strings.TrimSuffix(n, "*"))) {
				return true
			}
		}
		return false
	}

	mesh := readDocs(t, "../../k8s/examples/istio/mesh-config.yaml")
	found := 0
	for _, doc := range mesh {
		for _, p := range asList(yget(doc, "meshConfig", "extensionProviders")) {
			if yget(p, "name") != "tollgate-authz" {
				continue
			}
			found++
			if yget(p, "envoyExtAuthzGrpc") == nil {
				t.Errorf("Istio provider tollgate-authz is not envoyExtAuthzGrpc (an HTTP provider sends only listed headers)")
			}
			if names, set := lists(yget(p, "envoyExtAuthzGrpc", "includeRequestHeadersInCheck")); !sends(names, set) {
				t.Errorf("Istio provider tollgate-authz: includeRequestHeadersInCheck %q leaves out %s", names, dpopHeader)
			}
		}
	}
	if found != 1 {
		t.Errorf("Istio mesh config has %d tollgate-authz providers, want 1", found)
	}

	sp := kind(readDocs(t, "../../k8s/examples/envoy-gateway/security-policy.yaml"), "SecurityPolicy", "tollgate-ext-authz")
	if sp == nil {
		t.Fatal("no SecurityPolicy tollgate-ext-authz")
	}
	if yget(sp, "spec", "extAuth", "grpc") == nil {
		t.Errorf("SecurityPolicy extAuth is not grpc (Envoy Gateway's HTTP ext auth sends no headers unless listed)")
	}
	if names, set := lists(yget(sp, "spec", "extAuth", "headersToExtAuth")); !sends(names, set) {
		t.Errorf("SecurityPolicy extAuth.headersToExtAuth %q leaves out %s", names, dpopHeader)
	}
}
