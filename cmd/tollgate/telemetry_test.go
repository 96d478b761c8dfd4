package main

import (
	"strings"
	"testing"
)

// TestTracingFromEnv pins when the OTEL_* variables turn tracing on:
// never without one, never when disabled, and a clear error for what is
// not supported.
func TestTracingFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		wantOn  bool
		wantErr string
	}{
		{"no OTEL variable", []string{"HOME=/root", "TOLLGATE_LOG_LEVEL=info"}, false, ""},
		{"endpoint only (http/protobuf)", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318"}, true, ""},
		{"grpc", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"}, true, ""},
		{"traces protocol wins", []string{"OTEL_EXPORTER_OTLP_PROTOCOL=bogus", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc"}, true, ""},
		{"service name only", []string{"OTEL_SERVICE_NAME=edge-authz"}, true, ""},
		{"SDK disabled", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317", "OTEL_SDK_DISABLED=true"}, false, ""},
		{"exporter none", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317", "OTEL_TRACES_EXPORTER=none"}, false, ""},
		{"exporter zipkin", []string{"OTEL_TRACES_EXPORTER=zipkin"}, false, `OTEL_TRACES_EXPORTER "zipkin" is not supported`},
		{"protocol http/json", []string{"OTEL_EXPORTER_OTLP_PROTOCOL=http/json"}, false, `OTLP protocol "http/json" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := tracingFromEnv(tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("tracingFromEnv(%s) error = %v, want %q", tc.name, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("tracingFromEnv(%s) = %v", tc.name, err)
			}
			if on := tr != nil; on != tc.wantOn {
				t.Errorf("tracingFromEnv(%s) on = %v, want %v", tc.name, on, tc.wantOn)
			}
		})
	}
}
