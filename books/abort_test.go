package books

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// TestClientAbort: a request its client abandoned (the gateway's route
// timeout, a user giving up) is not a server failure. books logs it at
// Info as "client closed request", records 499 rather than 500, and logs
// nothing at Error.
func TestClientAbort(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			var logs bytes.Buffer
			reg := prometheus.NewRegistry()
			s, err := New(context.Background(), dbConfig(d.dsn(t)), slog.New(slog.NewJSONHandler(&logs, nil)), reg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })

			for _, r := range []request{
				{method: "POST", path: "/books", user: "u1", body: `{"name":"Dune","author":"Frank Herbert","publisher":"Chilton","book_prize":0}`},
				{method: "GET", path: "/books", user: "u1"},
			} {
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // the client is gone before books reaches the store
				req := httptest.NewRequestWithContext(ctx, r.method, r.path, strings.NewReader(r.body))
				req.Header.Set("X-User-Id", r.user)
				if r.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				rec := httptest.NewRecorder()
				s.Handler().ServeHTTP(rec, req)
				if rec.Code != httpapi.StatusClientClosedRequest {
					t.Errorf("%v with the client gone = %d %s, want %d", r, rec.Code, rec.Body, httpapi.StatusClientClosedRequest)
				}
			}

			var aborts int
			for line := range strings.Lines(logs.String()) {
				var e struct{ Level, Msg string }
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if e.Level == "ERROR" {
					t.Errorf("logged at ERROR: %s", line)
				}
				if e.Msg == "client closed request" && e.Level == "INFO" {
					aborts++
				}
			}
			if aborts != 2 {
				t.Errorf("%d \"client closed request\" lines at INFO, want 2; log:\n%s", aborts, logs.String())
			}
			codes := map[string]float64{}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() != "tollgate_http_requests_total" {
					continue
				}
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "code" {
							codes[l.GetValue()] += m.GetCounter().GetValue()
						}
					}
				}
			}
			if codes["499"] != 2 || codes["500"] != 0 {
				t.Errorf("tollgate_http_requests_total by code = %v, want 2 with code 499 and none with 500", codes)
			}
			// Nothing was written: the insert never ran.
			ts := &testService{Service: s}
			if got := decode[List](t, ts.must(t, request{method: "GET", path: "/books", user: "u1"}, http.StatusOK)); len(got.Books) != 0 {
				t.Errorf("books after an abandoned create = %d, want 0", len(got.Books))
			}
		})
	}
}
