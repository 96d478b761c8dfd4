package books

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/pgtest"
)

// dialects are the databases every store and API test runs on.
var dialects = []struct {
	name string
	dsn  func(t *testing.T) string
}{
	{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "books.db") }},
	{"postgres", func(t *testing.T) string { return pgtest.URL(t) }},
}

// forEachDialect runs f as a subtest per dialect, each with a fresh
// service on a fresh database.
func forEachDialect(t *testing.T, f func(t *testing.T, ts *testService)) {
	t.Helper()
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			f(t, newTestService(t, d.dsn(t)))
		})
	}
}

// testService is a Service under test, driven through its Handler.
type testService struct {
	*Service
	dsn string
	reg *prometheus.Registry
}

func newTestService(t *testing.T, dsn string) *testService {
	t.Helper()
	return newTestServiceConfig(t, dbConfig(dsn))
}

func newTestServiceConfig(t *testing.T, cfg Config) *testService {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatalf("New(%q): %v", cfg.DB, err)
	}
	t.Cleanup(func() { s.Close() })
	return &testService{Service: s, dsn: cfg.DB, reg: reg}
}

// request is one HTTP request to the service.
type request struct {
	method, path string
	user         string // x-user-id; "" sends none
	roles        string // x-user-roles; "" sends none
	body         string
	contentType  string      // default application/json when there is a body; noContentType for none
	header       http.Header // extra headers
}

func (r request) String() string { return r.method + " " + r.path }

// response is what the service answered.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (ts *testService) do(t testing.TB, r request) response {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req := httptest.NewRequest(r.method, r.path, body)
	switch {
	case r.contentType == noContentType:
	case r.contentType != "":
		req.Header.Set("Content-Type", r.contentType)
	case r.body != "":
		req.Header.Set("Content-Type", "application/json")
	}
	if r.user != "" {
		req.Header.Set("X-User-Id", r.user)
	}
	if r.roles != "" {
		req.Header.Set("X-User-Roles", r.roles)
	}
	for k, vs := range r.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return ts.serve(req)
}

// noContentType as request.contentType sends no Content-Type header.
const noContentType = "none"

// serve runs req through the service's handler.
func (ts *testService) serve(req *http.Request) response {
	rec := httptest.NewRecorder()
	ts.Handler().ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// must sends r and fails the test unless the status is want.
func (ts *testService) must(t testing.TB, r request, want int) response {
	t.Helper()
	resp := ts.do(t, r)
	if resp.status != want {
		t.Fatalf("%v = %d %s, want %d", r, resp.status, resp.body, want)
	}
	return resp
}

// create adds a book for user and returns it.
func (ts *testService) create(t testing.TB, user, body string) Book {
	t.Helper()
	return decode[Book](t, ts.must(t, request{method: "POST", path: "/books", user: user, body: body}, http.StatusCreated))
}

// createNamed adds a book called name for user.
func (ts *testService) createNamed(t testing.TB, user, name string) Book {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "author": "A", "publisher": "P", "book_prize": 1})
	return ts.create(t, user, string(body))
}

// listAll pages through user's listing (query adds parameters) with
// page size limit and returns every book seen.
func (ts *testService) listAll(t testing.TB, user, roles, query string, limit int) []Book {
	t.Helper()
	var all []Book
	cursor := ""
	for page := 0; ; page++ {
		if page > 10000 {
			t.Fatal("listing never ends")
		}
		path := "/books?limit=" + strconv.Itoa(limit) + query
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		l := decode[List](t, ts.must(t, request{method: "GET", path: path, user: user, roles: roles}, http.StatusOK))
		all = append(all, l.Books...)
		if l.NextCursor == "" {
			return all
		}
		cursor = l.NextCursor
	}
}

func decode[T any](t testing.TB, r response) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, r.body, err)
	}
	return v
}

// message returns the "message" of a JSON error response.
func message(t testing.TB, r response) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error response Content-Type = %q, want application/json (body %s)", ct, r.body)
	}
	var e struct {
		Message string `json:"message"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Message == "" {
		t.Fatalf("error body %s is not {\"message\": ...}: %v", r.body, err)
	}
	return e.Message
}

func readFile(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// count returns how many books are stored, for every owner.
func (ts *testService) count(t testing.TB) int {
	t.Helper()
	var n int
	if err := ts.db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM books`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// dbConfig is DefaultConfig on the database dsn.
func dbConfig(dsn string) Config {
	c := DefaultConfig()
	c.DB = dsn
	return c
}
