package authz

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docBlock returns the fenced block that follows marker in docs/authz.md.
func docBlock(t *testing.T, doc, marker string) string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "<!-- "+marker+" -->\n```yaml\n")
	if !ok {
		t.Fatalf("docs/authz.md has no yaml block after <!-- %s -->", marker)
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("docs/authz.md: unterminated block after <!-- %s -->", marker)
	}
	return block
}

// TestDocsConfigExamples loads the configuration file and the claim
// mappings docs/authz.md shows, exactly as written, and checks that the
// error it shows for a misspelt key is the one authz prints.
func TestDocsConfigExamples(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "authz.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	cfg := DefaultConfig()
	cfg.ConfigFile = "authz.yaml"
	files := map[string]string{"authz-config-example": docBlock(t, doc, "authz-config-example")}
	for _, m := range []string{"authz-claims-keycloak", "authz-claims-entra", "authz-claims-auth0"} {
		files[m] = "issuers:\n" + indent(docBlock(t, doc, m), "  ")
	}
	for name, body := range files {
		t.Run(name, func(t *testing.T) {
			if err := CheckConfigFile(cfg, "authz.yaml", []byte(body)); err != nil {
				t.Errorf("CheckConfigFile(docs %s) = %v\n%s", name, err, body)
			}
		})
	}
	t.Run("the error shown for a misspelt key", func(t *testing.T) {
		bad := "issuers:\n  - name: tollgate\n    issuer: http://localhost:8080\n    audiences: [tollgate]\n    claim:\n      name: preferred_username\n"
		err := CheckConfigFile(cfg, "authz.yaml", []byte(bad))
		if err == nil {
			t.Fatal("CheckConfigFile(misspelt claims) = nil")
		}
		if want := "tollgate authz: " + err.Error(); !strings.Contains(doc, want) {
			t.Errorf("docs/authz.md does not show the error authz prints:\n%s", want)
		}
	})
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = by + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}
