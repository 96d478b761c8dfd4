package chartcheck

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the values tables in the READMEs from values.schema.json")

// TestValuesTable keeps the documented values equal to the schema: the
// chart's README always, and the project README once it has the markers.
func TestValuesTable(t *testing.T) {
	schema, err := os.ReadFile(filepath.Join(chart, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	values, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	table, err := ValuesTable(schema, values)
	if err != nil {
		t.Fatalf("ValuesTable: %v", err)
	}
	// Both pages that show the values table must carry it whole.
	docs := []string{filepath.Join(chart, "README.md"), filepath.Join(repo, "docs", "kubernetes.md")}
	for _, path := range docs {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ReplaceTable(string(b), table)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if want != string(b) {
			t.Errorf("%s: the values table is not the one values.schema.json gives; run go test ./deploy/chartcheck -run TestValuesTable -update", path)
		}
	}
}

func TestValuesTableCatches(t *testing.T) {
	schema := []byte(`{"type": "object", "properties": {
		"a": {"type": "string", "description": "A."},
		"b": {"type": "object", "properties": {"c": {"type": "integer"}}}}}`)
	tests := []struct{ name, values, want string }{
		{"value the schema does not describe", "a: x\nz: 1\n", "does not describe"},
		{"leaf without a description", "a: x\nb: {c: 1}\n", "no description"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ValuesTable(schema, []byte(tt.values))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ValuesTable(%s) = %v, want an error about %q", tt.name, err, tt.want)
			}
		})
	}
}
