package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tollgate-dev/tollgate/internal/telemetry"
)

// tracingFromEnv returns the tracing the standard OpenTelemetry
// variables describe, or nil (tracing off, no SDK at all) when no
// OTEL_* variable is set, OTEL_SDK_DISABLED is true or
// OTEL_TRACES_EXPORTER is none. Spans go over OTLP: gRPC or HTTP by
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL
// (http/protobuf when neither is set, as the specification says). The
// exporters and the SDK read the rest (endpoint, headers, sampler,
// batch delays) from the same variables.
func tracingFromEnv(environ []string) (*telemetry.Tracing, error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "OTEL_") {
			env[k] = v
		}
	}
	if len(env) == 0 || strings.EqualFold(strings.TrimSpace(env["OTEL_SDK_DISABLED"]), "true") {
		return nil, nil
	}
	switch e := strings.TrimSpace(env["OTEL_TRACES_EXPORTER"]); e {
	case "", "otlp":
	case "none":
		return nil, nil
	default:
		return nil, fmt.Errorf("$OTEL_TRACES_EXPORTER %q is not supported (use otlp or none)", e)
	}
	proto := strings.TrimSpace(env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"])
	if proto == "" {
		proto = strings.TrimSpace(env["OTEL_EXPORTER_OTLP_PROTOCOL"])
	}
	var newExporter telemetry.NewExporter
	switch proto {
	case "grpc":
		newExporter = func(ctx context.Context) (sdktrace.SpanExporter, error) { return otlptracegrpc.New(ctx) }
	case "", "http/protobuf":
		newExporter = func(ctx context.Context) (sdktrace.SpanExporter, error) { return otlptracehttp.New(ctx) }
	default:
		return nil, fmt.Errorf("OTLP protocol %q is not supported (use grpc or http/protobuf)", proto)
	}
	return telemetry.New(newExporter, telemetry.Options{}), nil
}

// serviceName is the service.name of a standalone process: the
// variable's when it is set, the part's own otherwise.
func serviceName(part string) string {
	if n := strings.TrimSpace(os.Getenv("OTEL_SERVICE_NAME")); n != "" {
		return n
	}
	return part
}

// flushTracing exports what is left at exit, within a few seconds.
func flushTracing(tr *telemetry.Tracing) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr.Shutdown(ctx)
}
