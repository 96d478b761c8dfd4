package stack

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tollgate-dev/tollgate/internal/otlptest"
	"github.com/tollgate-dev/tollgate/internal/telemetry"
)

// tracedStack starts a stack whose parts export spans over OTLP gRPC to
// an in-process receiver.
func tracedStack(t *testing.T) (*Stack, *otlptest.Receiver, *telemetry.Tracing) {
	t.Helper()
	recv, err := otlptest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recv.Close)
	tr := telemetry.New(func(ctx context.Context) (sdktrace.SpanExporter, error) {
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(recv.GRPCAddr), otlptracegrpc.WithInsecure())
	}, telemetry.Options{Sampler: sdktrace.ParentBased(sdktrace.AlwaysSample()), BatchTimeout: 50 * time.Millisecond})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr.Shutdown(ctx)
	})
	logs := &logBuffer{}
	cfg := testConfig(t, logs)
	cfg.Tracing = tr
	return start(t, cfg, logs), recv, tr
}

// login returns a token for the stack's admin.
func login(t *testing.T, st *Stack) string {
	t.Helper()
	name, pass := st.Admin()
	req, _ := http.NewRequest("POST", st.GatewayURL()+"/login", nil)
	req.SetBasicAuth(name, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /login = %d, %v", resp.StatusCode, err)
	}
	return body.Token
}

// TestOneTraceThroughTheGateway pins that one request through the
// gateway is one trace: the gateway's ingress span continues the
// client's traceparent, the ext_authz call is its child, authz's check
// span is the call's child, and books' server span is the ingress
// span's child; each part names its own service.
func TestOneTraceThroughTheGateway(t *testing.T) {
	st, recv, tr := tracedStack(t)
	tok := login(t, st)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const clientSpan = "00f067aa0ba902b7"
	req, _ := http.NewRequest("GET", st.GatewayURL()+"/books", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("traceparent", "00-"+traceID+"-"+clientSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /books = %d, want 200", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	tr.ForceFlush(ctx)
	byName := func(ss []otlptest.Span, service, name string) *otlptest.Span {
		for i := range ss {
			if ss[i].TraceID == traceID && ss[i].Service == service && (name == "" || ss[i].Name == name) {
				return &ss[i]
			}
		}
		return nil
	}
	spans, err := recv.WaitFor(ctx, func(ss []otlptest.Span) bool {
		return byName(ss, telemetry.ServiceGateway, "ingress") != nil &&
			byName(ss, telemetry.ServiceGateway, "async envoy.service.auth.v3.Authorization.Check egress") != nil &&
			byName(ss, telemetry.ServiceAuthz, "") != nil && byName(ss, telemetry.ServiceBooks, "") != nil
	})
	if err != nil {
		for _, s := range spans {
			t.Logf("span %s %q trace %s id %s parent %s", s.Service, s.Name, s.TraceID, s.SpanID, s.ParentSpanID)
		}
		t.Fatalf("spans of trace %s from gateway, authz and books never all arrived: %v", traceID, err)
	}
	ingress := byName(spans, telemetry.ServiceGateway, "ingress")
	call := byName(spans, telemetry.ServiceGateway, "async envoy.service.auth.v3.Authorization.Check egress")
	check := byName(spans, telemetry.ServiceAuthz, "")
	books := byName(spans, telemetry.ServiceBooks, "")
	_, sub, _ := parseToken(t, tok)
	cases := []struct {
		name       string
		span       *otlptest.Span
		wantParent string
		wantKind   tracev1.Span_SpanKind
		wantAttrs  map[string]string
	}{
		{"gateway ingress", ingress, clientSpan, tracev1.Span_SPAN_KIND_SERVER,
			map[string]string{"http.status_code": "200", "upstream_cluster": "books", "http.method": "GET"}},
		{"gateway ext_authz call", call, ingress.SpanID, tracev1.Span_SPAN_KIND_CLIENT,
			map[string]string{"upstream_cluster": "authz"}},
		{"authz check", check, call.SpanID, tracev1.Span_SPAN_KIND_SERVER,
			map[string]string{"tollgate.decision": "allow", "tollgate.reason": "verified", "tollgate.route": "books",
				"tollgate.issuer": st.IssuerURL(), "enduser.id": sub}},
		{"books server span", books, ingress.SpanID, tracev1.Span_SPAN_KIND_SERVER,
			map[string]string{"http.response.status_code": "200"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.span.ParentSpanID != tc.wantParent {
				t.Errorf("%s (%q) parent = %s, want %s", tc.name, tc.span.Name, tc.span.ParentSpanID, tc.wantParent)
			}
			if tc.span.Kind != tc.wantKind {
				t.Errorf("%s kind = %v, want %v", tc.name, tc.span.Kind, tc.wantKind)
			}
			for k, v := range tc.wantAttrs {
				if got := tc.span.Attributes[k]; got != v {
					t.Errorf("%s attribute %s = %q, want %q", tc.name, k, got, v)
				}
			}
			for k, v := range tc.span.Attributes {
				if len(tok) > 20 && strings.Contains(v, tok[len(tok)-20:]) {
					t.Errorf("%s attribute %s carries the token", tc.name, k)
				}
			}
		})
	}
	writeTraceDiagram(t, spans, traceID)
}

// parseToken returns a token's claims iss and sub, unverified (the
// test only needs to know what to expect).
func parseToken(t *testing.T, tok string) (iss, sub string, err error) {
	t.Helper()
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
		t.Fatalf("parse token: %v", err)
	}
	return c.Issuer, c.Subject, nil
}
