package envoy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

const shippedConfig = "envoy.yaml"

func readShipped(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// edit returns the shipped config with old replaced by new; old must occur
// exactly once, so a test cannot silently stop testing anything when the
// file changes.
func edit(t testing.TB, old, new string) []byte {
	t.Helper()
	s := readShipped(t)
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("edit: %q occurs %d times in %s, want 1", old, n, shippedConfig)
	}
	return []byte(strings.Replace(s, old, new, 1))
}

func TestShippedConfigIsValid(t *testing.T) {
	b, err := LoadFile(shippedConfig)
	if err != nil {
		t.Fatalf("LoadFile(%s) = %v", shippedConfig, err)
	}
	if b.GetStaticResources() == nil {
		t.Fatalf("LoadFile(%s) has no static_resources", shippedConfig)
	}
	// Every YAML file under the gateway's testdata that is meant to load must load too.
	files, _ := filepath.Glob("gateway/testdata/*.yaml")
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "invalid") {
			continue
		}
		if _, err := LoadFile(f); err != nil {
			t.Errorf("LoadFile(%s) = %v", f, err)
		}
	}
}

// TestValidateRejectsBrokenConfig: every broken config fails to load with
// an error that says what is wrong.
func TestValidateRejectsBrokenConfig(t *testing.T) {
	hcm := "typed_config[HttpConnectionManager]"
	tests := []struct {
		name     string
		config   []byte
		wantText string // in the error message
		wantPath string // the ConfigError path, when the check is ours
	}{
		{
			name:     "unknown field",
			config:   edit(t, "validate_mutations: true", "validate_mutations: true\n              validate_mutation: true"),
			wantText: "validate_mutation",
		},
		{
			name:     "unknown field at top level",
			config:   edit(t, "static_resources:\n", "static_resource: {}\nstatic_resources:\n"),
			wantText: "static_resource",
		},
		{
			name:     "unknown typed_config type URL",
			config:   edit(t, "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr"),
			wantText: "Routr",
		},
		{
			name:     "duplicate key",
			config:   edit(t, "connect_timeout: 1s\n    circuit_breakers:\n      thresholds:\n      - {max_connections: 256", "connect_timeout: 1s\n    connect_timeout: 2s\n    circuit_breakers:\n      thresholds:\n      - {max_connections: 256"),
			wantText: "connect_timeout",
		},
		{
			name:     "negative connect timeout (ValidateAll of the bootstrap)",
			config:   edit(t, "connect_timeout: 1s\n    circuit_breakers:\n      thresholds:\n      - {max_connections: 512", "connect_timeout: -1s\n    circuit_breakers:\n      thresholds:\n      - {max_connections: 512"),
			wantText: "ConnectTimeout",
		},
		{
			name:     "negative timeout inside a typed_config (ValidateAll of the payload)",
			config:   edit(t, "request_headers_timeout: 10s", "request_headers_timeout: -10s"),
			wantText: "RequestHeadersTimeout",
		},
		{
			name:     "empty stat_prefix inside a typed_config",
			config:   edit(t, "stat_prefix: ingress_http", "stat_prefix: \"\""),
			wantText: "StatPrefix",
		},
		{
			name: "per-route config with neither disabled nor check_settings",
			config: edit(t, `
                    check_settings:
                      context_extensions: {require: admin, route: users}`, ``),
			wantText: "ExtAuthzPerRoute",
		},
		{
			name:     "status_on_error not an HTTP status",
			config:   edit(t, "status_on_error: {code: ServiceUnavailable}", "status_on_error: {code: 999}"),
			wantText: "Code",
		},
		{
			name:     "route to a missing cluster",
			config:   edit(t, "route: {cluster: issuer, timeout: 5s}\n                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    check_settings:\n                      context_extensions: {require: admin, route: users}", "route: {cluster: isuer, timeout: 5s}\n                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    check_settings:\n                      context_extensions: {require: admin, route: users}"),
			wantText: `no cluster named "isuer"`,
			wantPath: "static_resources.listeners[0].filter_chains[0].filters[0]." + hcm + ".route_config.virtual_hosts[0].routes[4].route.cluster",
		},
		{
			name:     "ext_authz cluster missing",
			config:   edit(t, "envoy_grpc: {cluster_name: authz}", "envoy_grpc: {cluster_name: auth}"),
			wantText: `no cluster named "auth"`,
			wantPath: "static_resources.listeners[0].filter_chains[0].filters[0]." + hcm + ".http_filters[0].typed_config[ExtAuthz].grpc_service.envoy_grpc.cluster_name",
		},
		{
			name:     "ext_authz cluster without HTTP/2",
			config:   edit(t, "        explicit_http_config:\n          http2_protocol_options: {}\n", "        explicit_http_config:\n          http_protocol_options: {}\n"),
			wantText: "must enable HTTP/2",
		},
		{
			name: "per-filter config under a name no filter has",
			config: edit(t, `                    check_settings:
                      context_extensions: {require: admin, route: users}`, `                    check_settings:
                      context_extensions: {require: admin, route: users}
                  envoy.filters.http.extauthz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true`),
			wantText: `no http filter named "envoy.filters.http.extauthz"`,
		},
		{
			name: "router not last",
			config: edit(t, `          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router`, `          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          - name: envoy.filters.http.router2
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router`),
			wantText: "router must be the last",
		},
		{
			name:     "duplicate cluster name",
			config:   edit(t, "  - name: books\n    type: STATIC", "  - name: issuer\n    type: STATIC"),
			wantText: `duplicate cluster name "issuer"`,
		},
		{
			name:     "empty",
			config:   []byte("  \n"),
			wantText: "empty",
		},
		{
			name:     "not a mapping",
			config:   []byte("- a\n- b\n"),
			wantText: "mapping",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ValidateYAML(tt.config)
			if err == nil {
				t.Fatalf("ValidateYAML(%s) = %v, nil; want an error", tt.name, b != nil)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("ValidateYAML(%s) error = %q, want it to mention %q", tt.name, err, tt.wantText)
			}
			if tt.wantPath != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) {
					t.Fatalf("ValidateYAML(%s) error %v is not a *ConfigError", tt.name, err)
				}
				if ce.Path != tt.wantPath {
					t.Errorf("ValidateYAML(%s) path = %s, want %s", tt.name, ce.Path, tt.wantPath)
				}
			}
		})
	}
}

func TestLoadFileMissing(t *testing.T) {
	if _, err := LoadFile(filepath.Join(t.TempDir(), "nope.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadFile(missing) = %v, want an error wrapping os.ErrNotExist", err)
	}
}

func isConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

func TestLoadBuiltIn(t *testing.T) {
	onDisk, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	if string(ShippedYAML()) != string(onDisk) {
		t.Fatalf("ShippedYAML differs from %s", shippedConfig)
	}
	b, err := Load("")
	if err != nil {
		t.Fatalf(`Load("") = %v`, err)
	}
	want, err := LoadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(b, want) {
		t.Error(`Load("") is not the shipped bootstrap`)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "nope.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing file) = %v, want the file's error, not the built-in bootstrap", err)
	}
}
