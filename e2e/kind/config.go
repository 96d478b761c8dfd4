// Package kinde2e holds Tollgate's end-to-end test on a kind cluster
// (kind_test.go, build tag "kind", run by `make e2e-kind`) and the parts
// of it that need no cluster: loading k8s/kind.yaml strictly.
//
// It is its own module so that kind's Go API does not enter the main
// module; the main module comes in through a replace directive.
package kinde2e

import (
	"fmt"
	"os"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

// LoadConfig reads a kind cluster configuration strictly: an unknown or
// misspelt field is an error, not a silently ignored setting.
func LoadConfig(path string) (*v1alpha4.Cluster, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("kind config %s: %w", path, err)
	}
	if c.Kind != "Cluster" || c.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return nil, fmt.Errorf("kind config %s: kind %q apiVersion %q, want Cluster kind.x-k8s.io/v1alpha4", path, c.Kind, c.APIVersion)
	}
	return &c, nil
}

// HostPort returns the host port mapped to containerPort on the first
// node that maps it, or 0.
func HostPort(c *v1alpha4.Cluster, containerPort int32) int32 {
	for _, n := range c.Nodes {
		for _, m := range n.ExtraPortMappings {
			if m.ContainerPort == containerPort {
				return m.HostPort
			}
		}
	}
	return 0
}
