package telemetry_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tollgate-dev/tollgate/internal/otlptest"
	"github.com/tollgate-dev/tollgate/internal/telemetry"
)

// TestExportOTLP pins export over both OTLP protocols to a real receiver,
// each provider with its own service.name.
func TestExportOTLP(t *testing.T) {
	recv, err := otlptest.New()
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	cases := []struct {
		name string
		exp  telemetry.NewExporter
	}{
		{"grpc", func(ctx context.Context) (sdktrace.SpanExporter, error) {
			return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(recv.GRPCAddr), otlptracegrpc.WithInsecure())
		}},
		{"http/protobuf", func(ctx context.Context) (sdktrace.SpanExporter, error) {
			return otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(recv.HTTPAddr), otlptracehttp.WithInsecure())
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			tr := telemetry.New(tc.exp, telemetry.Options{})
			tp, err := tr.Provider(ctx, "svc-"+tc.name, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			_, span := tp.Tracer("test").Start(ctx, "op-"+tc.name)
			span.End()
			if err := tr.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err = recv.WaitFor(wctx, func(ss []otlptest.Span) bool {
				for _, s := range ss {
					if s.Name == "op-"+tc.name && s.Service == "svc-"+tc.name {
						return true
					}
				}
				return false
			})
			if err != nil {
				t.Errorf("export over %s: span op-%s of service svc-%s never arrived: %v", tc.name, tc.name, tc.name, err)
			}
		})
	}
}

// stuckExporter never finishes an export until released.
type stuckExporter struct{ release chan struct{} }

func (e stuckExporter) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	select {
	case <-e.release:
	case <-ctx.Done():
	}
	return nil
}
func (stuckExporter) Shutdown(context.Context) error { return nil }

// TestFullQueueDrops pins that a stuck exporter never blocks the span's
// end: spans beyond the queue are dropped and counted.
func TestFullQueueDrops(t *testing.T) {
	exp := stuckExporter{release: make(chan struct{})}
	tr := telemetry.New(func(context.Context) (sdktrace.SpanExporter, error) { return exp, nil },
		telemetry.Options{QueueSize: 4, BatchTimeout: time.Millisecond})
	reg := prometheus.NewRegistry()
	tp, err := tr.Provider(context.Background(), "svc", reg)
	if err != nil {
		t.Fatal(err)
	}
	tracer := tp.Tracer("test")
	const n = 20000
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for range n {
			_, s := tracer.Start(context.Background(), "op")
			s.End()
		}
	}()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("ending %d spans against a stuck exporter did not finish in 10s; ending a span must never wait for export", n)
	}
	got, err := testutil.GatherAndCount(reg, "tollgate_trace_spans_dropped_total")
	if err != nil || got != 1 {
		t.Fatalf("dropped-span metric series = %d (%v), want 1", got, err)
	}
	mfs, _ := reg.Gather()
	dropped := mfs[0].GetMetric()[0].GetCounter().GetValue()
	if dropped == 0 {
		t.Errorf("tollgate_trace_spans_dropped_total = 0 after %d spans into a stuck exporter, want > 0", n)
	}
	close(exp.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestNilTracingIsOff pins tracing off: a nil Tracing hands out no provider.
func TestNilTracingIsOff(t *testing.T) {
	var tr *telemetry.Tracing
	tp, err := tr.Provider(context.Background(), "svc", nil)
	if tp != nil || err != nil {
		t.Errorf("nil Tracing.Provider = %v, %v; want nil, nil", tp, err)
	}
}
