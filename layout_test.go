// Package tollgate_test holds the rules of the tree's layout: which
// package may import which, read from `go list`, so that a later change
// cannot quietly wire one service into another or a test harness into
// the binary.
package tollgate_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/tollgate-dev/tollgate"

// A box is a part of the architecture; every package of the module is in
// exactly one.
type box string

const (
	boxCmd     box = "cmd"          // cmd/tollgate: flags and environment -> Config
	boxStack   box = "stack"        // the stack runner
	boxService box = "service"      // issuer, authz, books
	boxGateway box = "gateway"      // the dev gateway
	boxEnvoy   box = "envoy config" // Envoy config loading, validation, relocation
	boxShared  box = "internal"     // plumbing that depends on no part
	boxTest    box = "test support" // harnesses and checks; never in the binary
)

// boxes places every package of the module; a new package must be placed
// here, deliberately.
var boxes = map[string]box{
	"cmd/tollgate":      boxCmd,
	"stack":             boxStack,
	"issuer":            boxService,
	"authz":             boxService,
	"books":             boxService,
	"envoy/gateway":     boxGateway,
	"envoy":             boxEnvoy,
	"internal/httpapi":  boxShared,
	"internal/server":   boxShared,
	"internal/store":    boxShared,
	"internal/dpop":     boxShared,
	"internal/jose":     boxShared,
	"internal/testenv":  boxTest,
	"internal/pgtest":   boxTest,
	"internal/tutorial": boxTest,
	"e2e/local":         boxTest,
	"e2e/resilience":    boxTest,
	"e2e/authzbench":    boxTest,
	"e2e/proxies":       boxTest,
	"e2e/oidc":          boxTest,
	"deploy/chartcheck": boxTest,
	"deploy/imagecheck": boxTest,
	"deploy/tiltcheck":  boxTest,
	"":                  boxTest, // this file's package

	// Tracing: the tracer providers the parts share, and the OTLP
	// receiver the tests export to.
	"internal/telemetry": boxShared,
	"internal/otlptest":  boxTest,
}

// allowed are the arrows between production boxes. A box may import
// itself only where the set says so: one service never imports another.
var allowed = map[box][]box{
	boxCmd:     {boxStack, boxService, boxGateway, boxEnvoy, boxShared},
	boxStack:   {boxService, boxGateway, boxEnvoy, boxShared},
	boxService: {boxShared},
	boxGateway: {boxEnvoy, boxShared},
	boxEnvoy:   {boxShared},
	boxShared:  {boxShared},
}

// forbiddenInBinary are standard packages only tests may link.
var forbiddenInBinary = []string{"testing", "net/http/httptest"}

// pkg is what the layout rules need of one package.
type pkg struct {
	Path    string   // relative to the module, "" for the root
	Imports []string // non-test imports, module packages relative
}

// checkLayout returns every rule the packages break; deps are the
// packages the binary links (module packages relative, others as is).
func checkLayout(pkgs []pkg, deps []string) []string {
	var errs []string
	for _, p := range pkgs {
		from, ok := boxes[p.Path]
		if !ok {
			errs = append(errs, fmt.Sprintf("package %q is in no box: place it in layout_test.go", p.Path))
			continue
		}
		if from == boxTest {
			continue
		}
		for _, imp := range p.Imports {
			if !inModule(imp) {
				continue
			}
			imp = rel(imp)
			to, ok := boxes[imp]
			switch {
			case !ok:
				errs = append(errs, fmt.Sprintf("%s imports %q, which is in no box", p.Path, imp))
			case to == boxTest:
				errs = append(errs, fmt.Sprintf("%s (%s) imports the test support package %s", p.Path, from, imp))
			case !slices.Contains(allowed[from], to):
				errs = append(errs, fmt.Sprintf("%s (%s) imports %s (%s): %s may import only %v", p.Path, from, imp, to, from, allowed[from]))
			}
		}
	}
	for _, d := range deps {
		if slices.Contains(forbiddenInBinary, d) {
			errs = append(errs, fmt.Sprintf("the binary links %s", d))
		}
		if inModule(d) && boxes[rel(d)] == boxTest {
			errs = append(errs, fmt.Sprintf("the binary links the test support package %s", rel(d)))
		}
	}
	sort.Strings(errs)
	return errs
}

func inModule(path string) bool { return path == module || strings.HasPrefix(path, module+"/") }

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

func goList(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list %v: %v\n%s", args, err, stderr)
	}
	return out
}

// TestLayout checks the module's real import graph.
func TestLayout(t *testing.T) {
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(goList(t, "-json=ImportPath,Imports", "./..."))))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, pkg{Path: rel(p.ImportPath), Imports: p.Imports})
	}
	if len(pkgs) < len(boxes)/2 {
		t.Fatalf("go list found %d packages, want about %d", len(pkgs), len(boxes))
	}
	deps := strings.Fields(string(goList(t, "-deps", "./cmd/tollgate")))
	if !slices.Contains(deps, module+"/authz") {
		t.Fatalf("go list -deps ./cmd/tollgate lacks authz: %v", deps)
	}
	for _, e := range checkLayout(pkgs, deps) {
		t.Error(e)
	}
}

// TestLayoutRules shows each rule catching what it is for.
func TestLayoutRules(t *testing.T) {
	m := func(p string) string { return module + "/" + p }
	good := []pkg{
		{"cmd/tollgate", []string{m("stack"), m("authz"), m("envoy/gateway"), m("envoy"), m("internal/server"), "fmt"}},
		{"stack", []string{m("issuer"), m("envoy/gateway"), m("internal/server")}},
		{"authz", []string{m("internal/server"), "github.com/golang-jwt/jwt/v5"}},
		{"envoy/gateway", []string{m("envoy"), m("internal/server")}},
		{"e2e/resilience", []string{m("authz"), m("internal/testenv"), "testing"}},
	}
	for _, tc := range []struct {
		name string
		pkgs []pkg
		deps []string
		want string // a substring of the one error; "" for none
	}{
		{"the intended shape", good, []string{"fmt", m("authz")}, ""},
		{"internal imports a service", append(slices.Clone(good), pkg{"internal/server", []string{m("authz")}}), nil, "internal/server (internal) imports authz (service)"},
		{"a service imports another", append(slices.Clone(good), pkg{"books", []string{m("issuer")}}), nil, "books (service) imports issuer (service)"},
		{"a service imports the stack", append(slices.Clone(good), pkg{"issuer", []string{m("stack")}}), nil, "issuer (service) imports stack (stack)"},
		{"the gateway imports a service", append(slices.Clone(good), pkg{"envoy/gateway", []string{m("authz")}}), nil, "envoy/gateway (gateway) imports authz"},
		{"a service imports a harness", append(slices.Clone(good), pkg{"authz", []string{m("internal/testenv")}}), nil, "imports the test support package internal/testenv"},
		{"an unplaced package", append(slices.Clone(good), pkg{"authz/bench", nil}), nil, `package "authz/bench" is in no box`},
		{"the binary links testing", good, []string{"testing"}, "the binary links testing"},
		{"the binary links httptest", good, []string{"net/http/httptest"}, "the binary links net/http/httptest"},
		{"the binary links a harness", good, []string{m("e2e/resilience")}, "the binary links the test support package e2e/resilience"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := checkLayout(tc.pkgs, tc.deps)
			switch {
			case tc.want == "" && len(errs) > 0:
				t.Errorf("checkLayout = %q, want no errors", errs)
			case tc.want != "" && (len(errs) != 1 || !strings.Contains(errs[0], tc.want)):
				t.Errorf("checkLayout = %q, want one error containing %q", errs, tc.want)
			}
		})
	}
}
