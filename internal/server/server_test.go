package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newMux(t *testing.T) (http.Handler, *Metrics, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /books/{id}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, httpapi.RequestID(r.Context()))
	})
	mux.HandleFunc("GET /boom", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	m := NewMetrics(NewRegistry())
	return Instrument(log, m, mux), m, &logs
}

func TestInstrumentRequestID(t *testing.T) {
	h, _, logs := newMux(t)
	for _, tc := range []struct {
		name     string
		incoming string
		keep     bool
	}{
		{"honoured", "abc-123", true},
		{"generated when absent", "", false},
		{"replaced when too long", strings.Repeat("a", 200), false},
		{"replaced when it has spaces", "a b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			r := httptest.NewRequest("GET", "/books/7", nil)
			if tc.incoming != "" {
				r.Header.Set("X-Request-Id", tc.incoming)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			got := rec.Header().Get("X-Request-Id")
			if got == "" || rec.Body.String() != got {
				t.Fatalf("response id %q, handler saw %q; want the same non-empty id", got, rec.Body)
			}
			if (got == tc.incoming) != tc.keep {
				t.Fatalf("X-Request-Id = %q for incoming %q, keep = %v", got, tc.incoming, tc.keep)
			}
			var line map[string]any
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
				t.Fatalf("access log is not one JSON line: %q", logs)
			}
			if line["request_id"] != got || line["route"] != "GET /books/{id}" {
				t.Fatalf("access log = %v, want request_id %q and route pattern", line, got)
			}
		})
	}
}

func TestInstrumentMetricsAndPanics(t *testing.T) {
	h, m, _ := newMux(t)
	for _, path := range []string{"/books/1", "/books/2", "/boom", "/nope"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	for _, tc := range []struct {
		route, code string
		want        float64
	}{
		{"GET /books/{id}", "200", 2}, // by pattern, not raw path
		{"GET /boom", "500", 1},       // a panic is a counted 500
		{"unmatched", "404", 1},
	} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(tc.route, "GET", tc.code)); got != tc.want {
			t.Errorf("requests{route=%q,code=%s} = %v, want %v", tc.route, tc.code, got, tc.want)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/boom", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "internal error") {
		t.Errorf("panic answered %d %q, want 500 internal error", rec.Code, rec.Body)
	}
}

func TestHealth(t *testing.T) {
	var dbErr error
	h := NewHealth(map[string]Check{"db": func(context.Context) error { return dbErr }})
	mux := http.NewServeMux()
	h.Register(mux, NewRegistry())
	get := func(path string) int {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code
	}
	if got := get("/readyz"); got != 200 {
		t.Fatalf("/readyz = %d, want 200", got)
	}
	dbErr = errors.New("down")
	if got := get("/readyz"); got != 503 {
		t.Fatalf("/readyz with failing check = %d, want 503", got)
	}
	dbErr = nil
	h.SetStopping()
	if got := get("/readyz"); got != 503 {
		t.Fatalf("/readyz while stopping = %d, want 503", got)
	}
	if got := get("/healthz"); got != 200 {
		t.Fatalf("/healthz while stopping = %d, want 200 (alive)", got)
	}
	if got := get("/metrics"); got != 200 {
		t.Fatalf("/metrics = %d, want 200", got)
	}
}

// TestRunDrainsInFlight shows the shutdown contract: a request in flight
// when the signal arrives still completes, and Run returns nil.
func TestRunDrainsInFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "done")
	})
	log := slog.New(slog.DiscardHandler)
	l, err := Listen("test", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopping := make(chan struct{})
	runErr := make(chan error, 1)
	go func() {
		runErr <- Run(ctx, log, 5*time.Second, func() { close(stopping) }, Bound{"http", NewHTTP(mux, log), l})
	}()
	resp := make(chan string, 1)
	go func() {
		r, err := http.Get("http://" + l.Addr().String() + "/slow")
		if err != nil {
			resp <- "error: " + err.Error()
			return
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		resp <- string(b)
	}()
	<-started
	cancel()
	<-stopping
	close(release)
	if got := <-resp; got != "done" {
		t.Fatalf("in-flight request got %q, want done", got)
	}
	if err := <-runErr; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	http.DefaultClient.CloseIdleConnections()
}
