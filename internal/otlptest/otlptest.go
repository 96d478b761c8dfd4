// Package otlptest is an OTLP trace receiver for tests: an in-process
// collector that accepts the real OTLP protobuf messages over gRPC
// (TraceService/Export) and HTTP (POST /v1/traces) and keeps every span
// it was sent, flattened with its service.name, so a test can check
// trace ids, parent links and attributes.
//
// It is test support: nothing in the tollgate binary may import it.
package otlptest

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	collectortracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, flattened.
type Span struct {
	Service      string // the resource's service.name
	Name         string
	Kind         tracev1.Span_SpanKind
	TraceID      string // hex
	SpanID       string // hex
	ParentSpanID string // hex, "" for a root
	Start, End   time.Time
	Attributes   map[string]string // values printed as strings
	StatusCode   tracev1.Status_StatusCode
}

// Receiver collects spans. Its zero value is not usable; call New.
type Receiver struct {
	collectortracev1.UnimplementedTraceServiceServer

	mu    sync.Mutex
	spans []Span
	added chan struct{} // signalled after each Export

	grpcSrv *grpc.Server
	httpSrv *http.Server
	// GRPCAddr and HTTPAddr are where the receiver listens (host:port).
	GRPCAddr, HTTPAddr string
}

// New starts a receiver on loopback ports, gRPC and HTTP. Close stops it.
func New() (*Receiver, error) {
	r := &Receiver{added: make(chan struct{}, 1)}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		gl.Close()
		return nil, err
	}
	r.GRPCAddr, r.HTTPAddr = gl.Addr().String(), hl.Addr().String()
	r.grpcSrv = grpc.NewServer()
	collectortracev1.RegisterTraceServiceServer(r.grpcSrv, r)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.serveHTTP)
	r.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go r.grpcSrv.Serve(gl)
	go r.httpSrv.Serve(hl)
	return r, nil
}

// Close stops both servers.
func (r *Receiver) Close() {
	r.grpcSrv.Stop()
	r.httpSrv.Close()
}

// Export implements the OTLP gRPC TraceService.
func (r *Receiver) Export(ctx context.Context, req *collectortracev1.ExportTraceServiceRequest) (*collectortracev1.ExportTraceServiceResponse, error) {
	r.add(req)
	return &collectortracev1.ExportTraceServiceResponse{}, nil
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, hr *http.Request) {
	body, err := io.ReadAll(io.LimitReader(hr.Body, 16<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req collectortracev1.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&req)
	out, _ := proto.Marshal(&collectortracev1.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func (r *Receiver) add(req *collectortracev1.ExportTraceServiceRequest) {
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		service := attrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				got = append(got, Span{
					Service:      service,
					Name:         s.GetName(),
					Kind:         s.GetKind(),
					TraceID:      hex.EncodeToString(s.GetTraceId()),
					SpanID:       hex.EncodeToString(s.GetSpanId()),
					ParentSpanID: hex.EncodeToString(s.GetParentSpanId()),
					Start:        time.Unix(0, int64(s.GetStartTimeUnixNano())),
					End:          time.Unix(0, int64(s.GetEndTimeUnixNano())),
					Attributes:   attrs(s.GetAttributes()),
					StatusCode:   s.GetStatus().GetCode(),
				})
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
	select {
	case r.added <- struct{}{}:
	default:
	}
}

func attrs(kvs []*commonv1.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = value(kv.GetValue())
	}
	return m
}

func value(v *commonv1.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonv1.AnyValue_StringValue:
		return x.StringValue
	case *commonv1.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonv1.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonv1.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	}
	return fmt.Sprint(v)
}

// Spans returns every span received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// WaitFor waits until ok holds for the spans received, or ctx ends; it
// returns the spans either way.
func (r *Receiver) WaitFor(ctx context.Context, ok func([]Span) bool) ([]Span, error) {
	for {
		s := r.Spans()
		if ok(s) {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-r.added:
		case <-time.After(50 * time.Millisecond):
		}
	}
}
