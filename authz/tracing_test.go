package authz

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// Trace contexts a caller may send: W3C traceparent values.
const (
	clientTraceID  = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientParentID = "00f067aa0ba902b7"
	clientParent   = "00-" + clientTraceID + "-" + clientParentID + "-01"
	envoyTraceID   = "0af7651916cd43dd8448eb211c80319c"
	envoyParentID  = "b7ad6b7169203331"
	envoyParent    = "00-" + envoyTraceID + "-" + envoyParentID + "-01"
)

func spanAttrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// TestCheckSpans pins one span per check: its parent (the Check call's
// metadata first, else the request's traceparent), its attributes, and
// that the token is in none of them.
func TestCheckSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	key := newTestKey(t, "ES256", "main")
	e := newTestEnv(t, Config{TracerProvider: tp, CacheSize: 100}, key)
	e.waitReady()
	good := key.sign(t, claimsFor("user-1", "admin"), nil)
	expiredClaims := claimsFor("user-2")
	expiredClaims["exp"] = time.Now().Add(-time.Hour).Unix()
	expiredClaims["iat"] = time.Now().Add(-2 * time.Hour).Unix()
	expiredClaims["nbf"] = time.Now().Add(-2 * time.Hour).Unix()
	expired := key.sign(t, expiredClaims, nil)
	withParent := func(tok string) map[string]string {
		h := bearer(tok)
		h["traceparent"] = clientParent
		return h
	}
	cases := []struct {
		name       string
		headers    map[string]string
		md         metadata.MD
		ext        map[string]string
		wantTrace  string // "" = a new trace
		wantParent string
		want       map[string]string
		token      string
	}{
		{"allow, parent in the request's headers", withParent(good), nil, map[string]string{"route": "books"},
			clientTraceID, clientParentID,
			map[string]string{attrDecision: "allow", attrReason: "verified", attrRoute: "books", attrIssuer: testIssuer, attrEndUser: "user-1"}, good},
		{"allow from cache, parent in the call's metadata", withParent(good), metadata.Pairs("traceparent", envoyParent), nil,
			envoyTraceID, envoyParentID,
			map[string]string{attrDecision: "allow", attrReason: "cached", attrRoute: "", attrEndUser: "user-1"}, good},
		{"expired token", withParent(expired), nil, nil, clientTraceID, clientParentID,
			map[string]string{attrDecision: "deny", attrReason: "expired"}, expired},
		{"no token, no trace context", nil, nil, nil, "", "",
			map[string]string{attrDecision: "deny", attrReason: "no_token"}, ""},
		{"missing role", bearer(key.sign(t, claimsFor("user-3"), nil)), nil, map[string]string{"require": "admin"}, "", "",
			map[string]string{attrDecision: "deny", attrReason: "missing_role", attrEndUser: "user-3"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(rec.Ended())
			ctx := context.Background()
			if tc.md != nil {
				ctx = metadata.NewOutgoingContext(ctx, tc.md)
			}
			if _, err := e.client.Check(ctx, envoyRequest("GET", "/books", tc.headers, tc.ext)); err != nil {
				t.Fatal(err)
			}
			spans := rec.Ended()[before:]
			if len(spans) != 1 {
				t.Fatalf("Check(%s) ended %d spans, want 1", tc.name, len(spans))
			}
			s := spans[0]
			if s.Name() != spanCheck || s.SpanKind() != trace.SpanKindServer {
				t.Errorf("Check(%s) span = %q %v, want %q server", tc.name, s.Name(), s.SpanKind(), spanCheck)
			}
			gotTrace, gotParent := s.SpanContext().TraceID().String(), ""
			if s.Parent().IsValid() {
				gotParent = s.Parent().SpanID().String()
			}
			if tc.wantTrace != "" && gotTrace != tc.wantTrace {
				t.Errorf("Check(%s) trace id = %s, want %s", tc.name, gotTrace, tc.wantTrace)
			}
			if gotParent != tc.wantParent {
				t.Errorf("Check(%s) parent span = %q, want %q", tc.name, gotParent, tc.wantParent)
			}
			got := spanAttrs(s)
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("Check(%s) attribute %s = %q, want %q", tc.name, k, got[k], v)
				}
			}
			if _, ok := tc.want[attrEndUser]; !ok && got[attrEndUser] != "" {
				t.Errorf("Check(%s) attribute %s = %q, want none", tc.name, attrEndUser, got[attrEndUser])
			}
			for k, v := range got {
				if tc.token != "" && strings.Contains(v, tc.token[strings.LastIndexByte(tc.token, '.')+1:]) {
					t.Errorf("Check(%s) attribute %s carries the token", tc.name, k)
				}
			}
		})
	}
}

// TestForwardAuthSpan pins the forward-auth span continuing the
// subrequest's traceparent.
func TestForwardAuthSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	key := newTestKey(t, "ES256", "main")
	e := newTestEnv(t, Config{TracerProvider: tp}, key)
	e.waitReady()
	r := httptest.NewRequest("GET", "/auth/books", nil)
	r.Header.Set("Authorization", "Bearer "+key.sign(t, claimsFor("user-1"), nil))
	r.Header.Set("traceparent", clientParent)
	w := httptest.NewRecorder()
	e.srv.HTTPHandler().ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("forward-auth = %d, want 200", w.Code)
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("forward-auth ended %d spans, want 1", len(spans))
	}
	s := spans[0]
	if got := s.SpanContext().TraceID().String(); got != clientTraceID {
		t.Errorf("forward-auth trace id = %s, want %s", got, clientTraceID)
	}
	if got := spanAttrs(s)[attrDecision]; got != "allow" {
		t.Errorf("forward-auth %s = %q, want allow", attrDecision, got)
	}
}

// TestJWKSFetchSpan pins the child span of a JWKS fetch a check waited
// on (a token whose kid the key set did not have yet).
func TestJWKSFetchSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	old := newTestKey(t, "ES256", "old")
	rotated := newTestKey(t, "ES256", "new")
	e := newTestEnv(t, Config{TracerProvider: tp, RefetchInterval: time.Nanosecond}, old)
	e.waitReady()
	e.jwks.setKeys(t, old, rotated)
	resp := e.check(envoyRequest("GET", "/books", bearer(rotated.sign(t, claimsFor("user-1"), nil)), nil))
	if resp.GetStatus().GetCode() != 0 {
		t.Fatalf("Check(new kid) = %s, want allow", describe(resp))
	}
	var check, fetch sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.Name() {
		case spanCheck:
			check = s
		case spanJWKSFetch:
			fetch = s
		}
	}
	if check == nil || fetch == nil {
		t.Fatalf("spans = %d, want a check span and a JWKS fetch span", len(rec.Ended()))
	}
	if fetch.Parent().SpanID() != check.SpanContext().SpanID() {
		t.Errorf("JWKS fetch span parent = %s, want the check span %s", fetch.Parent().SpanID(), check.SpanContext().SpanID())
	}
}

// TestNoTracerNoSpans pins tracing off: no provider, no tracer.
func TestNoTracerNoSpans(t *testing.T) {
	e := newTestEnv(t, Config{})
	if e.srv.tracer != nil || e.srv.state.Load().list[0].src.tracer != nil {
		t.Errorf("tracer without a TracerProvider = %v, want nil (tracing off)", e.srv.tracer)
	}
}

// discardExporter drops every span it is given.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkCheckTracing puts the cached check side by side with tracing
// off (no provider) and on (always_on, batched to an exporter that
// drops), so the span's own cost shows.
func BenchmarkCheckTracing(b *testing.B) {
	key := newTestKey(b, "ES256", "main")
	for _, bc := range []struct {
		name string
		tp   trace.TracerProvider
	}{
		{"off", nil},
		{"on", sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
			sdktrace.WithBatcher(discardExporter{}))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			jw := newJWKSServer(b, key)
			srv, err := New(context.Background(), testConfig(Config{
				Issuer: testIssuer, JWKSURL: jw.jwksURL(), CacheSize: DefaultCacheSize, TracerProvider: bc.tp,
			}), nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			waitFor(b, "ready", func() bool { return srv.Ready(context.Background()) == nil })
			req := envoyRequest("GET", "/books", bearer(key.sign(b, claimsFor("u-1", "user"), nil)), nil)
			req.Attributes.Request.Http.Headers["traceparent"] = clientParent
			benchCheck(b, srv, req, true)
		})
	}
}
