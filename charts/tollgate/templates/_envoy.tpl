{{/*
tollgate.envoyBootstrap: the gateway's Envoy bootstrap. The ingress
listener's route table, filters and cluster settings are the ones of
envoy/envoy.yaml (a test compares them); only the upstream addresses differ
(Service DNS names, and 127.0.0.1 for a sidecar authz). The "ops" listener
is chart-only: /ready for the kubelet and /stats/prometheus for scraping,
never on the public port.
*/}}
{{- define "tollgate.envoyBootstrap" -}}
node:
  id: tollgate-gateway
  cluster: tollgate
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: {{ include "tollgate.envoyAdminPort" . }}}
static_resources:
  # BEGIN listeners copied from envoy/envoy.yaml (go test ./deploy/chartcheck -run TestEnvoyTemplate -update)
  listeners:
  - name: ingress_http
    address: {socket_address: {address: 0.0.0.0, port_value: {{ include "tollgate.gatewayPort" . }}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: AUTO
          # Edge proxy: the peer address is the client. Envoy appends it to
          # x-forwarded-for, sets x-forwarded-proto, strips the client's
          # internal x-envoy-* headers and (with preserve_external_request_id
          # left false) replaces any client x-request-id.
          use_remote_address: true
          {{- include "tollgate.envoyTracing" . | nindent 10 }}
          generate_request_id: true
          # Path tricks must not reach a route under a weaker check: the
          # path is RFC 3986-normalized (dot segments, %2e, backslashes),
          # adjacent slashes are merged, and encoded slashes (%2F, %5C) are
          # refused with 400 because no route of this API has a slash
          # inside a segment (a redirect would only help confused clients
          # retry, and curl does not follow it without -L).
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          request_headers_timeout: 10s
          common_http_protocol_options:
            # x_user_id must never be read as x-user-id by some framework
            # that folds underscores into dashes.
            headers_with_underscores_action: REJECT_REQUEST
          route_config:
            name: tollgate
            virtual_hosts:
            - name: tollgate
              domains: ["*"]
              routes:
              # --- public issuer routes: no check, identity headers stripped
              # (route-level removal runs in the router, after ext_authz, so
              # it is only used where ext_authz is disabled).
              #
              # Route timeouts run from the end of the request to the end of
              # the response; when one expires the client gets 504 "upstream
              # request timeout". The issuer's routes get 5s: a login waits at
              # most 2s for a password-hashing slot (then the issuer answers
              # 503 itself) plus the hash, and everything else it serves is
              # quick, so a frozen issuer costs a client 5s, not Envoy's
              # default 15s.
              - name: register
                match:
                  path: /register
                  headers: [{name: ":method", string_match: {exact: POST}}]
                route: {cluster: issuer, timeout: 5s}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles, x-user-issuer]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - name: login
                match:
                  path: /login
                  headers: [{name: ":method", string_match: {safe_regex: {regex: "GET|POST"}}}]
                route: {cluster: issuer, timeout: 5s}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles, x-user-issuer]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - name: jwks
                match:
                  path: /.well-known/jwks.json
                  headers: [{name: ":method", string_match: {safe_regex: {regex: "GET|HEAD"}}}]
                route: {cluster: issuer, timeout: 5s}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles, x-user-issuer]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - name: openid-configuration
                match:
                  path: /.well-known/openid-configuration
                  headers: [{name: ":method", string_match: {safe_regex: {regex: "GET|HEAD"}}}]
                route: {cluster: issuer, timeout: 5s}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles, x-user-issuer]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              # --- protected routes: the requirement travels to authz in
              # context_extensions; authz overwrites the identity headers.
              # The books routes set no timeout and so keep Envoy's default,
              # 15s: longer than the books store's 10s SQLite busy timeout, so
              # a contended write is answered by books (committed, or a clear
              # error) rather than abandoned with a 504 while it may still
              # commit.
              - name: users
                match:
                  path: /users
                  headers: [{name: ":method", string_match: {safe_regex: {regex: "GET|HEAD"}}}]
                route: {cluster: issuer, timeout: 5s}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: {require: admin, route: users}
              - name: book
                match:
                  path: /book
                  headers: [{name: ":method", string_match: {exact: POST}}]
                route: {cluster: books}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: {route: books}
              - name: books
                match:
                  path: /books
                  headers: [{name: ":method", string_match: {safe_regex: {regex: "GET|HEAD|POST"}}}]
                route: {cluster: books}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: {route: books}
              - name: book-by-id
                match:
                  prefix: /books/
                  headers: [{name: ":method", string_match: {safe_regex: {regex: "GET|HEAD|PUT|PATCH|DELETE"}}}]
                route: {cluster: books}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: {route: books}
              # --- sessions (public): /token (password and refresh grants),
              # /revoke (RFC 7009) and /logout, which verifies its own token.
              - name: token
                match:
                  path: /token
                  headers: [{name: ":method", string_match: {exact: POST}}]
                route: {cluster: issuer, timeout: 5s}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles, x-user-issuer]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - name: revoke
                match:
                  path: /revoke
                  headers: [{name: ":method", string_match: {exact: POST}}]
                route: {cluster: issuer, timeout: 5s}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles, x-user-issuer]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - name: logout
                match:
                  path: /logout
                  headers: [{name: ":method", string_match: {exact: POST}}]
                route: {cluster: issuer, timeout: 5s}
                request_headers_to_remove: [x-user-id, x-user-name, x-user-roles, x-user-issuer]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              # An admin ends all of a user's sessions: checked like /users.
              - name: users-revoke
                match:
                  safe_regex: {regex: "/users/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/revoke"}
                  headers: [{name: ":method", string_match: {exact: POST}}]
                route: {cluster: issuer, timeout: 5s}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: {require: admin, route: users-revoke}
              # --- everything else: answered here, never forwarded, and not
              # sent to authz (an unknown path is a 404 with or without a token).
              - name: not-found
                match: {prefix: /}
                direct_response:
                  status: 404
                  body: {inline_string: "{\"message\":\"not found\"}\n"}
                response_headers_to_add:
                - header: {key: content-type, value: application/json}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
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
              # Fail closed: no decision (error, timeout, authz down) is 503,
              # never a forwarded request.
              failure_mode_allow: false
              status_on_error: {code: ServiceUnavailable}
              validate_mutations: true
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  # END listeners copied from envoy/envoy.yaml
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
  # Cluster settings are envoy/envoy.yaml's (a test compares them),
  # circuit breakers included; see the reasons there.
  clusters:
  - name: authz
    type: {{ if eq .Values.authz.mode "sidecar" }}STATIC{{ else }}STRICT_DNS{{ end }}
    connect_timeout: 1s
    circuit_breakers:
      thresholds:
      - {max_requests: 1024}
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
      grpc_health_check: {}
  - name: issuer
    type: STRICT_DNS
    connect_timeout: 1s
    circuit_breakers:
      thresholds:
      - {max_connections: 256, max_pending_requests: 64, max_requests: 256}
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
    circuit_breakers:
      thresholds:
      - {max_connections: 512, max_pending_requests: 128, max_requests: 512}
    load_assignment:
      cluster_name: books
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: {{ include "tollgate.booksHost" . }}, port_value: {{ include "tollgate.booksPort" . }}}
  {{- if .Values.tracing.enabled }}
  # otel: the collector's OTLP gRPC port (tracing.collector).
  - name: otel
    type: STRICT_DNS
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: otel
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: {{ (splitList ":" .Values.tracing.collector) | first }}, port_value: {{ (splitList ":" .Values.tracing.collector) | last }}}
  {{- end }}
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
