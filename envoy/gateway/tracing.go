package gateway

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/internal/telemetry"
)

// tracingConfig is a compiled HCM tracing block with the OpenTelemetry
// tracer (envoy.tracers.opentelemetry): spans go over OTLP gRPC to the
// named cluster.
type tracingConfig struct {
	cluster     string
	serviceName string
}

// defaultTracingServiceName is OpenTelemetryConfig.service_name's
// default in Envoy.
const defaultTracingServiceName = "unknown_service:envoy"

// Span names, as Envoy's names them: the connection manager's span for
// an edge listener is "ingress"; its async gRPC client names the
// ext_authz call's span after the method and "egress".
const (
	spanIngress   = "ingress"
	spanExtAuthz  = "async envoy.service.auth.v3.Authorization.Check egress"
	gatewayTracer = "github.com/tollgate-dev/tollgate/envoy/gateway"
)

var traceContext = propagation.TraceContext{}

func compileTracing(t *hcmv3.HttpConnectionManager_Tracing, path string, clusters map[string]*clusterConfig) (*tracingConfig, error) {
	p := t.GetProvider()
	if p == nil {
		return nil, &UnsupportedError{Path: path, Reason: "tracing without a provider"}
	}
	if p.GetTypedConfig().GetTypeUrl() != envoy.TypeOpenTelemetry {
		return nil, &UnsupportedError{Path: path + ".provider", Reason: "tracer " + p.GetTypedConfig().GetTypeUrl() + "; implemented: envoy.tracers.opentelemetry"}
	}
	oc := &tracev3.OpenTelemetryConfig{}
	if err := p.GetTypedConfig().UnmarshalTo(oc); err != nil {
		return nil, envoy.ConfigErrorf(path+".provider.typed_config", "%v", err)
	}
	fp := path + ".provider.typed_config[OpenTelemetryConfig]"
	name := oc.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	if name == "" {
		return nil, &UnsupportedError{Path: fp, Reason: "only grpc_service.envoy_grpc export is implemented"}
	}
	cl, ok := clusters[name]
	if !ok {
		return nil, envoy.ConfigErrorf(fp+".grpc_service.envoy_grpc.cluster_name", "unknown cluster %q", name)
	}
	if !cl.http2 {
		return nil, envoy.ConfigErrorf(fp+".grpc_service.envoy_grpc.cluster_name", "cluster %q does not speak HTTP/2, which gRPC needs", name)
	}
	tc := &tracingConfig{cluster: name, serviceName: oc.GetServiceName()}
	if tc.serviceName == "" {
		tc.serviceName = defaultTracingServiceName
	}
	return tc, nil
}

// setupTracing picks the tracer: the one Options gives, else the
// bootstrap's tracing block exporting to its cluster, else none.
func (g *Gateway) setupTracing(opts Options) error {
	tp := opts.TracerProvider
	if tp == nil && g.cfg.tracing != nil {
		conn := g.clusters[g.cfg.tracing.cluster].conn
		g.ownTracing = telemetry.New(func(ctx context.Context) (sdktrace.SpanExporter, error) {
			return otlptracegrpc.New(ctx, otlptracegrpc.WithGRPCConn(conn))
		}, telemetry.Options{Sampler: sdktrace.ParentBased(sdktrace.AlwaysSample())})
		var err error
		if tp, err = g.ownTracing.Provider(context.Background(), g.cfg.tracing.serviceName, g.reg); err != nil {
			return err
		}
	}
	if tp != nil {
		g.tracer = tp.Tracer(gatewayTracer)
	}
	return nil
}

// startStream starts a request's span, continuing the trace context the
// client sent (traceparent) or starting a new trace, as Envoy's
// OpenTelemetry tracer does.
func (g *Gateway) startStream(s *stream) {
	ctx := traceContext.Extract(s.r.Context(), propagation.HeaderCarrier(s.r.Header))
	s.traceCtx, s.span = g.tracer.Start(ctx, spanIngress, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(s.start))
}

// endStream records Envoy's standard tags on the request's span and
// ends it.
func (g *Gateway) endStream(s *stream) {
	path, _, _ := strings.Cut(s.r.URL.RequestURI(), "?")
	attrs := []attribute.KeyValue{
		attribute.String("component", "proxy"),
		attribute.String("http.method", s.r.Method),
		attribute.String("http.url", "http://"+s.r.Host+path),
		attribute.String("http.protocol", protocolString(s.r)),
		attribute.String("http.status_code", strconv.Itoa(s.status)),
		attribute.String("response_flags", flagsOrDash(s.flags)),
		attribute.String("guid:x-request-id", s.h.valueOrEmpty("x-request-id")),
	}
	if s.route != nil && s.route.cluster != "" {
		attrs = append(attrs, attribute.String("upstream_cluster", s.route.cluster))
	}
	s.span.SetAttributes(attrs...)
	if s.status >= 500 {
		s.span.SetStatus(codes.Error, "")
	}
	s.span.End()
}

// startAuthzCall starts the span of the ext_authz Check call and puts
// its trace context in the call's gRPC metadata, as Envoy's async gRPC
// client does. Without tracing it returns ctx and a no-op end.
func (g *Gateway) startAuthzCall(ctx context.Context, s *stream) (context.Context, func(res checkResult)) {
	if s.span == nil {
		return ctx, func(checkResult) {}
	}
	sctx, span := g.tracer.Start(s.traceCtx, spanExtAuthz, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("upstream_cluster", g.cfg.authz.cluster), attribute.String("component", "proxy")))
	carrier := propagation.MapCarrier{}
	traceContext.Inject(sctx, carrier)
	md := metadata.MD{}
	for k, v := range carrier {
		md.Set(k, v)
	}
	if old, ok := metadata.FromOutgoingContext(ctx); ok {
		md = metadata.Join(old, md)
	}
	start := time.Now()
	return metadata.NewOutgoingContext(ctx, md), func(res checkResult) {
		span.SetAttributes(attribute.String("grpc.status_code", res.outcome.String()),
			attribute.Int64("tollgate.gateway.check_ms", time.Since(start).Milliseconds()))
		if res.outcome == checkError || res.outcome == checkInvalid {
			span.SetStatus(codes.Error, res.detail)
		}
		span.End()
	}
}

// injectUpstream puts the request span's trace context in the upstream
// request's headers, replacing any the client sent.
func (g *Gateway) injectUpstream(s *stream, h http.Header) {
	if s.span == nil {
		return
	}
	h.Del("Traceparent")
	h.Del("Tracestate")
	traceContext.Inject(s.traceCtx, propagation.HeaderCarrier(h))
}

// shutdownTracing flushes the gateway's own exporter, if it has one.
func (g *Gateway) shutdownTracing() {
	if g.ownTracing == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g.ownTracing.Shutdown(ctx)
}
