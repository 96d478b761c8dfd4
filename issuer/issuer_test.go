package issuer

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"golang.org/x/crypto/argon2"

	"github.com/tollgate-dev/tollgate/internal/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's connection opener lives until the DB is closed,
		// and pgx's stdlib keeps a background goroutine per pool.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
	)
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// countingDerive is argon2.IDKey that counts its calls, so tests can
// tell a hash ran without measuring time.
type countingDerive struct{ n atomic.Int64 }

func (c *countingDerive) derive(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
	c.n.Add(1)
	return argon2.IDKey(password, salt, time, memory, threads, keyLen)
}

// dialects are the databases every store-touching test runs on.
var dialects = []struct {
	name string
	dsn  func(t *testing.T) string
}{
	{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "issuer.db") }},
	{"postgres", func(t *testing.T) string { return pgtest.URL(t) }},
}

// testEnv is a Service under test with its fake clock and hash counter.
type testEnv struct {
	svc     *Service
	clock   *fakeClock
	hashes  *countingDerive
	logs    *logSink
	cfg     Config
	handler http.Handler
}

// testConfig returns a config for a service on a fresh SQLite database,
// a fresh key directory, a fake clock and the cheapest allowed hashing.
func testConfig(t *testing.T, clock *fakeClock) Config {
	t.Helper()
	dir := t.TempDir()
	c := DefaultConfig()
	c.DataDir = dir
	c.DB = filepath.Join(dir, "issuer.db")
	c.IssuerURL = "https://issuer.test"
	c.KeyActivationDelay = 10 * time.Minute
	c.Argon2 = MinArgon2Params
	c.Now = clock.Now
	c.KeyPollInterval = time.Hour // tests call reload themselves
	return c
}

// start runs a Service with cfg and closes it when the test ends.
func start(t *testing.T, cfg Config, clock *fakeClock) *testEnv {
	t.Helper()
	hashes := &countingDerive{}
	logs := &logSink{}
	svc, err := newService(context.Background(), cfg, testLogger(t, logs), prometheus.NewRegistry(), hashes.derive)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := svc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &testEnv{svc: svc, clock: clock, hashes: hashes, logs: logs, cfg: cfg, handler: svc.Handler()}
}

// newEnv starts a service with the test defaults, changed by opts.
func newEnv(t *testing.T, opts ...func(*Config)) *testEnv {
	t.Helper()
	clock := newFakeClock()
	cfg := testConfig(t, clock)
	for _, o := range opts {
		o(&cfg)
	}
	return start(t, cfg, clock)
}

// logSink collects log output so tests can assert what never reaches it.
type logSink struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testLogger returns a debug logger writing to sink; the output is
// shown when the test fails and TOLLGATE_TEST_LOGS is set.
func testLogger(t *testing.T, sink *logSink) *slog.Logger {
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("TOLLGATE_TEST_LOGS") != "" {
			t.Log(sink.String())
		}
	})
	return slog.New(slog.NewJSONHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// request is one HTTP request to a service under test.
type request struct {
	method  string
	path    string
	body    string
	ctype   string
	user    string // Basic auth, when pass or user is set
	pass    string
	headers map[string]string
	remote  string
}

// response is what came back.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response body %q is not JSON: %v", r.body, err)
	}
}

func (r response) message(t *testing.T) string {
	t.Helper()
	var m struct{ Message string }
	r.json(t, &m)
	return m.Message
}

func (e *testEnv) do(t *testing.T, rq request) response {
	t.Helper()
	var body io.Reader
	if rq.body != "" {
		body = strings.NewReader(rq.body)
	}
	req := httptest.NewRequest(rq.method, rq.path, body)
	if rq.ctype != "" {
		req.Header.Set("Content-Type", rq.ctype)
	} else if rq.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if rq.user != "" || rq.pass != "" {
		req.SetBasicAuth(rq.user, rq.pass)
	}
	for k, v := range rq.headers {
		req.Header.Set(k, v)
	}
	if rq.remote != "" {
		req.RemoteAddr = rq.remote
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

func (e *testEnv) register(t *testing.T, name, password string) response {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"name": name, "password": password})
	return e.do(t, request{method: "POST", path: "/register", body: string(b)})
}

func (e *testEnv) mustRegister(t *testing.T, name, password string) string {
	t.Helper()
	res := e.register(t, name, password)
	if res.status != http.StatusCreated {
		t.Fatalf("register(%s) = %d %s, want 201", name, res.status, res.body)
	}
	var out struct{ ID string }
	res.json(t, &out)
	return out.ID
}

func (e *testEnv) login(t *testing.T, name, password string) response {
	t.Helper()
	return e.do(t, request{method: "POST", path: "/login", user: name, pass: password})
}

func (e *testEnv) mustLogin(t *testing.T, name, password string) string {
	t.Helper()
	res := e.login(t, name, password)
	if res.status != http.StatusOK {
		t.Fatalf("login(%s) = %d %s, want 200", name, res.status, res.body)
	}
	var out tokenResponse
	res.json(t, &out)
	return out.AccessToken
}

// userCount counts the rows of the users table.
func (e *testEnv) userCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.svc.db.QueryRow(`SELECT COUNT(*) FROM users`).Scan(&n); err != nil {
		t.Fatalf("count users: %v", err)
	}
	return n
}

// storedHash reads name's password hash straight from the database.
func (e *testEnv) storedHash(t *testing.T, name string) string {
	t.Helper()
	u, err := e.svc.users.byName(context.Background(), name)
	if err != nil {
		t.Fatalf("byName(%s): %v", name, err)
	}
	return u.passwordHash
}

const goodPassword = "correct horse battery staple"
