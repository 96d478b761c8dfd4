package resilience

import (
	"fmt"
	"net"
	"os"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
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
	if c.Admin != "" {
		a, err := socketAddress(c.Admin)
		if err != nil {
			return fmt.Errorf("admin address: %w", err)
		}
		if b.GetAdmin() == nil {
			b.Admin = &bootstrapv3.Admin{}
		}
		b.Admin.Address = a
	}
	listeners := b.GetStaticResources().GetListeners()
	if c.Listen != "" {
		if len(listeners) != 1 {
			return fmt.Errorf("bootstrap has %d listeners, want 1", len(listeners))
		}
		a, err := socketAddress(c.Listen)
		if err != nil {
			return fmt.Errorf("listen address: %w", err)
		}
		listeners[0].Address = a
	}
	seen := map[string]bool{}
	for _, cl := range b.GetStaticResources().GetClusters() {
		addr, ok := c.Endpoints[cl.GetName()]
		if !ok {
			continue
		}
		seen[cl.GetName()] = true
		a, err := socketAddress(addr)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", cl.GetName(), err)
		}
		cl.LoadAssignment = &endpointv3.ClusterLoadAssignment{
			ClusterName: cl.GetName(),
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: a}},
				}},
			}},
		}
	}
	for name := range c.Endpoints {
		if !seen[name] {
			return fmt.Errorf("bootstrap has no cluster %q", name)
		}
	}
	if c.FailureModeAllow {
		n := 0
		for _, l := range listeners {
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

func socketAddress(hostport string) (*corev3.Address, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", port, err)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}, nil
}
