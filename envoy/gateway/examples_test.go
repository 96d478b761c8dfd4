package gateway

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/envoy"
)

// routeSplit lists the protected and the public paths of the shipped
// route table: exact paths as "/x", prefixes as "/x/*".
func routeSplit(t *testing.T) (protected, public []string) {
	t.Helper()
	b, err := envoy.LoadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := compile(b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, vh := range c.routes.vhosts {
		for _, r := range vh.routes {
			if r.cluster == "" {
				continue // the 404 route
			}
			p := r.match.value
			switch r.match.kind {
			case matchPrefix:
				p += "*"
			case matchRegex:
				// The expression as written in envoy.yaml.
				p = strings.TrimSuffix(strings.TrimPrefix(r.match.re.String(), "^(?:"), ")$")
			}
			if disabled, _ := authzSettings(vh, r); disabled {
				public = append(public, p)
			} else {
				protected = append(protected, p)
			}
		}
	}
	return protected, public
}

// readDocs parses a multi-document YAML file into generic maps.
func readDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	for _, part := range bytes.Split(data, []byte("\n---\n")) {
		var m map[string]any
		if err := yaml.UnmarshalStrict(part, &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m != nil {
			docs = append(docs, m)
		}
	}
	return docs
}

// get walks a generic YAML value by map keys and list indexes.
func yget(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func yamlStrings(v any) []string {
	var out []string
	for _, x := range asList(v) {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func kind(docs []map[string]any, k, name string) map[string]any {
	for _, d := range docs {
		if d["kind"] == k && yget(d, "metadata", "name") == name {
			return d
		}
	}
	return nil
}

// TestIstioExampleMatchesRouteTable: the Istio AuthorizationPolicy checks
// every path envoy.yaml protects, and the VirtualService strips the
// identity headers on exactly the public routes.
func TestIstioExampleMatchesRouteTable(t *testing.T) {
	protected, public := routeSplit(t)
	docs := readDocs(t, "../../k8s/examples/istio/authorization-policy.yaml")
	ap := kind(docs, "AuthorizationPolicy", "tollgate-ext-authz")
	if ap == nil {
		t.Fatal("no AuthorizationPolicy tollgate-ext-authz")
	}
	if yget(ap, "spec", "action") != "CUSTOM" || yget(ap, "spec", "provider", "name") != "tollgate-authz" {
		t.Errorf("AuthorizationPolicy action/provider = %v/%v, want CUSTOM/tollgate-authz", yget(ap, "spec", "action"), yget(ap, "spec", "provider", "name"))
	}
	var checked []string
	for _, rule := range asList(yget(ap, "spec", "rules")) {
		for _, to := range asList(yget(rule, "to")) {
			checked = append(checked, yamlStrings(yget(to, "operation", "paths"))...)
		}
	}
	// A regex route is checked when a checked prefix ("/users/*")
	// covers the expression's literal prefix.
	coveredByPrefix := func(expr string) bool {
		lit, _ := regexp.MustCompile(expr).LiteralPrefix()
		for _, c := range checked {
			if strings.HasSuffix(c, "*") && strings.HasPrefix(lit, strings.TrimSuffix(c, "*")) {
				return true
			}
		}
		return false
	}
	for _, p := range protected {
		if !slices.Contains(checked, p) && !(strings.HasPrefix(p, "/") && strings.ContainsAny(p, "[{") && coveredByPrefix(p)) {
			t.Errorf("Istio AuthorizationPolicy does not check %s, which envoy.yaml protects", p)
		}
	}
	for _, p := range public {
		if slices.Contains(checked, p) {
			t.Errorf("Istio AuthorizationPolicy checks public path %s", p)
		}
	}
	vs := kind(docs, "VirtualService", "tollgate")
	if vs == nil {
		t.Fatal("no VirtualService tollgate")
	}
	var stripped []string
	for _, route := range asList(yget(vs, "spec", "http")) {
		removes := yamlStrings(yget(route, "headers", "request", "remove"))
		for _, m := range asList(yget(route, "match")) {
			p, _ := yget(m, "uri", "exact").(string)
			if re, ok := yget(m, "uri", "regex").(string); ok {
				p = re
			} else if p == "" {
				p, _ = yget(m, "uri", "prefix").(string)
				p += "*"
			}
			if slices.Equal(removes, []string{"x-user-id", "x-user-issuer", "x-user-name", "x-user-roles"}) {
				stripped = append(stripped, p)
			} else if len(removes) > 0 {
				t.Errorf("VirtualService route for %s removes %v, want exactly the identity headers or nothing", p, removes)
			}
		}
	}
	sort.Strings(stripped)
	sort.Strings(public)
	if !slices.Equal(stripped, public) {
		t.Errorf("VirtualService strips identity headers on %v, want the public routes %v", stripped, public)
	}
	mesh := readDocs(t, "../../k8s/examples/istio/mesh-config.yaml")
	if yget(mesh[0], "meshConfig", "extensionProviders", 0, "envoyExtAuthzGrpc", "failOpen") != false {
		t.Errorf("Istio provider must fail closed (failOpen: false)")
	}
}

// TestEnvoyGatewayExampleMatchesRouteTable: the SecurityPolicy covers the
// HTTPRoute holding every protected path, and the public HTTPRoute strips
// the identity headers.
func TestEnvoyGatewayExampleMatchesRouteTable(t *testing.T) {
	protected, public := routeSplit(t)
	docs := readDocs(t, "../../k8s/examples/envoy-gateway/security-policy.yaml")
	sp := kind(docs, "SecurityPolicy", "tollgate-ext-authz")
	if sp == nil {
		t.Fatal("no SecurityPolicy tollgate-ext-authz")
	}
	target, _ := yget(sp, "spec", "targetRefs", 0, "name").(string)
	if yget(sp, "spec", "extAuth", "failOpen") != false || yget(sp, "spec", "extAuth", "grpc", "backendRefs", 0, "name") != "tollgate-authz" {
		t.Errorf("SecurityPolicy extAuth = %v, want grpc to tollgate-authz, failOpen false", yget(sp, "spec", "extAuth"))
	}
	paths := func(route map[string]any) []string {
		var out []string
		for _, rule := range asList(yget(route, "spec", "rules")) {
			for _, m := range asList(yget(rule, "matches")) {
				p, _ := yget(m, "path", "value").(string)
				if yget(m, "path", "type") == "PathPrefix" {
					p += "*"
				}
				if !slices.Contains(out, p) {
					out = append(out, p)
				}
			}
		}
		sort.Strings(out)
		return out
	}
	prot := kind(docs, "HTTPRoute", target)
	if prot == nil {
		t.Fatalf("SecurityPolicy targets HTTPRoute %q, which the example does not define", target)
	}
	sort.Strings(protected)
	if got := paths(prot); !slices.Equal(got, protected) {
		t.Errorf("HTTPRoute %s (checked) serves %v, want the protected paths %v", target, got, protected)
	}
	pub := kind(docs, "HTTPRoute", "tollgate-public")
	if pub == nil {
		t.Fatal("no HTTPRoute tollgate-public")
	}
	sort.Strings(public)
	if got := paths(pub); !slices.Equal(got, public) {
		t.Errorf("HTTPRoute tollgate-public serves %v, want the public paths %v", got, public)
	}
	for _, rule := range asList(yget(pub, "spec", "rules")) {
		var removed []string
		for _, f := range asList(yget(rule, "filters")) {
			removed = append(removed, yamlStrings(yget(f, "requestHeaderModifier", "remove"))...)
		}
		sort.Strings(removed)
		if !slices.Equal(removed, []string{"x-user-id", "x-user-issuer", "x-user-name", "x-user-roles"}) {
			t.Errorf("public HTTPRoute rule removes %v, want the identity headers", removed)
		}
	}
}
