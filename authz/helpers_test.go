package authz

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// testKey is a signing key the tests hold, as an issuer would.
type testKey struct {
	kid  string
	alg  string
	priv crypto.Signer
}

var (
	keyMu    sync.Mutex
	keyCache = map[string]*testKey{}
)

// newTestKey returns a key for alg, the same one for the same name
// within a test binary (RSA generation is slow under -race).
func newTestKey(t testing.TB, alg, name string) *testKey {
	t.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	if k, ok := keyCache[alg+"/"+name]; ok {
		return k
	}
	var priv crypto.Signer
	var err error
	switch alg {
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "RS256", "PS256", "PS384", "PS512":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "RS1024":
		priv, err = rsa.GenerateKey(rand.Reader, 1024)
		alg = "RS256"
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("newTestKey: unknown alg %q", alg)
	}
	if err != nil {
		t.Fatalf("generate %s key: %v", alg, err)
	}
	k := &testKey{alg: alg, priv: priv}
	pub, err := jwk.FromRaw(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	k.kid = base64.RawURLEncoding.EncodeToString(tp)
	keyCache[alg+"/"+name] = k
	return k
}

// public returns the key's JWK as the issuer publishes it: kid, alg, use.
func (k *testKey) public(t testing.TB) jwk.Key {
	t.Helper()
	j, err := jwk.FromRaw(k.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	must(t, j.Set(jwk.KeyIDKey, k.kid))
	must(t, j.Set(jwk.AlgorithmKey, jwa.SignatureAlgorithm(k.alg)))
	must(t, j.Set(jwk.KeyUsageKey, jwk.ForSignature))
	return j
}

// jwkMap returns the public JWK as a JSON object, for tests that edit it.
func (k *testKey) jwkMap(t testing.TB) map[string]any {
	t.Helper()
	b, err := json.Marshal(k.public(t))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	must(t, json.Unmarshal(b, &m))
	return m
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testIssuer is the expected iss in the tests' tokens; the discovery
// tests serve their own.
const (
	testIssuer   = "https://issuer.test"
	testAudience = "tollgate"
)

// claimsFor returns valid claims for a user with roles.
func claimsFor(sub string, roles ...string) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss":  testIssuer,
		"aud":  []string{testAudience},
		"sub":  sub,
		"name": "alice",
		"jti":  uuid.NewString(),
		"iat":  now.Unix(),
		"nbf":  now.Unix(),
		"exp":  now.Add(time.Hour).Unix(),
	}
	if roles != nil {
		c["roles"] = roles
	}
	return c
}

// sign returns a compact JWS of claims signed by k with alg (k.alg when
// empty); hdr entries are added to the header, nil values delete one.
func (k *testKey) sign(t testing.TB, claims map[string]any, hdr map[string]any) string {
	t.Helper()
	return k.signAs(t, k.alg, claims, hdr)
}

func (k *testKey) signAs(t testing.TB, alg string, claims map[string]any, hdr map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), jwt.MapClaims(claims))
	tok.Header["kid"] = k.kid
	for name, v := range hdr {
		if v == nil {
			delete(tok.Header, name)
		} else {
			tok.Header[name] = v
		}
	}
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// signJSON signs header and payload, given as JSON text, with k, so a
// test can have the issuer sign JSON that a map cannot hold (duplicate
// members, say).
func (k *testKey) signJSON(t testing.TB, header, payload string) string {
	t.Helper()
	signing := seg(t, header) + "." + seg(t, payload)
	sig, err := jwt.GetSigningMethod(k.alg).Sign(signing, k.priv)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// rawToken assembles a compact token from a header and payload (JSON
// values or raw strings) and signature bytes, with no signing at all.
func rawToken(t testing.TB, header, payload any, sig []byte) string {
	t.Helper()
	return seg(t, header) + "." + seg(t, payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func seg(t testing.TB, v any) string {
	t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		b, err = json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// jwksServer serves a JWKS (and a discovery document naming it) that
// tests change as they go, counting requests.
type jwksServer struct {
	*httptest.Server
	mu           sync.Mutex
	body         []byte
	status       int
	cacheControl string
	etag         string
	issuer       string // in the discovery document; URL when empty
	hits         atomic.Int64
	discoveries  atomic.Int64
}

func newJWKSServer(t testing.TB, keys ...*testKey) *jwksServer {
	t.Helper()
	j := &jwksServer{status: http.StatusOK}
	j.Server = httptest.NewServer(http.HandlerFunc(j.serve))
	t.Cleanup(j.Close)
	j.setKeys(t, keys...)
	return j
}

func (j *jwksServer) serve(w http.ResponseWriter, r *http.Request) {
	j.mu.Lock()
	body, status, cc, etag, iss := j.body, j.status, j.cacheControl, j.etag, j.issuer
	j.mu.Unlock()
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		j.discoveries.Add(1)
		if iss == "" {
			iss = j.URL
		}
		json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": j.URL + "/jwks.json"})
	case "/jwks.json":
		j.hits.Add(1)
		if cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		if etag != "" {
			w.Header().Set("ETag", etag)
			if r.Header.Get("If-None-Match") == etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		w.Write(body)
	default:
		http.NotFound(w, r)
	}
}

func (j *jwksServer) jwksURL() string { return j.URL + "/jwks.json" }

// setKeys publishes the public JWKs of keys.
func (j *jwksServer) setKeys(t testing.TB, keys ...*testKey) {
	t.Helper()
	set := make([]any, 0, len(keys))
	for _, k := range keys {
		set = append(set, k.jwkMap(t))
	}
	j.setJWKs(t, set...)
}

// setJWKs publishes raw JWK objects.
func (j *jwksServer) setJWKs(t testing.TB, keys ...any) {
	t.Helper()
	if keys == nil {
		keys = []any{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	j.body, j.status = b, http.StatusOK
	j.mu.Unlock()
}

func (j *jwksServer) fail(status int) {
	j.mu.Lock()
	j.status = status
	j.body = []byte(`{"error":"down"}`)
	j.mu.Unlock()
}

// logRecorder is a slog handler that keeps every record, so tests can
// check the one log line each decision writes.
type logRecorder struct {
	mu      sync.Mutex
	records []map[string]any
	buf     bytes.Buffer
	h       slog.Handler
}

func newLogRecorder() *logRecorder {
	r := &logRecorder{}
	r.h = slog.NewJSONHandler(&r.buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	return r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderView{r, r.h.WithAttrs(as)}
}
func (r *logRecorder) WithGroup(n string) slog.Handler { return &recorderView{r, r.h.WithGroup(n)} }
func (r *logRecorder) Handle(ctx context.Context, rec slog.Record) error {
	return r.handle(ctx, r.h, rec)
}

func (r *logRecorder) handle(ctx context.Context, h slog.Handler, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf.Reset()
	if err := h.Handle(ctx, rec); err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(r.buf.Bytes(), &m); err != nil {
		return err
	}
	r.records = append(r.records, m)
	return nil
}

type recorderView struct {
	r *logRecorder
	h slog.Handler
}

func (v *recorderView) Enabled(context.Context, slog.Level) bool { return true }
func (v *recorderView) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderView{v.r, v.h.WithAttrs(as)}
}
func (v *recorderView) WithGroup(n string) slog.Handler { return &recorderView{v.r, v.h.WithGroup(n)} }
func (v *recorderView) Handle(ctx context.Context, rec slog.Record) error {
	return v.r.handle(ctx, v.h, rec)
}

// checks returns the "check" log lines so far.
func (r *logRecorder) checks() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, m := range r.records {
		if m["msg"] == "check" {
			out = append(out, m)
		}
	}
	return out
}

// lastCheck returns the latest "check" log line.
func (r *logRecorder) lastCheck(t testing.TB) map[string]any {
	t.Helper()
	cs := r.checks()
	if len(cs) == 0 {
		t.Fatal("no check was logged")
	}
	return cs[len(cs)-1]
}

// lines returns every log line so far.
func (r *logRecorder) lines() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.records)
}

// all returns every log line so far as JSON text.
func (r *logRecorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, _ := json.Marshal(r.records)
	return string(b)
}

// testEnv is an authz Server under test with its JWKS server, log and
// a gRPC client over bufconn.
type testEnv struct {
	t      testing.TB
	key    *testKey
	jwks   *jwksServer
	srv    *Server
	logs   *logRecorder
	reg    *prometheus.Registry
	client authv3.AuthorizationClient
	conn   *grpc.ClientConn
}

// newTestEnv starts a Server verifying tokens of keys (served by a fresh
// JWKS server) with cfg's other settings. Tests that need keys loaded
// call waitReady.
func newTestEnv(t testing.TB, cfg Config, keys ...*testKey) *testEnv {
	t.Helper()
	if len(keys) == 0 {
		keys = []*testKey{newTestKey(t, "ES256", "main")}
	}
	e := newTestEnvWithJWKS(t, cfg, newJWKSServer(t, keys...))
	e.key = keys[0]
	return e
}

// newTestEnvWithJWKS is newTestEnv with a JWKS server the test set up,
// or none when cfg names where the keys are.
func newTestEnvWithJWKS(t testing.TB, cfg Config, jw *jwksServer) *testEnv {
	t.Helper()
	e := &testEnv{t: t, logs: newLogRecorder(), reg: prometheus.NewRegistry(), jwks: jw}
	if cfg.Issuer == "" {
		cfg.Issuer = testIssuer
	}
	switch cfg.JWKSURL {
	case "":
		if jw != nil {
			cfg.JWKSURL = jw.jwksURL()
		}
	case "-": // discover it
		cfg.JWKSURL = ""
	}
	if cfg.MinRefresh == 0 {
		cfg.MinRefresh = time.Hour
	}
	if cfg.MaxRefresh == 0 {
		cfg.MaxRefresh = max(time.Hour, cfg.MinRefresh)
	}
	srv, err := New(context.Background(), testConfig(cfg), slog.New(e.logs), e.reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	e.srv = srv
	e.startGRPC()
	return e
}

// testConfig completes a test's partial Config from DefaultConfig: a
// field the test left zero takes its default, except CacheSize and
// Leeway, which are taken as given (zero: no cache, no skew), so a test
// opts in to both.
func testConfig(c Config) Config {
	d := DefaultConfig()
	if c.Audience == "" {
		c.Audience = d.Audience
	}
	if c.Algorithms == nil {
		c.Algorithms = d.Algorithms
	}
	if c.TokenHeaders == nil {
		c.TokenHeaders = d.TokenHeaders
	}
	if c.DPoPAlgorithms == nil {
		c.DPoPAlgorithms = d.DPoPAlgorithms
	}
	if c.DPoPReplayCapacity == 0 {
		c.DPoPReplayCapacity = d.DPoPReplayCapacity
	}
	if c.LogAllowSample == 0 {
		// Tests read every decision's log line; TestDecisionLogSampling
		// sets the sample on the server itself.
		c.LogAllowSample = d.LogAllowSample
	}
	for _, f := range []struct {
		p *time.Duration
		v time.Duration
	}{
		{&c.MinRefresh, d.MinRefresh}, {&c.MaxRefresh, max(d.MaxRefresh, c.MinRefresh)},
		{&c.RefetchInterval, d.RefetchInterval}, {&c.FetchTimeout, d.FetchTimeout},
		{&c.ShutdownTimeout, d.ShutdownTimeout}, {&c.MaxTokenLifetime, d.MaxTokenLifetime},
		{&c.DPoPMaxAge, d.DPoPMaxAge}, {&c.DPoPMaxFuture, d.DPoPMaxFuture}, {&c.DPoPNoncePeriod, d.DPoPNoncePeriod},
	} {
		if *f.p == 0 {
			*f.p = f.v
		}
	}
	return c
}

// waitReady waits until the server has loaded a usable key set.
func (e *testEnv) waitReady() {
	e.t.Helper()
	waitFor(e.t, "authz ready", func() bool { return e.srv.Ready(context.Background()) == nil })
}

func (e *testEnv) startGRPC() {
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(ServerOptions()...)
	e.srv.RegisterGRPC(gs)
	go gs.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		conn.Close()
		gs.Stop()
	})
	e.conn = conn
	e.client = authv3.NewAuthorizationClient(conn)
}

// check sends req over gRPC and fails the test on an RPC error, which
// authz must never return.
func (e *testEnv) check(req *authv3.CheckRequest) *authv3.CheckResponse {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.client.Check(ctx, req)
	if err != nil {
		e.t.Fatalf("Check returned an RPC error %v; a decision must always be a CheckResponse", err)
	}
	return resp
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// envoyRequest builds a CheckRequest the way Envoy's ext_authz filter
// does: lowercase header keys, pseudo-headers included, the path with
// its query, repeated headers already joined with ",".
func envoyRequest(method, path string, headers map[string]string, ext map[string]string) *authv3.CheckRequest {
	h := map[string]string{
		":authority":        "books.example",
		":method":           method,
		":path":             path,
		":scheme":           "http",
		"user-agent":        "curl/8.5.0",
		"accept":            "*/*",
		"x-forwarded-proto": "http",
		"x-request-id":      "3f1c9c1e-8a55-4c0e-9d4f-1d2a57e3b1aa",
	}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress("10.0.0.7", 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress("10.0.0.2", 8080)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:       "9813247019237",
			Method:   method,
			Path:     path,
			Host:     "books.example",
			Scheme:   "http",
			Protocol: "HTTP/1.1",
			Headers:  h,
		}},
		ContextExtensions: ext,
	}}
}

// bearer is the Authorization header carrying tok.
func bearer(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }

// sortedKeys is for stable messages.
func sortedKeys[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func describe(resp *authv3.CheckResponse) string {
	if resp.GetOkResponse() != nil {
		return "OK"
	}
	if d := resp.GetDeniedResponse(); d != nil {
		return fmt.Sprint(d.GetStatus().GetCode())
	}
	return fmt.Sprintf("status %d with no response", resp.GetStatus().GetCode())
}

// counterValue reads one labelled counter (or gauge) from reg; 0 when the
// series does not exist.
func counterValue(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// defaultSource is the key source of the issuer the single-issuer
// settings describe.
func (s *Server) defaultSource() *keySource {
	return s.state.Load().byName[DefaultIssuerName].src
}

// missingRole returns the first role of p.require that roles lacks, or "".
func (p policy) missingRole(roles []string) string {
	var missing string
	eachItem(p.require, func(r string) bool {
		if !contains(roles, r) {
			missing = r
		}
		return missing == ""
	})
	return missing
}
