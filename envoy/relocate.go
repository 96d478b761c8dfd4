package envoy

import (
	"fmt"
	"net"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// Addresses says where a relocated bootstrap listens and what its
// clusters reach, as "host:port"; an empty field is left as it is, and
// an empty host means 0.0.0.0 for the listener and 127.0.0.1 otherwise.
type Addresses struct {
	Listen string
	Admin  string
	// Endpoints maps cluster names to the one address each gets.
	Endpoints map[string]string
}

// Relocate points b's one listener, its admin interface and the named
// clusters at the addresses in a, so the shipped envoy.yaml can run on
// other ports (a real envoy beside `tollgate up`, or tests). It edits b in
// place; the caller validates the result.
func Relocate(b *bootstrapv3.Bootstrap, a Addresses) error {
	if a.Listen != "" {
		listeners := b.GetStaticResources().GetListeners()
		if len(listeners) != 1 {
			return fmt.Errorf("relocate: bootstrap has %d listeners, want 1", len(listeners))
		}
		sa, err := envoyAddress(a.Listen, "0.0.0.0")
		if err != nil {
			return fmt.Errorf("relocate listener: %w", err)
		}
		listeners[0].Address = sa
	}
	if a.Admin != "" {
		sa, err := envoyAddress(a.Admin, "127.0.0.1")
		if err != nil {
			return fmt.Errorf("relocate admin: %w", err)
		}
		if b.Admin == nil {
			b.Admin = &bootstrapv3.Admin{}
		}
		b.Admin.Address = sa
	}
	seen := map[string]bool{}
	for _, cl := range b.GetStaticResources().GetClusters() {
		addr, ok := a.Endpoints[cl.GetName()]
		if !ok {
			continue
		}
		seen[cl.GetName()] = true
		sa, err := envoyAddress(addr, "127.0.0.1")
		if err != nil {
			return fmt.Errorf("relocate cluster %s: %w", cl.GetName(), err)
		}
		cl.LoadAssignment = &endpointv3.ClusterLoadAssignment{
			ClusterName: cl.GetName(),
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sa}},
				}},
			}},
		}
	}
	for name := range a.Endpoints {
		if !seen[name] {
			return fmt.Errorf("relocate: bootstrap has no cluster %q", name)
		}
	}
	return nil
}

// envoyAddress turns a Go listen address into an Envoy one; an empty
// host becomes defaultHost.
func envoyAddress(addr, defaultHost string) (*corev3.Address, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("address %q: bad port", addr)
	}
	if host == "" {
		host = defaultHost
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}, nil
}
