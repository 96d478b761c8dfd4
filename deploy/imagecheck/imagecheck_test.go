package imagecheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var repo = func() string {
	p, err := filepath.Abs("../..")
	if err != nil {
		panic(err)
	}
	return p
}()

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBuildContext: everything the image build reads is in the context
// .dockerignore leaves.
func TestBuildContext(t *testing.T) {
	files, err := BuildInputs(repo, "./cmd/tollgate")
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range CopySources(Instructions(read(t, "Dockerfile"))) {
		if src != "." {
			files = append(files, src)
		}
	}
	for _, f := range files {
		if !exists(repo, f) {
			t.Errorf("the build needs %s, which does not exist", f)
		}
	}
	ex, err := Excluded([]byte(read(t, ".dockerignore")), files)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) > 0 {
		t.Errorf(".dockerignore leaves out files the build needs: %v", ex)
	}

	t.Run("catches an over-broad .dockerignore", func(t *testing.T) {
		for _, extra := range []string{"internal", "**/*.go", "envoy/*.yaml", "go.sum"} {
			ex, err := Excluded([]byte(read(t, ".dockerignore")+"\n"+extra+"\n"), files)
			if err != nil {
				t.Fatal(err)
			}
			if len(ex) == 0 {
				t.Errorf("Excluded(.dockerignore + %q) = none, want the files it drops", extra)
			}
		}
	})
}

// checkDockerfile asserts the release image's promises.
func checkDockerfile(text string, versionVars []string) []string {
	var problems []string
	ins := Instructions(text)
	var froms []string
	for _, in := range ins {
		if in.Keyword == "FROM" {
			froms = append(froms, in.Args)
			image := strings.Fields(strings.NewReplacer("--platform=$BUILDPLATFORM", "").Replace(in.Args))[0]
			name := image[strings.LastIndex(image, "/")+1:]
			if _, tag, ok := strings.Cut(name, ":"); !ok || tag == "" || tag == "latest" {
				problems = append(problems, "base image "+image+" is not pinned to a tag")
			}
		}
	}
	if len(froms) < 2 {
		problems = append(problems, "not a multi-stage build")
		return problems
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") || !strings.Contains(final, "nonroot") {
		problems = append(problems, "final stage "+final+" is not distroless static nonroot")
	}
	last := map[string]string{}
	var build string
	for _, in := range ins {
		last[in.Keyword] = in.Args
		if in.Keyword == "RUN" && strings.Contains(in.Args, "go build") {
			build = in.Args
		}
	}
	if last["USER"] != "65532:65532" {
		problems = append(problems, "final USER is "+last["USER"]+", want 65532:65532")
	}
	if last["ENTRYPOINT"] != `["/tollgate"]` {
		problems = append(problems, "ENTRYPOINT is "+last["ENTRYPOINT"]+`, want ["/tollgate"]`)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/tollgate"} {
		if !strings.Contains(build, want) {
			problems = append(problems, "the go build does not use "+want)
		}
	}
	for _, v := range versionVars {
		if !regexp.MustCompile(`-X main\.` + v + `=\$\{?[A-Z]+\}?`).MatchString(build) {
			problems = append(problems, "the go build does not stamp main."+v)
		}
	}
	return problems
}

// packageVars returns the package-level variables of cmd/tollgate.
func packageVars(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join(repo, "cmd", "tollgate", "main.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.VAR {
			for _, s := range g.Specs {
				for _, n := range s.(*ast.ValueSpec).Names {
					vars = append(vars, n.Name)
				}
			}
		}
	}
	return vars
}

func TestDockerfile(t *testing.T) {
	vars := packageVars(t)
	for _, v := range []string{"version", "commit"} {
		if !slices.Contains(vars, v) {
			t.Fatalf("cmd/tollgate/main.go has no package variable %s for -X main.%s", v, v)
		}
	}
	if p := checkDockerfile(read(t, "Dockerfile"), []string{"version", "commit"}); len(p) > 0 {
		t.Errorf("Dockerfile: %v", p)
	}

	good := read(t, "Dockerfile")
	tests := []struct{ name, old, new string }{
		{"unpinned base", "golang:1.26.8", "golang:latest"},
		{"root user", "USER 65532:65532", "USER 0:0"},
		{"cgo on", "CGO_ENABLED=0", "CGO_ENABLED=1"},
		{"commit not stamped", "-X main.commit=${COMMIT}", ""},
		{"not distroless", "gcr.io/distroless/static-debian12:nonroot", "debian:12"},
	}
	for _, tt := range tests {
		t.Run("catches "+tt.name, func(t *testing.T) {
			if !strings.Contains(good, tt.old) {
				t.Fatalf("the Dockerfile has no %q", tt.old)
			}
			if p := checkDockerfile(strings.Replace(good, tt.old, tt.new, 1), []string{"version", "commit"}); len(p) == 0 {
				t.Errorf("checkDockerfile(%s) found nothing", tt.name)
			}
		})
	}
}

// TestTiltDockerfile: Tilt's image differs only in where the binary is
// built; its final stage matches the release image's.
func TestTiltDockerfile(t *testing.T) {
	final := func(text string) []Instruction {
		ins := Instructions(text)
		start := 0
		for i, in := range ins {
			if in.Keyword == "FROM" {
				start = i
			}
		}
		var out []Instruction
		for _, in := range ins[start:] {
			if in.Keyword != "COPY" { // the binary's source differs by design
				out = append(out, in)
			}
		}
		return out
	}
	release, tilt := final(read(t, "Dockerfile")), final(read(t, "k8s/tilt.Dockerfile"))
	if !slices.Equal(release, tilt) {
		t.Errorf("k8s/tilt.Dockerfile's image differs from the Dockerfile's final stage:\nrelease %v\ntilt    %v", release, tilt)
	}
	for _, src := range CopySources(Instructions(read(t, "k8s/tilt.Dockerfile"))) {
		if src != "bin/linux/tollgate" && !exists(repo, src) {
			t.Errorf("k8s/tilt.Dockerfile copies %s, which does not exist", src)
		}
	}
}
