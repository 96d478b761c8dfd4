{{/*
Names, labels and the pieces every workload shares. The ports are the
binary's defaults (see the README); they are fixed here so that the
container env, containerPorts, Services, probes and the Envoy bootstrap
cannot drift apart.
*/}}

{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* tollgate.labels: common labels; call with (dict "ctx" $ "component" "issuer"). */}}
{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" .ctx }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- end }}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tollgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "tollgate.issuerPort" -}}8081{{- end }}
{{- define "tollgate.booksPort" -}}8082{{- end }}
{{- define "tollgate.gatewayPort" -}}8080{{- end }}
{{- define "tollgate.authzGRPCPort" -}}9001{{- end }}
{{- define "tollgate.authzHTTPPort" -}}9002{{- end }}
{{- define "tollgate.envoyAdminPort" -}}9901{{- end }}
{{- define "tollgate.envoyOpsPort" -}}9902{{- end }}

{{- define "tollgate.issuerHost" -}}
{{- printf "%s-issuer.%s.svc" (include "tollgate.fullname" .) .Release.Namespace }}
{{- end }}
{{- define "tollgate.booksHost" -}}
{{- printf "%s-books.%s.svc" (include "tollgate.fullname" .) .Release.Namespace }}
{{- end }}
{{- define "tollgate.authzHost" -}}
{{- if eq .Values.authz.mode "sidecar" }}127.0.0.1{{ else }}{{ printf "%s-authz.%s.svc" (include "tollgate.fullname" .) .Release.Namespace }}{{ end }}
{{- end }}

{{- define "tollgate.signingKeysSecret" -}}
{{- default (printf "%s-signing-keys" (include "tollgate.fullname" .)) .Values.issuer.signingKeys.existingSecret }}
{{- end }}
{{- define "tollgate.dpopNonceSecret" -}}
{{- printf "%s-dpop-nonce" (include "tollgate.fullname" .) }}
{{- end }}

{{/* tollgate.dpopNonceVolume: the DPoP nonce secret, when nonces are on. */}}
{{- define "tollgate.dpopNonceVolume" -}}
{{- if .Values.dpop.nonces }}
- name: dpop-nonce
  secret:
    secretName: {{ include "tollgate.dpopNonceSecret" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* tollgate.dpopNonceMount: where the DPoP nonce secret is mounted. */}}
{{- define "tollgate.dpopNonceMount" -}}
{{- if .Values.dpop.nonces }}
- name: dpop-nonce
  mountPath: /etc/tollgate/dpop
  readOnly: true
{{- end }}
{{- end }}

{{- define "tollgate.adminSecret" -}}
{{- default (printf "%s-admin" (include "tollgate.fullname" .)) .Values.issuer.admin.existingSecret }}
{{- end }}

{{/* tollgate.podSecurityContext: the restricted Pod Security Standard, pod level. */}}
{{- define "tollgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* tollgate.securityContext: the restricted Pod Security Standard, container level. */}}
{{- define "tollgate.securityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "tollgate.logEnv" -}}
- name: TOLLGATE_LOG_LEVEL
  value: {{ .Values.log.level | quote }}
- name: TOLLGATE_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
{{- end }}

{{/* tollgate.tracingEnv: the OTEL_* variables of a part when tracing is on (each part names its own service). */}}
{{- define "tollgate.tracingEnv" -}}
{{- if .Values.tracing.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: "http://{{ .Values.tracing.collector }}"
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: grpc
- name: OTEL_TRACES_SAMPLER
  value: {{ .Values.tracing.sampler | quote }}
{{- with .Values.tracing.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* tollgate.envoyTracing: the HCM tracing block when tracing is on; envoy/envoy.yaml has none. */}}
{{- define "tollgate.envoyTracing" -}}
{{- if .Values.tracing.enabled }}
tracing:
  provider:
    name: envoy.tracers.opentelemetry
    typed_config:
      "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
      grpc_service:
        envoy_grpc: {cluster_name: otel}
        timeout: 1s
      service_name: tollgate-gateway
{{- end }}
{{- end }}

{{/* tollgate.authzContainer: the authz container, as a native sidecar or on its own. */}}
{{- define "tollgate.authzContainer" -}}
- name: authz
  image: {{ include "tollgate.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if eq .Values.authz.mode "sidecar" }}
  restartPolicy: Always
  {{- end }}
  args: ["authz"]
  env:
    {{- include "tollgate.logEnv" . | nindent 4 }}
    {{- include "tollgate.tracingEnv" . | nindent 4 }}
    - name: TOLLGATE_AUTHZ_GRPC_ADDR
      value: ":{{ include "tollgate.authzGRPCPort" . }}"
    - name: TOLLGATE_AUTHZ_HTTP_ADDR
      value: ":{{ include "tollgate.authzHTTPPort" . }}"
    - name: TOLLGATE_AUTHZ_ISSUER
      value: {{ .Values.publicURL | quote }}
    - name: TOLLGATE_AUTHZ_JWKS_URL
      value: "http://{{ include "tollgate.issuerHost" . }}:{{ include "tollgate.issuerPort" . }}/.well-known/jwks.json"
    - name: TOLLGATE_AUTHZ_AUDIENCE
      value: {{ .Values.audience | quote }}
    - name: TOLLGATE_AUTHZ_ALGS
      value: {{ .Values.authz.algs | quote }}
    - name: TOLLGATE_AUTHZ_TOKEN_HEADERS
      value: {{ .Values.authz.tokenHeaders | quote }}
    - name: TOLLGATE_AUTHZ_LEEWAY
      value: {{ .Values.authz.leeway | quote }}
    - name: TOLLGATE_AUTHZ_CACHE_SIZE
      value: {{ .Values.authz.cacheSize | quote }}
    - name: TOLLGATE_AUTHZ_REVOCATIONS_URL
      value: "http://{{ include "tollgate.issuerHost" . }}:{{ include "tollgate.issuerPort" . }}/revocations"
    - name: TOLLGATE_AUTHZ_REVOCATIONS_INTERVAL
      value: {{ .Values.authz.revocations.interval | quote }}
    - name: TOLLGATE_AUTHZ_REVOCATIONS_MAX_AGE
      value: {{ .Values.authz.revocations.maxAge | quote }}
    - name: TOLLGATE_AUTHZ_REVOCATIONS_STALE
      value: {{ .Values.authz.revocations.stale | quote }}
    {{- if .Values.authz.config }}
    - name: TOLLGATE_AUTHZ_CONFIG
      value: /etc/tollgate/authz/authz.yaml
    {{- end }}
    - name: TOLLGATE_AUTHZ_DPOP_ALGORITHMS
      value: {{ .Values.dpop.algorithms | quote }}
    - name: TOLLGATE_AUTHZ_DPOP_MAX_AGE
      value: {{ .Values.dpop.maxAge | quote }}
    - name: TOLLGATE_AUTHZ_DPOP_MAX_FUTURE
      value: {{ .Values.dpop.maxFuture | quote }}
    - name: TOLLGATE_AUTHZ_DPOP_REPLAY_CAPACITY
      value: {{ .Values.dpop.replayCapacity | int | quote }}
    {{- with .Values.dpop.publicOrigins }}
    - name: TOLLGATE_AUTHZ_DPOP_PUBLIC_ORIGINS
      value: {{ $list := list }}{{ range $host, $origin := . }}{{ $list = append $list (printf "%s=%s" $host $origin) }}{{ end }}{{ join "," $list | quote }}
    {{- end }}
    {{- if .Values.dpop.nonces }}
    - name: TOLLGATE_AUTHZ_DPOP_NONCES
      value: "true"
    - name: TOLLGATE_AUTHZ_DPOP_NONCE_SECRET_FILE
      value: /etc/tollgate/dpop/nonce-secret
    {{- end }}
    {{- if .Values.dpop.sharedReplay }}
    {{- if ne .Values.database.driver "postgres" }}
    {{- fail "dpop.sharedReplay needs database.driver postgres: the shared replay store is a PostgreSQL table" }}
    {{- end }}
    - name: TOLLGATE_AUTHZ_DPOP_REPLAY_DSN
      valueFrom:
        secretKeyRef:
          name: {{ .Values.database.postgres.existingSecret }}
          key: {{ .Values.database.postgres.issuerURLKey }}
    {{- end }}
  ports:
    - name: authz-grpc
      containerPort: {{ include "tollgate.authzGRPCPort" . }}
      protocol: TCP
    - name: authz-http
      containerPort: {{ include "tollgate.authzHTTPPort" . }}
      protocol: TCP
  # Serving once the issuer's JWKS is loaded: allow for the issuer's own start.
  startupProbe:
    grpc:
      port: {{ include "tollgate.authzGRPCPort" . }}
    periodSeconds: 2
    failureThreshold: 90
  readinessProbe:
    grpc:
      port: {{ include "tollgate.authzGRPCPort" . }}
    periodSeconds: 5
  livenessProbe:
    httpGet:
      path: /healthz
      port: authz-http
    periodSeconds: 10
  resources:
    {{- toYaml .Values.authz.resources | nindent 4 }}
  securityContext:
    {{- include "tollgate.securityContext" . | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- if .Values.authz.config }}
    # The whole directory, not a subPath, so a change to the ConfigMap
    # reaches the file (through its ..data symlink) and authz reloads it.
    - name: authz-config
      mountPath: /etc/tollgate/authz
      readOnly: true
    {{- end }}
    {{- include "tollgate.dpopNonceMount" . | nindent 4 }}
{{- end }}

{{/* tollgate.authzConfigVolume: the volume of authz's configuration file, if any. */}}
{{- define "tollgate.authzConfigVolume" -}}
{{- if .Values.authz.config }}
- name: authz-config
  configMap:
    name: {{ include "tollgate.fullname" . }}-authz-config
{{- end }}
{{- include "tollgate.dpopNonceVolume" . }}
{{- end }}

{{/* tollgate.authzConfigFile: authz's configuration file: Tollgate's issuer, then the configured ones. */}}
{{- define "tollgate.authzConfigFile" -}}
{{- $algs := list }}
{{- range splitList "," .Values.authz.algs }}{{ $algs = append $algs (trim .) }}{{ end }}
{{- $tollgate := dict "name" "tollgate" "issuer" .Values.publicURL "jwks_url" (printf "http://%s:%v/.well-known/jwks.json" (include "tollgate.issuerHost" .) (include "tollgate.issuerPort" .)) "audiences" (list .Values.audience) "algorithms" $algs }}
{{- $file := dict "issuers" (prepend (.Values.authz.config.issuers | default list) $tollgate) }}
{{- with .Values.authz.config.routes }}{{ $_ := set $file "routes" . }}{{ end }}
{{- with .Values.authz.config.default }}{{ $_ := set $file "default" . }}{{ end }}
{{- toYaml $file }}
{{- end }}

{{- define "tollgate.egressDNS" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{- define "tollgate.egressPostgres" -}}
- ports:
    - port: {{ .Values.networkPolicy.postgresPort }}
      protocol: TCP
{{- end }}

{{/*
tollgate.replicas: spec.replicas of books or the gateway; call with
(dict "ctx" $ "component" "gateway"). Always rendered: a manifest without
replicas makes Helm's three-way merge remove the field, and the Deployment
drops to 1 replica until the HPA scales it back. With autoscaling on it is
the count the Deployment has now (the HPA's), within minReplicas and
maxReplicas; on a first install, replicas within those bounds.
*/}}
{{- define "tollgate.replicas" -}}
{{- $v := index .ctx.Values .component }}
{{- if not $v.autoscaling.enabled }}
{{- $v.replicas }}
{{- else }}
{{- $n := int $v.replicas }}
{{- $live := lookup "apps/v1" "Deployment" .ctx.Release.Namespace (printf "%s-%s" (include "tollgate.fullname" .ctx) .component) }}
{{- if and $live $live.spec (hasKey $live.spec "replicas") }}
{{- $n = int $live.spec.replicas }}
{{- end }}
{{- max (int $v.autoscaling.minReplicas) (min (int $v.autoscaling.maxReplicas) $n) }}
{{- end }}
{{- end }}
