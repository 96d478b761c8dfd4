package kinde2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestKindConfig checks k8s/kind.yaml offline: it decodes strictly into
// kind's v1alpha4 types, and maps the gateway's node port from
// values-kind.yaml to localhost:8080.
func TestKindConfig(t *testing.T) {
	c, err := LoadConfig("../../k8s/kind.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Gateway struct {
			Service struct {
				Type     string `json:"type"`
				NodePort int32  `json:"nodePort"`
			} `json:"service"`
		} `json:"gateway"`
	}
	data, err := os.ReadFile("../../charts/tollgate/values-kind.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatal(err)
	}
	if values.Gateway.Service.Type != "NodePort" || values.Gateway.Service.NodePort == 0 {
		t.Fatalf("values-kind.yaml gateway.service = %+v, want a fixed NodePort", values.Gateway.Service)
	}
	if got := HostPort(c, values.Gateway.Service.NodePort); got != 8080 {
		t.Errorf("kind.yaml maps node port %d to host port %d, want 8080", values.Gateway.Service.NodePort, got)
	}
}

func TestLoadConfigCatches(t *testing.T) {
	good, err := os.ReadFile("../../k8s/kind.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, old, new string }{
		{"misspelt field", "extraPortMappings:", "extraPortMapping:"},
		{"wrong type", "hostPort: 8080", "hostPort: eighty"},
		{"wrong kind", "kind: Cluster", "kind: Clusters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(good), tt.old) {
				t.Fatalf("kind.yaml has no %q", tt.old)
			}
			p := filepath.Join(t.TempDir(), "kind.yaml")
			if err := os.WriteFile(p, []byte(strings.Replace(string(good), tt.old, tt.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadConfig(p); err == nil {
				t.Errorf("LoadConfig(kind.yaml with %s) = nil error, want an error", tt.name)
			}
		})
	}
}
