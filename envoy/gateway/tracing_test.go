package gateway

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/internal/otlptest"
)

// TestTracingBlockExports pins the bootstrap's tracing block at work: the
// gateway continues the client's traceparent in an ingress span and
// exports it over OTLP gRPC to the otel cluster, under its service_name.
func TestTracingBlockExports(t *testing.T) {
	recv, err := otlptest.New()
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	issuer := startUpstream(t, "issuer")
	b, err := envoy.LoadFile("testdata/tracing.yaml")
	if err != nil {
		t.Fatal(err)
	}
	opts := loopbackOptions()
	opts.Endpoints = map[string]string{"issuer": issuer.addr(), "books": issuer.addr(), "authz": "127.0.0.1:1", "otel": recv.GRPCAddr}
	g, err := New(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	l, admin, err := g.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, l, admin) }()
	req, _ := http.NewRequest("GET", "http://"+l.Addr().String()+"/.well-known/jwks.json", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := issuer.requests()[0].Header.Get("Traceparent"); len(got) != 55 || got[3:35] != "4bf92f3577b34da6a3ce929d0e0e4736" || got[36:52] == "00f067aa0ba902b7" {
		t.Errorf("upstream traceparent = %q, want the client's trace with the gateway's span as parent", got)
	}
	cancel() // Serve flushes the exporter when it ends
	<-served
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	spans, err := recv.WaitFor(wctx, func(ss []otlptest.Span) bool { return len(ss) > 0 })
	if err != nil {
		t.Fatalf("the otel cluster's receiver got no span: %v", err)
	}
	s := spans[0]
	if s.Service != "tollgate-gateway" || s.Name != "ingress" || s.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || s.ParentSpanID != "00f067aa0ba902b7" {
		t.Errorf("span = %s %q trace %s parent %s; want tollgate-gateway ingress continuing the client's trace", s.Service, s.Name, s.TraceID, s.ParentSpanID)
	}
}
