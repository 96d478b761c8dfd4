package envoy

import (
	_ "embed"
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
)

// shipped is envoy.yaml as it was when the binary was built.
//
//go:embed envoy.yaml
var shipped []byte

// ShippedName is how errors and banners name the built-in bootstrap.
const ShippedName = "the built-in envoy.yaml"

// Load loads the bootstrap at path as LoadFile does, or, for an empty
// path, the envoy.yaml built into the binary, so `tollgate up` and
// `tollgate gateway` run from any directory.
func Load(path string) (*bootstrapv3.Bootstrap, error) {
	if path != "" {
		return LoadFile(path)
	}
	b, err := ValidateYAML(shipped)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ShippedName, err)
	}
	return b, nil
}

// ShippedYAML returns a copy of the built-in envoy.yaml.
func ShippedYAML() []byte { return append([]byte(nil), shipped...) }
