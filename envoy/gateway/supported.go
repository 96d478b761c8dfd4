package gateway

import (
	"fmt"
	"slices"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tollgate-dev/tollgate/envoy"
)

// UnsupportedError reports a configuration field, or a value of one, that
// the dev gateway does not implement. The gateway refuses to start rather
// than ignore it; real Envoy may run the same file.
type UnsupportedError struct {
	// Path is the field's path in the bootstrap, typed_config payloads
	// marked with their type name in brackets, for example
	// "static_resources.listeners[0].filter_chains[0].filters[0].typed_config[HttpConnectionManager].http_filters[0].typed_config[ExtAuthz].with_request_body".
	Path string
	// Reason says what is not implemented about it.
	Reason string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("the dev gateway does not implement %s (%s); run a real envoy for this config", e.Path, e.Reason)
}

// implemented lists, per message type, the fields the gateway implements,
// each with an optional check of its value. A set field not listed here is
// an UnsupportedError. Proto3 scalars left at their zero value are "not
// set", so every listed default is one the gateway implements.
var implemented = map[protoreflect.FullName]map[protoreflect.Name]rule{
	"envoy.config.bootstrap.v3.Bootstrap": {
		"node": nil, "admin": nil, "static_resources": nil,
	},
	// Node identity only labels Envoy's output; nothing the gateway does depends on it.
	"envoy.config.core.v3.Node":       {"id": nil, "cluster": nil},
	"envoy.config.bootstrap.v3.Admin": {"address": nil},
	"envoy.config.bootstrap.v3.Bootstrap.StaticResources": {
		"listeners": nil, "clusters": nil,
	},
	"envoy.config.core.v3.Address":       {"socket_address": nil},
	"envoy.config.core.v3.SocketAddress": {"address": nil, "port_value": nil},
	"envoy.config.listener.v3.Listener": {
		"name": nil, "address": nil, "filter_chains": nil,
	},
	"envoy.config.listener.v3.FilterChain": {"filters": nil},
	"envoy.config.listener.v3.Filter":      {"name": nil, "typed_config": nil},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": {
		"stat_prefix":                      nil,
		"codec_type":                       enumIn("AUTO", "HTTP1"),
		"use_remote_address":               boolIs(true, "only edge mode (use_remote_address: true) is implemented"),
		"generate_request_id":              nil,
		"preserve_external_request_id":     nil,
		"normalize_path":                   nil,
		"merge_slashes":                    nil,
		"path_with_escaped_slashes_action": enumIn("KEEP_UNCHANGED", "REJECT_REQUEST", "UNESCAPE_AND_FORWARD"),
		"request_headers_timeout":          nil,
		"common_http_protocol_options":     nil,
		"route_config":                     nil,
		"http_filters":                     nil,
		"tracing":                          nil,
	},
	// Tracing: the OpenTelemetry tracer exporting over OTLP gRPC to a
	// cluster; sampling follows the client's traceparent, else 100%.
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing": {"provider": nil},
	"envoy.config.trace.v3.Tracing.Http":        {"name": nil, "typed_config": nil},
	"envoy.config.trace.v3.OpenTelemetryConfig": {"grpc_service": nil, "service_name": nil},
	"envoy.config.core.v3.HttpProtocolOptions": {
		"idle_timeout":                    nil,
		"headers_with_underscores_action": nil,
	},
	"envoy.config.route.v3.RouteConfiguration": {"name": nil, "virtual_hosts": nil},
	"envoy.config.route.v3.VirtualHost": {
		"name": nil, "domains": nil, "routes": nil, "typed_per_filter_config": nil,
	},
	"envoy.config.route.v3.Route": {
		"name": nil, "match": nil, "route": nil, "direct_response": nil,
		"request_headers_to_remove": nil, "response_headers_to_add": nil,
		"typed_per_filter_config": nil,
	},
	"envoy.config.route.v3.RouteMatch": {
		"path": nil, "prefix": nil, "safe_regex": nil, "headers": nil, "case_sensitive": nil,
	},
	"envoy.config.route.v3.HeaderMatcher": {
		"name": nil, "string_match": nil, "present_match": nil, "invert_match": nil,
	},
	"envoy.type.matcher.v3.StringMatcher": {
		"exact": nil, "prefix": nil, "suffix": nil, "contains": nil, "safe_regex": nil, "ignore_case": nil,
	},
	"envoy.type.matcher.v3.RegexMatcher": {"regex": nil},
	"envoy.config.route.v3.RouteAction":  {"cluster": nil, "timeout": nil},
	"envoy.config.route.v3.DirectResponseAction": {
		"status": nil, "body": nil,
	},
	"envoy.config.core.v3.DataSource": {"inline_string": nil},
	"envoy.config.core.v3.HeaderValueOption": {
		"header": nil, "append_action": nil,
	},
	"envoy.config.core.v3.HeaderValue": {"key": nil, "value": nil},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": {
		"name": nil, "typed_config": nil,
	},
	"envoy.extensions.filters.http.ext_authz.v3.ExtAuthz": {
		"grpc_service":          nil,
		"transport_api_version": enumIn("V3"),
		"failure_mode_allow":    nil,
		"status_on_error":       nil,
		"validate_mutations":    nil,
	},
	"envoy.config.core.v3.GrpcService":           {"envoy_grpc": nil, "timeout": nil},
	"envoy.config.core.v3.GrpcService.EnvoyGrpc": {"cluster_name": nil},
	"envoy.type.v3.HttpStatus":                   {"code": nil},
	"envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute": {
		"disabled": nil, "check_settings": nil,
	},
	"envoy.extensions.filters.http.ext_authz.v3.CheckSettings": {"context_extensions": nil},
	"envoy.extensions.filters.http.router.v3.Router":           {},
	"envoy.config.cluster.v3.Cluster": {
		"name": nil, "type": enumIn("STATIC", "STRICT_DNS", "LOGICAL_DNS"), "connect_timeout": nil,
		"load_assignment": nil, "typed_extension_protocol_options": nil, "health_checks": nil,
		"circuit_breakers": nil,
	},
	// Only the default priority's limits apply (routes cannot ask for
	// another); max_retries is never reached because the gateway does
	// not retry.
	"envoy.config.cluster.v3.CircuitBreakers": {"thresholds": nil},
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds": {
		"priority": nil, "max_connections": nil, "max_pending_requests": nil, "max_requests": nil, "max_retries": nil,
	},
	"envoy.config.endpoint.v3.ClusterLoadAssignment": {"cluster_name": nil, "endpoints": nil},
	"envoy.config.endpoint.v3.LocalityLbEndpoints":   {"lb_endpoints": nil},
	"envoy.config.endpoint.v3.LbEndpoint":            {"endpoint": nil},
	"envoy.config.endpoint.v3.Endpoint":              {"address": nil},
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
		"explicit_http_config": nil,
	},
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": {
		"http2_protocol_options": nil,
	},
	"envoy.config.core.v3.Http2ProtocolOptions": {},
	"envoy.config.core.v3.HealthCheck": {
		"timeout": nil, "interval": nil, "unhealthy_threshold": nil, "healthy_threshold": nil,
		"grpc_health_check": nil,
	},
	"envoy.config.core.v3.HealthCheck.GrpcHealthCheck": {"service_name": nil},
	// Well-known types carry values, not features.
	"google.protobuf.Duration":    {"seconds": nil, "nanos": nil},
	"google.protobuf.BoolValue":   {"value": nil},
	"google.protobuf.UInt32Value": {"value": nil},
	"google.protobuf.Any":         {"type_url": nil, "value": nil},
}

// implementedTypes are the typed_config payloads the gateway implements.
var implementedTypes = map[string]bool{
	envoy.TypeHCM: true, envoy.TypeExtAuthz: true, envoy.TypeExtAuthzPerRoute: true, envoy.TypeRouter: true, envoy.TypeUpstreamHTTP: true,
	envoy.TypeOpenTelemetry: true,
}

// rule checks the value of an implemented field; it returns why the value
// is not implemented, or "".
type rule func(fd protoreflect.FieldDescriptor, v protoreflect.Value) string

// enumIn allows only the named values of an enum field.
func enumIn(names ...string) rule {
	return func(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
		name := fmt.Sprint(int32(v.Enum()))
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			name = string(ev.Name())
		}
		if slices.Contains(names, name) {
			return ""
		}
		return fmt.Sprintf("value %s; implemented: %s", name, strings.Join(names, ", "))
	}
}

// boolIs allows only the value want, of a bool or a BoolValue field.
func boolIs(want bool, reason string) rule {
	return func(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
		got := false
		if fd.Kind() == protoreflect.MessageKind {
			got = v.Message().Get(fd.Message().Fields().ByName("value")).Bool()
		} else {
			got = v.Bool()
		}
		if got != want {
			return reason
		}
		return ""
	}
}

// Supported reports the first field of b the dev gateway does not
// implement, as an *UnsupportedError, or nil. It does not validate b (see
// Validate).
func Supported(b *bootstrapv3.Bootstrap) error {
	return envoy.Walk(b.ProtoReflect(), "", func(path string, m protoreflect.Message) error {
		if a, ok := m.Interface().(*anypb.Any); ok && !implementedTypes[a.GetTypeUrl()] {
			return &UnsupportedError{Path: path, Reason: "extension type " + a.GetTypeUrl()}
		}
		desc := m.Descriptor()
		// A message type with no entry has no implemented fields.
		allowed := implemented[desc.FullName()]
		fields := desc.Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			if !m.Has(fd) {
				continue
			}
			fp := envoy.JoinPath(path, string(fd.Name()))
			check, ok := allowed[fd.Name()]
			if !ok {
				return &UnsupportedError{Path: fp, Reason: "field not implemented"}
			}
			if check != nil {
				if reason := check(fd, m.Get(fd)); reason != "" {
					return &UnsupportedError{Path: fp, Reason: reason}
				}
			}
		}
		return nil
	})
}
