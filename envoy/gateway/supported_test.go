package gateway

import (
	"errors"
	"testing"

	"github.com/tollgate-dev/tollgate/envoy"
)

// TestGatewayRefusesUnimplementedFields: the dev gateway never runs a
// config with a field it does not implement; the error names the field.
func TestGatewayRefusesUnimplementedFields(t *testing.T) {
	hcm := "static_resources.listeners[0].filter_chains[0].filters[0].typed_config[HttpConnectionManager]"
	tests := []struct {
		name     string
		config   []byte
		wantPath string
	}{
		{
			name:     "ext_authz with_request_body",
			config:   edit(t, "validate_mutations: true", "validate_mutations: true\n              with_request_body: {max_request_bytes: 1024}"),
			wantPath: hcm + ".http_filters[0].typed_config[ExtAuthz].with_request_body",
		},
		{
			name:     "route retry_policy",
			config:   edit(t, "route: {cluster: books}\n                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    check_settings:\n                      context_extensions: {route: books}\n              - name: books", "route: {cluster: books, retry_policy: {retry_on: 5xx}}\n                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    check_settings:\n                      context_extensions: {route: books}\n              - name: books"),
			wantPath: hcm + ".route_config.virtual_hosts[0].routes[5].route.retry_policy",
		},
		{
			name:     "route idle_timeout",
			config:   edit(t, "path: /register\n                  headers: [{name: \":method\", string_match: {exact: POST}}]\n                route: {cluster: issuer, timeout: 5s}", "path: /register\n                  headers: [{name: \":method\", string_match: {exact: POST}}]\n                route: {cluster: issuer, timeout: 5s, idle_timeout: 1s}"),
			wantPath: hcm + ".route_config.virtual_hosts[0].routes[0].route.idle_timeout",
		},
		{
			name:     "circuit breaker track_remaining",
			config:   edit(t, "- {max_connections: 512, max_pending_requests: 128, max_requests: 512}", "- {max_connections: 512, max_pending_requests: 128, max_requests: 512, track_remaining: true}"),
			wantPath: "static_resources.clusters[1].circuit_breakers.thresholds[0].track_remaining",
		},
		{
			name:     "circuit breaker retry_budget",
			config:   edit(t, "- {max_connections: 512, max_pending_requests: 128, max_requests: 512}", "- {max_connections: 512, max_pending_requests: 128, max_requests: 512, retry_budget: {}}"),
			wantPath: "static_resources.clusters[1].circuit_breakers.thresholds[0].retry_budget",
		},
		{
			name:     "circuit breaker per_host_thresholds",
			config:   edit(t, "- {max_connections: 512, max_pending_requests: 128, max_requests: 512}", "- {max_connections: 512, max_pending_requests: 128, max_requests: 512}\n      per_host_thresholds: [{max_connections: 1}]"),
			wantPath: "static_resources.clusters[1].circuit_breakers.per_host_thresholds",
		},
		{
			name:     "ext_authz include_peer_certificate",
			config:   edit(t, "validate_mutations: true", "validate_mutations: true\n              include_peer_certificate: true"),
			wantPath: hcm + ".http_filters[0].typed_config[ExtAuthz].include_peer_certificate",
		},
		{
			name:     "ext_authz allowed_headers",
			config:   edit(t, "validate_mutations: true", "validate_mutations: true\n              allowed_headers: {patterns: [{exact: authorization}]}"),
			wantPath: hcm + ".http_filters[0].typed_config[ExtAuthz].allowed_headers",
		},
		{
			name:     "codec HTTP2 only",
			config:   edit(t, "codec_type: AUTO", "codec_type: HTTP2"),
			wantPath: hcm + ".codec_type",
		},
		{
			name:     "escaped slashes redirect",
			config:   edit(t, "path_with_escaped_slashes_action: REJECT_REQUEST", "path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT"),
			wantPath: hcm + ".path_with_escaped_slashes_action",
		},
		{
			name:     "not an edge proxy",
			config:   edit(t, "use_remote_address: true", "use_remote_address: false"),
			wantPath: hcm + ".use_remote_address",
		},
		{
			name:     "xff_num_trusted_hops",
			config:   edit(t, "use_remote_address: true", "use_remote_address: true\n          xff_num_trusted_hops: 1"),
			wantPath: hcm + ".xff_num_trusted_hops",
		},
		{
			name:     "access log",
			config:   edit(t, "stat_prefix: ingress_http", "stat_prefix: ingress_http\n          access_log: [{name: envoy.access_loggers.stdout, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}}]"),
			wantPath: hcm + ".access_log",
		},
		{
			name: "another http filter",
			config: edit(t, `          - name: envoy.filters.http.router
`, `          - name: envoy.filters.http.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
          - name: envoy.filters.http.router
`),
			wantPath: hcm + ".http_filters[1].typed_config",
		},
		{
			name:     "cluster lb_policy",
			config:   edit(t, "  - name: books\n    type: STATIC", "  - name: books\n    type: STATIC\n    lb_policy: LEAST_REQUEST"),
			wantPath: "static_resources.clusters[1].lb_policy",
		},
		{
			name:     "cluster type EDS",
			config:   edit(t, "  - name: books\n    type: STATIC", "  - name: books\n    type: EDS"),
			wantPath: "static_resources.clusters[1].type",
		},
		{
			name:     "header matcher treat_missing_header_as_empty",
			config:   edit(t, "path: /register\n                  headers: [{name: \":method\", string_match: {exact: POST}}]", "path: /register\n                  headers: [{name: \":method\", string_match: {exact: POST}, treat_missing_header_as_empty: true}]"),
			wantPath: hcm + ".route_config.virtual_hosts[0].routes[0].match.headers[0].treat_missing_header_as_empty",
		},
		{
			name:     "layered runtime",
			config:   edit(t, "admin:\n", "layered_runtime: {layers: [{name: static, static_layer: {}}]}\nadmin:\n"),
			wantPath: "layered_runtime",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := envoy.ValidateYAML(tt.config)
			if err != nil {
				t.Fatalf("envoy.ValidateYAML(%s) = %v; the config must be valid Envoy config for this test to mean anything", tt.name, err)
			}
			g, err := New(b, DefaultOptions())
			if err == nil {
				g.Close()
				t.Fatalf("New(%s) = nil error, want an *UnsupportedError naming %s", tt.name, tt.wantPath)
			}
			var ue *UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("New(%s) error %v is not an *UnsupportedError", tt.name, err)
			}
			if ue.Path != tt.wantPath {
				t.Errorf("New(%s) names %s, want %s (error: %v)", tt.name, ue.Path, tt.wantPath, err)
			}
		})
	}
}

// TestTracingConfigSupported pins that the optional tracing block loads,
// validates and is implemented by the dev gateway.
func TestTracingConfigSupported(t *testing.T) {
	b, err := envoy.LoadFile("testdata/tracing.yaml")
	if err != nil {
		t.Fatalf("LoadFile(testdata/tracing.yaml) = %v", err)
	}
	if err := Supported(b); err != nil {
		t.Fatalf("Supported(testdata/tracing.yaml) = %v, want nil", err)
	}
	g, err := New(b, DefaultOptions())
	if err != nil {
		t.Fatalf("New(testdata/tracing.yaml) = %v", err)
	}
	defer g.Close()
	if g.tracer == nil || g.cfg.tracing.serviceName != "tollgate-gateway" || g.cfg.tracing.cluster != "otel" {
		t.Errorf("New(testdata/tracing.yaml) tracing = %+v, tracer %v; want service tollgate-gateway to cluster otel", g.cfg.tracing, g.tracer)
	}
}
