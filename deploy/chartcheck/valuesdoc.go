package chartcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// schemaNode is the part of a JSON Schema the values table reads.
type schemaNode struct {
	Type        any                    `json:"type"`
	Description string                 `json:"description"`
	Enum        []any                  `json:"enum"`
	Properties  map[string]*schemaNode `json:"properties"`
}

// ValuesTableBegin and ValuesTableEnd mark the generated table in a
// Markdown file.
const (
	ValuesTableBegin = "<!-- values table: generated from charts/tollgate/values.schema.json by `go test ./deploy/chartcheck -run TestValuesTable -update` -->"
	ValuesTableEnd   = "<!-- end of values table -->"
)

// ValuesTable renders the chart's values as a Markdown table: every leaf
// of values.schema.json with its type, its default from values.yaml and
// its description. A leaf without a description, or a default in
// values.yaml that the schema does not describe, is an error.
func ValuesTable(schemaJSON, valuesYAML []byte) (string, error) {
	var root schemaNode
	if err := json.Unmarshal(schemaJSON, &root); err != nil {
		return "", fmt.Errorf("values.schema.json: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(valuesYAML, &values); err != nil {
		return "", fmt.Errorf("values.yaml: %w", err)
	}
	var rows []string
	var errs []error
	var walk func(path string, n *schemaNode, def any, present bool)
	walk = func(path string, n *schemaNode, def any, present bool) {
		if len(n.Properties) > 0 && typeOf(n) == "object" {
			defMap, _ := def.(map[string]any)
			for name := range defMap {
				if _, ok := n.Properties[name]; !ok {
					errs = append(errs, fmt.Errorf("values.yaml sets %s, which the schema does not describe", join(path, name)))
				}
			}
			for _, name := range slices.Sorted(maps.Keys(n.Properties)) {
				v, ok := defMap[name]
				walk(join(path, name), n.Properties[name], v, ok)
			}
			return
		}
		if n.Description == "" {
			errs = append(errs, fmt.Errorf("%s has no description in the schema", path))
		}
		d := "(none)"
		if present {
			b, err := json.Marshal(def)
			if err != nil {
				errs = append(errs, err)
			}
			d = "`" + string(b) + "`"
		}
		typ := typeOf(n)
		if len(n.Enum) > 0 {
			var alts []string
			for _, e := range n.Enum {
				alts = append(alts, fmt.Sprint(e))
			}
			typ += ": " + strings.Join(alts, ", ")
		}
		rows = append(rows, fmt.Sprintf("| `%s` | %s | %s | %s |", path, typ, d, strings.ReplaceAll(n.Description, "|", `\|`)))
	}
	walk("", &root, values, true)
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	return "| Value | Type | Default | Description |\n|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n", nil
}

func typeOf(n *schemaNode) string {
	switch t := n.Type.(type) {
	case string:
		return t
	case []any:
		var s []string
		for _, x := range t {
			s = append(s, fmt.Sprint(x))
		}
		return strings.Join(s, " or ")
	}
	return "number or string"
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// ReplaceTable returns doc with the text between the table markers
// replaced by table, or an error when doc has no markers.
func ReplaceTable(doc, table string) (string, error) {
	before, rest, ok := strings.Cut(doc, ValuesTableBegin)
	if !ok {
		return "", errors.New("no values table begin marker")
	}
	_, after, ok := strings.Cut(rest, ValuesTableEnd)
	if !ok {
		return "", errors.New("no values table end marker")
	}
	return before + ValuesTableBegin + "\n" + table + ValuesTableEnd + after, nil
}
