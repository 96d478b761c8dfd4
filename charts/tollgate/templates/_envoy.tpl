{{/*
tollgate.envoyBootstrap: the gateway's Envoy bootstrap. The ingress
listener's route table, filters and cluster settings are the ones of
envoy/envoy.yaml (a test compares them); only the upstream addresses differ
(Service DNS names, and 127.0.0.1 for a sidecar authz). The "ops" listener
is chart-only: /ready for the kubelet and /stats/prometheus for scraping,
never on the public port.
*/}}
{{- define "tollgate.envoyBootstrap" -}}
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: {{ include "tollgate.envoyAdminPort" . }}}
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: {address: 0.0.0.0, port_value: {{ include "tollgate.gatewayPort" . }}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: AUTO
          use_remote_address: true
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          generate_request_id: true
          route_config:
            name: tollgate
            virtual_hosts:
            - name: tollgate
              domains: ["*"]
              routes:
              - match: {path: /register, headers: [{name: ":method", string_match: {exact: POST}}]}
                route: {cluster: issuer}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: {path: /login, headers: [{name: ":method", string_match: {exact: POST}}]}
                route: {cluster: issuer}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: {path: /.well-known/jwks.json}
                route: {cluster: issuer}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: {path: /.well-known/openid-configuration}
                route: {cluster: issuer}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: {path: /users}
                route: {cluster: issuer}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings: {context_extensions: {require: admin, route: users}}
              - match: {path: /book}
                route: {cluster: books}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings: {context_extensions: {route: books}}
              - match: {path: /books}
                route: {cluster: books}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings: {context_extensions: {route: books}}
              - match: {prefix: /books/}
                route: {cluster: books}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings: {context_extensions: {route: books}}
              - match: {prefix: /}
                direct_response:
                  status: 404
                  body: {inline_string: "{\"error\":\"not found\"}"}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service:
                envoy_grpc: {cluster_name: authz}
                timeout: 0.5s
              failure_mode_allow: false
              status_on_error: {code: ServiceUnavailable}
              validate_mutations: true
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: ops
    address:
      socket_address: {address: 0.0.0.0, port_value: {{ include "tollgate.envoyOpsPort" . }}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ops
          codec_type: AUTO
          route_config:
            name: ops
            virtual_hosts:
            - name: ops
              domains: ["*"]
              routes:
              - match: {path: /stats/prometheus}
                route: {cluster: envoy_admin}
              - match: {prefix: /}
                direct_response: {status: 404}
          http_filters:
          - name: envoy.filters.http.health_check
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck
              pass_through_mode: false
              headers:
              - name: ":path"
                string_match: {exact: /ready}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: authz
    type: {{ if eq .Values.authz.mode "sidecar" }}STATIC{{ else }}STRICT_DNS{{ end }}
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: authz
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: {{ include "tollgate.authzHost" . }}, port_value: {{ include "tollgate.authzGRPCPort" . }}}
    health_checks:
    - timeout: 1s
      interval: 5s
      unhealthy_threshold: 2
      healthy_threshold: 1
      grpc_health_check: {service_name: ""}
  - name: issuer
    type: STRICT_DNS
    connect_timeout: 1s
    load_assignment:
      cluster_name: issuer
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: {{ include "tollgate.issuerHost" . }}, port_value: {{ include "tollgate.issuerPort" . }}}
  - name: books
    type: STRICT_DNS
    connect_timeout: 1s
    load_assignment:
      cluster_name: books
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: {{ include "tollgate.booksHost" . }}, port_value: {{ include "tollgate.booksPort" . }}}
  - name: envoy_admin
    type: STATIC
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: envoy_admin
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: 127.0.0.1, port_value: {{ include "tollgate.envoyAdminPort" . }}}
{{- end }}
