package authz

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// Span attribute keys of a check span. The token itself is never an
// attribute; enduser.id is the verified sub.
const (
	attrDecision = "tollgate.decision"
	attrReason   = "tollgate.reason"
	attrRoute    = "tollgate.route"
	attrIssuer   = "tollgate.issuer"
	attrEndUser  = "enduser.id"
)

// Span names.
const (
	spanCheck       = "envoy.service.auth.v3.Authorization/Check"
	spanForwardAuth = "authz forward-auth"
	spanJWKSFetch   = "authz JWKS fetch"
	tracerName      = "github.com/tollgate-dev/tollgate/authz"
)

// traceContext is the W3C trace context propagator: traceparent and
// tracestate, nothing else.
var traceContext = propagation.TraceContext{}

// newTracer returns the tracer of tp, or nil when tracing is off, in
// which case no check does any tracing work at all.
func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracerName)
}

// headerCarrier reads a trace context from check request headers.
type headerCarrier struct{ hs headerSource }

func (c headerCarrier) Get(key string) string { v, _ := c.hs.header(key); return v }
func (headerCarrier) Set(string, string)      {}
func (headerCarrier) Keys() []string          { return nil }

// mdCarrier reads a trace context from incoming gRPC metadata.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if vs := metadata.MD(c).Get(key); len(vs) > 0 {
		return vs[0]
	}
	return ""
}
func (mdCarrier) Set(string, string) {}
func (mdCarrier) Keys() []string     { return nil }

// startCheckSpan starts the span of one gRPC check. The parent is the
// trace context of the Check call itself (the span Envoy's gRPC client
// starts and injects into the call's metadata), or else the one in the
// checked request's headers (which Envoy forwards in the CheckRequest).
func (s *Server) startCheckSpan(ctx context.Context, hs headerSource) (context.Context, trace.Span) {
	pctx := ctx
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		pctx = traceContext.Extract(ctx, mdCarrier(md))
	}
	if !trace.SpanContextFromContext(pctx).IsValid() {
		pctx = traceContext.Extract(ctx, headerCarrier{hs})
	}
	return s.tracer.Start(pctx, spanCheck, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("rpc.system", "grpc"),
			attribute.String("rpc.service", AuthorizationService), attribute.String("rpc.method", "Check")))
}

// startForwardAuthSpan starts the span of one forward-auth check,
// continuing the trace context of the subrequest's headers.
func (s *Server) startForwardAuthSpan(ctx context.Context, h http.Header) (context.Context, trace.Span) {
	pctx := traceContext.Extract(ctx, propagation.HeaderCarrier(h))
	return s.tracer.Start(pctx, spanForwardAuth, trace.WithSpanKind(trace.SpanKindServer))
}

// endCheckSpan records the decision on span and ends it.
func (s *Server) endCheckSpan(span trace.Span, d decision) {
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs,
		attribute.String(attrDecision, d.outcome().String()),
		attribute.String(attrReason, d.reason.String()),
		attribute.String(attrRoute, d.route),
	)
	if d.id != nil {
		attrs = append(attrs, attribute.String(attrIssuer, s.cfg.Issuer), attribute.String(attrEndUser, d.id.sub))
	}
	span.SetAttributes(attrs...)
	if d.outcome() == unavailable {
		span.SetStatus(codes.Error, d.reason.String())
	}
	span.End()
}

// traceFetchWait starts a child span for the time a check waits on a
// JWKS fetch; the returned function ends it with whether the fetch
// completed. Without tracing it does nothing.
func (s *keySource) traceFetchWait(ctx context.Context) func(completed bool) {
	if s.tracer == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return func(bool) {}
	}
	_, span := s.tracer.Start(ctx, spanJWKSFetch, trace.WithSpanKind(trace.SpanKindInternal))
	return func(completed bool) {
		span.SetAttributes(attribute.Bool("tollgate.jwks.completed", completed))
		if !completed {
			span.SetStatus(codes.Error, "fetch did not complete")
		}
		span.End()
	}
}
