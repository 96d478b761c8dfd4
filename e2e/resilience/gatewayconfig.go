package resilience

import (
	"fmt"
	"os"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/envoy"
)

// GatewayConfig says how a test's copy of the Envoy bootstrap differs
// from the shipped one.
type GatewayConfig struct {
	// Listen and Admin are the listener's and the admin interface's
	// addresses ("127.0.0.1:port").
	Listen, Admin string
	// Endpoints maps cluster names to the one address each now has.
	Endpoints map[string]string
	// FailureModeAllow turns the ext_authz filter's fail-closed setting
	// off. It exists only to show that the authz scenarios catch a
	// gateway that lets requests through when authz cannot answer.
	FailureModeAllow bool
}

// WriteGatewayConfig loads the bootstrap at src (validating it as the
// gateway does), applies c, and writes the result to dst as YAML, which
// it loads again to make sure the copy is as valid as the original.
func WriteGatewayConfig(src, dst string, c GatewayConfig) error {
	b, err := envoy.LoadFile(src)
	if err != nil {
		return err
	}
	if err := editBootstrap(b, c); err != nil {
		return err
	}
	js, err := protojson.Marshal(b)
	if err != nil {
		return fmt.Errorf("encode bootstrap: %w", err)
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		return fmt.Errorf("encode bootstrap: %w", err)
	}
	if err := os.WriteFile(dst, y, 0o644); err != nil {
		return err
	}
	if _, err := envoy.LoadFile(dst); err != nil {
		return fmt.Errorf("edited bootstrap does not load: %w", err)
	}
	return nil
}

func editBootstrap(b *bootstrapv3.Bootstrap, c GatewayConfig) error {
	if err := envoy.Relocate(b, envoy.Addresses{Listen: c.Listen, Admin: c.Admin, Endpoints: c.Endpoints}); err != nil {
		return err
	}
	if c.FailureModeAllow {
		n := 0
		for _, l := range b.GetStaticResources().GetListeners() {
			for _, fc := range l.GetFilterChains() {
				for _, f := range fc.GetFilters() {
					hcm := &hcmv3.HttpConnectionManager{}
					if f.GetTypedConfig().MessageIs(hcm) {
						if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
							return err
						}
						for _, hf := range hcm.GetHttpFilters() {
							ea := &extauthzv3.ExtAuthz{}
							if !hf.GetTypedConfig().MessageIs(ea) {
								continue
							}
							if err := hf.GetTypedConfig().UnmarshalTo(ea); err != nil {
								return err
							}
							ea.FailureModeAllow = true
							anyEA, err := anypb.New(ea)
							if err != nil {
								return err
							}
							hf.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyEA}
							n++
						}
						anyHCM, err := anypb.New(hcm)
						if err != nil {
							return err
						}
						f.GetTypedConfig().Value = anyHCM.Value
					}
				}
			}
		}
		if n == 0 {
			return fmt.Errorf("bootstrap has no ext_authz filter")
		}
	}
	return nil
}
