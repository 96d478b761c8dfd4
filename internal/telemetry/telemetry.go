// Package telemetry builds the OpenTelemetry tracer providers Tollgate's
// parts record spans with: one per part, each with its own service.name,
// all exporting through span exporters the caller makes (cmd/tollgate
// builds OTLP exporters from the standard OTEL_* variables).
//
// It must never let exporting slow a request: a span is handed to a
// bounded queue, and a full queue drops the span and counts it in
// tollgate_trace_spans_dropped_total rather than wait. A nil *Tracing is
// tracing off: it hands out no provider, and the parts then skip every
// tracing step.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Service names each part reports, unless the process is told otherwise.
const (
	ServiceIssuer  = "tollgate-issuer"
	ServiceAuthz   = "tollgate-authz"
	ServiceBooks   = "tollgate-books"
	ServiceGateway = "tollgate-gateway"
)

// DefaultQueueSize is the number of ended spans waiting for export
// beyond which new ones are dropped.
const DefaultQueueSize = 4096

// NewExporter makes the span exporter of one provider.
type NewExporter func(ctx context.Context) (sdktrace.SpanExporter, error)

// Options configure a Tracing.
type Options struct {
	// Sampler decides which new traces are recorded; nil leaves it to the
	// SDK (OTEL_TRACES_SAMPLER, parent-based always_on by default).
	Sampler sdktrace.Sampler
	// QueueSize bounds the spans waiting for export; 0 means
	// DefaultQueueSize.
	QueueSize int
	// BatchTimeout is the longest a span waits before its batch is
	// exported; 0 leaves the SDK's default (OTEL_BSP_SCHEDULE_DELAY, 5s).
	BatchTimeout time.Duration
}

// Tracing hands out tracer providers that share one way of exporting.
// Its methods are safe for concurrent use; a nil *Tracing is tracing off.
type Tracing struct {
	newExporter NewExporter
	opts        Options

	mu        sync.Mutex
	providers []*sdktrace.TracerProvider
}

// New returns a Tracing whose providers export through exporters made by
// newExporter.
func New(newExporter NewExporter, opts Options) *Tracing {
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	return &Tracing{newExporter: newExporter, opts: opts}
}

// Provider returns a tracer provider whose spans carry service.name
// service, and registers its dropped-span counter on reg (when not nil).
// On a nil Tracing it returns nil: tracing off.
func (t *Tracing) Provider(ctx context.Context, service string, reg prometheus.Registerer) (trace.TracerProvider, error) {
	if t == nil {
		return nil, nil
	}
	exp, err := t.newExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("trace exporter for %s: %w", service, err)
	}
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_trace_spans_dropped_total",
		Help: "Spans dropped because the export queue was full.",
	})
	if reg != nil {
		if err := reg.Register(dropped); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("register dropped-span counter: %w", err)
			}
			dropped = are.ExistingCollector.(prometheus.Counter)
		}
	}
	bopts := []sdktrace.BatchSpanProcessorOption{sdktrace.WithBlocking()}
	if t.opts.BatchTimeout > 0 {
		bopts = append(bopts, sdktrace.WithBatchTimeout(t.opts.BatchTimeout))
	}
	proc := newQueue(sdktrace.NewBatchSpanProcessor(exp, bopts...), t.opts.QueueSize, dropped)
	popts := []sdktrace.TracerProviderOption{
		sdktrace.WithSpanProcessor(proc),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
	}
	if t.opts.Sampler != nil {
		popts = append(popts, sdktrace.WithSampler(t.opts.Sampler))
	}
	tp := sdktrace.NewTracerProvider(popts...)
	t.mu.Lock()
	t.providers = append(t.providers, tp)
	t.mu.Unlock()
	return tp, nil
}

// ForceFlush exports every span ended so far, within ctx.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	var errs []error
	for _, tp := range t.snapshot() {
		errs = append(errs, tp.ForceFlush(ctx))
	}
	return errors.Join(errs...)
}

// Shutdown flushes and stops every provider handed out, within ctx.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	var errs []error
	for _, tp := range t.snapshot() {
		errs = append(errs, tp.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

func (t *Tracing) snapshot() []*sdktrace.TracerProvider {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*sdktrace.TracerProvider(nil), t.providers...)
}

// queue is the bounded queue in front of a batch span processor: OnEnd
// never waits; when the queue is full the span is dropped and counted.
// The batch processor behind it blocks only queue's own goroutine.
type queue struct {
	next    sdktrace.SpanProcessor
	ch      chan sdktrace.ReadOnlySpan
	dropped prometheus.Counter
	pending atomic.Int64 // spans accepted but not yet handed to next
	done    chan struct{}
	once    sync.Once
	closed  atomic.Bool
	mu      sync.RWMutex // held for reading while sending on ch, for writing to close it
}

func newQueue(next sdktrace.SpanProcessor, size int, dropped prometheus.Counter) *queue {
	q := &queue{next: next, ch: make(chan sdktrace.ReadOnlySpan, size), dropped: dropped, done: make(chan struct{})}
	go q.run()
	return q
}

func (q *queue) run() {
	defer close(q.done)
	for s := range q.ch {
		q.next.OnEnd(s)
		q.pending.Add(-1)
	}
}

func (q *queue) OnStart(parent context.Context, s sdktrace.ReadWriteSpan) {}

func (q *queue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed.Load() {
		return
	}
	q.pending.Add(1)
	select {
	case q.ch <- s:
	default:
		q.pending.Add(-1)
		q.dropped.Inc()
	}
}

// ForceFlush waits until every accepted span reached the batch
// processor, then flushes it.
func (q *queue) ForceFlush(ctx context.Context) error {
	for q.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return q.next.ForceFlush(ctx)
}

func (q *queue) Shutdown(ctx context.Context) error {
	q.once.Do(func() {
		q.mu.Lock()
		q.closed.Store(true)
		close(q.ch)
		q.mu.Unlock()
	})
	select {
	case <-q.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return q.next.Shutdown(ctx)
}
