package envoy

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ext_authzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	http_connection_managerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstream_httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Extensions a Tollgate config (this one or the chart's) may name in a
	// typed_config. Importing them registers their types, so protojson can
	// resolve each "@type"; a type missing here is a load error.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Type URLs of the extensions the Tollgate configuration uses.
const (
	TypeHCM              = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	TypeExtAuthz         = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
	TypeExtAuthzPerRoute = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
	TypeRouter           = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
	TypeUpstreamHTTP     = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	TypeOpenTelemetry    = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
	// keyUpstreamHTTP is the typed_extension_protocol_options key Envoy
	// reads HttpProtocolOptions from.
	keyUpstreamHTTP = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// ConfigError is a configuration that is not valid, with the path of the
// offending field (for example
// "static_resources.clusters[2].connect_timeout").
type ConfigError struct {
	// Path is the field's path, typed_config payloads marked with their
	// type name in brackets; empty when the error is about the whole file.
	Path string
	// Err says what is wrong with it.
	Err error
}

func (e *ConfigError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// ConfigErrorf returns a *ConfigError for the field at path.
func ConfigErrorf(path, format string, args ...any) error {
	return &ConfigError{Path: path, Err: fmt.Errorf(format, args...)}
}

// LoadFile reads an Envoy v3 bootstrap (YAML or JSON) and validates it as
// ValidateYAML does.
func LoadFile(path string) (*bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read envoy config: %w", err)
	}
	b, err := ValidateYAML(data)
	if err != nil {
		return nil, fmt.Errorf("envoy config %s: %w", path, err)
	}
	return b, nil
}

// ValidateYAML parses an Envoy v3 bootstrap written in YAML (or JSON) and
// validates it: unknown fields, duplicate keys and unknown typed_config
// types are errors, and the result must pass Validate.
func ValidateYAML(data []byte) (*bootstrapv3.Bootstrap, error) {
	if strings.TrimSpace(string(data)) == "" {
		return nil, errors.New("empty config")
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	if len(js) == 0 || js[0] != '{' {
		return nil, errors.New("config is not a YAML mapping")
	}
	b := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("parse bootstrap: %w", err)
	}
	if err := Validate(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Validate checks a bootstrap the way Envoy would on load, and stricter
// where Envoy would only fail later: the ValidateAll rules of every message
// including each typed_config payload, then cross references (every route
// cluster and the ext_authz cluster exist, the ext_authz cluster speaks
// HTTP/2, per-filter configs name a configured filter of the right type,
// the router is the last HTTP filter, names are unique).
func Validate(b *bootstrapv3.Bootstrap) error {
	if b == nil {
		return errors.New("nil bootstrap")
	}
	if err := b.ValidateAll(); err != nil {
		return fmt.Errorf("invalid bootstrap: %w", err)
	}
	// ValidateAll stops at google.protobuf.Any: unpack each payload and
	// validate it too.
	err := Walk(b.ProtoReflect(), "", func(path string, m protoreflect.Message) error {
		a, ok := m.Interface().(*anypb.Any)
		if !ok {
			return nil
		}
		payload, err := a.UnmarshalNew()
		if err != nil {
			return ConfigErrorf(path, "typed_config %q: %v", a.GetTypeUrl(), err)
		}
		if v, ok := payload.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				return ConfigErrorf(path, "invalid %s: %w", payload.ProtoReflect().Descriptor().Name(), err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return crossCheck(b)
}

// Walk calls fn for every message reachable from m, depth first, with its
// field path; the payload of each google.protobuf.Any is unpacked and
// walked as well, its path marked with the payload's type name in
// brackets.
func Walk(m protoreflect.Message, path string, fn func(path string, m protoreflect.Message) error) error {
	if err := fn(path, m); err != nil {
		return err
	}
	if a, ok := m.Interface().(*anypb.Any); ok {
		payload, err := a.UnmarshalNew()
		if err != nil {
			return ConfigErrorf(path, "typed_config %q: %v", a.GetTypeUrl(), err)
		}
		return Walk(payload.ProtoReflect(), path+"["+string(payload.ProtoReflect().Descriptor().Name())+"]", fn)
	}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		fp := JoinPath(path, string(fd.Name()))
		v := m.Get(fd)
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for j := 0; j < l.Len(); j++ {
				if err := Walk(l.Get(j).Message(), fp+"["+strconv.Itoa(j)+"]", fn); err != nil {
					return err
				}
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			for _, k := range sortedMapKeys(v.Map()) {
				if err := Walk(v.Map().Get(k).Message(), fp+"["+strconv.Quote(k.String())+"]", fn); err != nil {
					return err
				}
			}
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			if err := Walk(v.Message(), fp, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// JoinPath appends a field name to a field path.
func JoinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func sortedMapKeys(m protoreflect.Map) []protoreflect.MapKey {
	var keys []protoreflect.MapKey
	m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	slices.SortFunc(keys, func(a, b protoreflect.MapKey) int { return strings.Compare(a.String(), b.String()) })
	return keys
}

// crossCheck verifies references between parts of the bootstrap.
func crossCheck(b *bootstrapv3.Bootstrap) error {
	clusters := map[string]*clusterv3.Cluster{}
	for i, c := range b.GetStaticResources().GetClusters() {
		p := fmt.Sprintf("static_resources.clusters[%d].name", i)
		if _, dup := clusters[c.GetName()]; dup {
			return ConfigErrorf(p, "duplicate cluster name %q", c.GetName())
		}
		clusters[c.GetName()] = c
	}
	listeners := map[string]bool{}
	for i, l := range b.GetStaticResources().GetListeners() {
		lp := fmt.Sprintf("static_resources.listeners[%d]", i)
		if listeners[l.GetName()] {
			return ConfigErrorf(lp+".name", "duplicate listener name %q", l.GetName())
		}
		listeners[l.GetName()] = true
		for j, fc := range l.GetFilterChains() {
			for k, f := range fc.GetFilters() {
				fp := fmt.Sprintf("%s.filter_chains[%d].filters[%d].typed_config", lp, j, k)
				if f.GetTypedConfig().GetTypeUrl() != TypeHCM {
					continue
				}
				hcm := &http_connection_managerv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					return ConfigErrorf(fp, "%v", err)
				}
				if err := checkHCM(hcm, fp+"[HttpConnectionManager]", clusters); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func checkHCM(hcm *http_connection_managerv3.HttpConnectionManager, path string, clusters map[string]*clusterv3.Cluster) error {
	filters := map[string]string{} // filter name -> type URL
	for i, f := range hcm.GetHttpFilters() {
		fp := fmt.Sprintf("%s.http_filters[%d]", path, i)
		if _, dup := filters[f.GetName()]; dup {
			return ConfigErrorf(fp+".name", "duplicate http filter name %q", f.GetName())
		}
		typeURL := f.GetTypedConfig().GetTypeUrl()
		filters[f.GetName()] = typeURL
		last := i == len(hcm.GetHttpFilters())-1
		if typeURL == TypeRouter && !last {
			return ConfigErrorf(fp, "the router must be the last http filter")
		}
		if last && typeURL != TypeRouter {
			return ConfigErrorf(fp, "the last http filter must be the router (%s), not %q", TypeRouter, typeURL)
		}
		if typeURL == TypeExtAuthz {
			ea := &ext_authzv3.ExtAuthz{}
			if err := f.GetTypedConfig().UnmarshalTo(ea); err != nil {
				return ConfigErrorf(fp, "%v", err)
			}
			if name := ea.GetGrpcService().GetEnvoyGrpc().GetClusterName(); name != "" {
				cp := fp + ".typed_config[ExtAuthz].grpc_service.envoy_grpc.cluster_name"
				c, ok := clusters[name]
				if !ok {
					return ConfigErrorf(cp, "no cluster named %q", name)
				}
				if !ClusterHTTP2(c) {
					return ConfigErrorf(cp, "cluster %q must enable HTTP/2 (typed_extension_protocol_options %s with explicit_http_config.http2_protocol_options): gRPC over HTTP/1 fails every Check", name, keyUpstreamHTTP)
				}
			}
		}
	}
	if len(hcm.GetHttpFilters()) == 0 {
		return ConfigErrorf(path+".http_filters", "no http filters: the router is required")
	}
	rc := hcm.GetRouteConfig()
	if rc == nil {
		return nil
	}
	checkPerFilter := func(p string, m map[string]*anypb.Any) error {
		for _, name := range sortedKeys(m) {
			typeURL, ok := filters[name]
			if !ok {
				return ConfigErrorf(fmt.Sprintf("%s[%q]", p, name), "no http filter named %q: Envoy would silently ignore this config", name)
			}
			if typeURL == TypeExtAuthz && m[name].GetTypeUrl() != TypeExtAuthzPerRoute {
				return ConfigErrorf(fmt.Sprintf("%s[%q]", p, name), "per-route config for ext_authz must be %s, not %q", TypeExtAuthzPerRoute, m[name].GetTypeUrl())
			}
		}
		return nil
	}
	rp := path + ".route_config"
	for i, vh := range rc.GetVirtualHosts() {
		vp := fmt.Sprintf("%s.virtual_hosts[%d]", rp, i)
		if err := checkPerFilter(vp+".typed_per_filter_config", vh.GetTypedPerFilterConfig()); err != nil {
			return err
		}
		for j, r := range vh.GetRoutes() {
			p := fmt.Sprintf("%s.routes[%d]", vp, j)
			if err := checkPerFilter(p+".typed_per_filter_config", r.GetTypedPerFilterConfig()); err != nil {
				return err
			}
			if err := checkRouteClusters(r, p, clusters); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkRouteClusters(r *routev3.Route, path string, clusters map[string]*clusterv3.Cluster) error {
	ra := r.GetRoute()
	if ra == nil {
		return nil
	}
	if name := ra.GetCluster(); name != "" {
		if _, ok := clusters[name]; !ok {
			return ConfigErrorf(path+".route.cluster", "no cluster named %q", name)
		}
	}
	for i, wc := range ra.GetWeightedClusters().GetClusters() {
		if _, ok := clusters[wc.GetName()]; !ok {
			return ConfigErrorf(fmt.Sprintf("%s.route.weighted_clusters.clusters[%d].name", path, i), "no cluster named %q", wc.GetName())
		}
	}
	return nil
}

// ClusterHTTP2 reports whether Envoy talks HTTP/2 to the cluster.
func ClusterHTTP2(c *clusterv3.Cluster) bool {
	if c.GetHttp2ProtocolOptions() != nil { //nolint:staticcheck // the deprecated field still selects HTTP/2
		return true
	}
	a, ok := c.GetTypedExtensionProtocolOptions()[keyUpstreamHTTP]
	if !ok {
		return false
	}
	opts := &upstream_httpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(opts); err != nil {
		return false
	}
	// auto_config negotiates with ALPN, which needs TLS; only an explicit
	// HTTP/2 config is HTTP/2 on a plaintext cluster.
	return opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
