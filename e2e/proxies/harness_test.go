package proxies

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/stack"
)

// The addresses the examples are written for: those `tollgate up
// -no-gateway` listens on.
const (
	exampleIssuer = "127.0.0.1:8081"
	exampleBooks  = "127.0.0.1:8082"
	exampleAuthz  = "127.0.0.1:9002"
)

// The challenges authz sends, one per denial.
const (
	challengeNoToken   = `Bearer realm="tollgate"`
	challengeInvalid   = `Bearer realm="tollgate", error="invalid_token"`
	challengeForbidden = `Bearer realm="tollgate", error="insufficient_scope"`
	// A request without a token is also offered DPoP, as a second header.
	challengeNoTokenDPoP = `DPoP algs="ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512 EdDSA"`
)

// seenRequest is a request as it reached a service.
type seenRequest struct {
	method, path string
	header       http.Header
}

// tap is a reverse proxy in front of one real service that records every
// request the proxy under test sends it, as the service receives it.
type tap struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

func newTap(t *testing.T, name, target string) *tap {
	t.Helper()
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{name: name}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		tp.mu.Lock()
		tp.seen = append(tp.seen, seenRequest{pr.In.Method, pr.In.URL.Path, pr.In.Header.Clone()})
		tp.mu.Unlock()
		pr.SetURL(u)
		pr.Out.Host = pr.In.Host
	}}
	tp.srv = httptest.NewServer(rp)
	t.Cleanup(tp.srv.Close)
	return tp
}

func (tp *tap) addr() string { return tp.srv.Listener.Addr().String() }

func (tp *tap) take() []seenRequest {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	s := tp.seen
	tp.seen = nil
	return s
}

// env is the real stack, without a gateway, on loopback ports, with a tap
// in front of the issuer and one in front of books. The proxy under test
// is pointed at the taps and at authz's forward-auth port.
type env struct {
	st        *stack.Stack
	issuer    *tap
	books     *tap
	adminName string
	adminPass string
	authzHTTP string
}

const adminPassword = "the proxy tests' admin password"

func startEnv(t *testing.T) *env {
	t.Helper()
	cfg := stack.DefaultConfig()
	cfg.Gateway = stack.NoGateway
	cfg.DataDir = t.TempDir()
	cfg.IssuerAddr = "127.0.0.1:0"
	cfg.BooksAddr = "127.0.0.1:0"
	cfg.AuthzGRPCAddr = "127.0.0.1:0"
	cfg.AuthzHTTPAddr = "127.0.0.1:0"
	cfg.AdminPassword = adminPassword
	cfg.ShutdownTimeout = 5 * time.Second
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	st, err := stack.Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("start stack: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := st.Shutdown(ctx); err != nil {
			t.Errorf("stack shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("stack log:\n%s", logs.String())
		}
	})
	a := st.Addrs()
	name, pass := st.Admin()
	return &env{
		st:        st,
		issuer:    newTap(t, "issuer", a.Issuer),
		books:     newTap(t, "books", a.Books),
		adminName: name,
		adminPass: pass,
		authzHTTP: a.AuthzHTTP,
	}
}

// replacement is one checked substitution in an example file.
type replacement struct{ old, new string }

// substitute derives the test's configuration from an example file: each
// old string must occur in it, and afterwards every port the file names
// (":<digits>") must be one the test chose, so an address the test does
// not know about cannot hide in an example.
func substitute(t *testing.T, file string, rs []replacement) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(data)
	chosen := map[string]bool{}
	for _, r := range rs {
		if !strings.Contains(conf, r.old) {
			t.Fatalf("%s has no %q to replace; the example and its test disagree", file, r.old)
		}
		conf = strings.ReplaceAll(conf, r.old, r.new)
		if _, port, err := net.SplitHostPort(r.new); err == nil {
			chosen[port] = true
		}
	}
	for _, m := range portRE.FindAllStringSubmatch(conf, -1) {
		if !chosen[m[1]] {
			t.Fatalf("%s still names port %s after substitution; add it to the test's replacements", file, m[1])
		}
	}
	return conf
}

var portRE = regexp.MustCompile(`:(\d+)\b`)

// freePort returns a loopback port that was free a moment ago (the
// proxies bind their own listeners).
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// syncBuffer is a bytes.Buffer safe for a process's output and a test's
// reads at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startProxy starts the proxy that cmd(port) returns, on a loopback
// port, and waits until a public route through it reaches the issuer. A
// proxy that exits at once (the port was taken meanwhile) is tried again
// on another port. It returns the proxy's base URL; the proxy is stopped
// when the test ends.
func startProxy(t *testing.T, e *env, name string, cmd func(port string) *exec.Cmd) string {
	t.Helper()
	var last string
	for range 3 {
		port := freePort(t)
		c := cmd(port)
		var out syncBuffer
		c.Stdout, c.Stderr = &out, &out
		if err := c.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		exited := make(chan struct{})
		go func() { c.Wait(); close(exited) }()
		stop := func() {
			c.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				c.Process.Kill()
				<-exited
			}
		}
		base := "http://127.0.0.1:" + port
		if ready(base, exited) {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("%s output:\n%s", name, out.String())
				}
			})
			e.issuer.take()
			e.books.take()
			return base
		}
		stop()
		last = out.String()
	}
	t.Fatalf("%s did not start:\n%s", name, last)
	return ""
}

// ready polls the JWKS through the proxy until it answers 200, the
// proxy exits, or 20 seconds pass (Traefik listens before its routes
// are loaded, so an open port is not enough).
func ready(base string, exited <-chan struct{}) bool {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if resp, err := client.Get(base + "/.well-known/jwks.json"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// do sends one request through the proxy and returns the response with
// its body read.
func do(t *testing.T, method, url string, header map[string]string, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, string(b)
}

// login logs name in through the proxy and returns the token and its sub.
func login(t *testing.T, base, name, password string) (token, sub string) {
	t.Helper()
	tok, _ := postLogin(t, base, name, password, "")
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err != nil {
		t.Fatalf("login token: %v", err)
	}
	return tok, claims.Subject
}

// postLogin is POST /login through the proxy as name, with the DPoP
// proof header when proof is set; it returns the token and its type.
func postLogin(t *testing.T, base, name, password, proof string) (token, tokenType string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", base+"/login", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(name, password)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Token     string `json:"token"`
		TokenType string `json:"token_type"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK || r.Token == "" {
		t.Fatalf("POST /login as %s through the proxy = %d (%v), want 200 with a token", name, resp.StatusCode, err)
	}
	return r.Token, r.TokenType
}

func newSigner(t *testing.T) *dpop.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// loginDPoP logs name in through the proxy with a DPoP proof for the
// issuer's /login (its iss, from discovery, plus the path) and returns
// the bound token.
func loginDPoP(t *testing.T, base, name, password string, signer *dpop.Signer) string {
	t.Helper()
	_, body := do(t, "GET", base+"/.well-known/openid-configuration", nil, "")
	var disc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal([]byte(body), &disc); err != nil || disc.Issuer == "" {
		t.Fatalf("discovery through the proxy = %q (%v), want an issuer", body, err)
	}
	p, err := signer.Proof("POST", disc.Issuer+"/login", dpop.ProofOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, typ := postLogin(t, base, name, password, p)
	if typ != "DPoP" {
		t.Fatalf("POST /login with a DPoP proof through the proxy: token_type %q, want DPoP", typ)
	}
	return tok
}

// tamper changes one character in the middle of the token's signature.
func tamper(token string) string {
	i := strings.LastIndexByte(token, '.') + (len(token)-strings.LastIndexByte(token, '.'))/2
	c := byte('A')
	if token[i] == 'A' {
		c = 'B'
	}
	return token[:i] + string(c) + token[i+1:]
}

// checkProxy runs the checks every example must pass, through the proxy
// at base: a valid token reaches books as its user; no or a tampered
// token is 401 with exactly one challenge; identity headers a client
// sends never arrive; token headers never arrive behind a check; a
// client's policy header is not authz's; /users is 403 for a user and
// 200 for the admin; an unknown path reaches nothing.
func checkProxy(t *testing.T, proxy, base string, e *env) {
	const userName, userPass = "proxyreader", "a long enough proxy password"
	resp, body := do(t, "POST", base+"/register", map[string]string{
		"Content-Type": "application/json", "X-User-Id": "spoofed", "X-User-Roles": "admin",
	}, `{"name":"`+userName+`","password":"`+userPass+`"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /register via %s = %d, want 201; body: %s", proxy, resp.StatusCode, body)
	}
	for _, s := range e.issuer.take() {
		if got := s.header.Values("X-User-Id"); len(got) != 0 {
			t.Errorf("POST /register via %s: the issuer saw X-User-Id %q, want none", proxy, got)
		}
	}
	user, userID := login(t, base, userName, userPass)
	admin, adminID := login(t, base, e.adminName, e.adminPass)
	// A DPoP-bound token for the same user: the proof names the issuer's
	// login endpoint; those for books name the URL the client calls
	// through the proxy, which the example must pass on to authz.
	signer := newSigner(t)
	bound := loginDPoP(t, base, userName, userPass, signer)
	proof := func(method, path, tok string) string {
		p, err := signer.Proof(method, base+path, dpop.ProofOptions{AccessToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	e.issuer.take()

	type want struct {
		status    int
		challenge []string          // the WWW-Authenticate values, exactly; nil: not checked
		reaches   *tap              // the one service the request reaches; nil: none
		seen      map[string]string // headers that service must see ("" = absent)
	}
	bearer := func(tok string) string { return "Bearer " + tok }
	// nginx's auth_request_set $upstream_http_www_authenticate passes the
	// first of authz's two challenges only.
	noToken := []string{challengeNoToken, challengeNoTokenDPoP}
	boundAsBearer := []string{challengeNoTokenDPoP + `, error="invalid_token"`, challengeInvalid}
	badProof := []string{challengeNoTokenDPoP + `, error="invalid_dpop_proof"`, challengeNoToken}
	if proxy == "nginx" {
		noToken, boundAsBearer, badProof = noToken[:1], boundAsBearer[:1], badProof[:1]
	}
	tests := []struct {
		name         string
		method, path string
		header       map[string]string
		body         string
		want         want
	}{
		{
			name: "valid bearer token", method: "GET", path: "/books",
			header: map[string]string{"Authorization": bearer(user)},
			want: want{status: 200, reaches: e.books, seen: map[string]string{
				"X-User-Id": userID, "X-User-Name": userName, "X-User-Roles": "user",
				"Authorization": "", "X-Tollgate-Require": "", "X-Tollgate-Route": ""}},
		},
		{
			name: "tutorial token header", method: "POST", path: "/book",
			header: map[string]string{"X-Access-Tokens": user, "Content-Type": "application/json"},
			body:   `{"name":"The Hobbit","author":"J. R. R. Tolkien","publisher":"George Allen & Unwin","book_prize":12}`,
			want:   want{status: 201, reaches: e.books, seen: map[string]string{"X-User-Id": userID, "X-Access-Tokens": ""}},
		},
		{
			name: "valid token, forged identity headers", method: "GET", path: "/books/1",
			header: map[string]string{"X-Access-Token": user, "X-User-Id": "spoofed", "X-User-Name": "root", "X-User-Roles": "admin"},
			want: want{status: 200, reaches: e.books, seen: map[string]string{
				"X-User-Id": userID, "X-User-Name": userName, "X-User-Roles": "user", "X-Access-Token": ""}},
		},
		{
			name: "valid token, client's own policy headers", method: "GET", path: "/books",
			header: map[string]string{"Authorization": bearer(user), "X-Tollgate-Require": "nonsense", "X-Tollgate-Route": "users"},
			want:   want{status: 200, reaches: e.books, seen: map[string]string{"X-User-Id": userID}},
		},
		{
			name: "DPoP-bound token with a fresh proof", method: "GET", path: "/books",
			header: map[string]string{"Authorization": "DPoP " + bound, "DPoP": proof("GET", "/books", bound)},
			want: want{status: 200, reaches: e.books, seen: map[string]string{
				"X-User-Id": userID, "X-User-Name": userName, "Authorization": "", "Dpop": ""}},
		},
		{
			name: "DPoP-bound token as a bearer token", method: "GET", path: "/books",
			header: map[string]string{"Authorization": bearer(bound)},
			want:   want{status: 401, challenge: boundAsBearer},
		},
		{
			name: "DPoP-bound token, proof for another URL", method: "GET", path: "/books",
			header: map[string]string{"Authorization": "DPoP " + bound, "DPoP": proof("GET", "/books/1", bound)},
			want:   want{status: 401, challenge: badProof},
		},
		{
			name: "no token", method: "GET", path: "/books",
			want: want{status: 401, challenge: noToken},
		},
		{
			name: "no token, forged x-user-id", method: "GET", path: "/books",
			header: map[string]string{"X-User-Id": userID, "X-User-Name": userName, "X-User-Roles": "user"},
			want:   want{status: 401, challenge: noToken},
		},
		{
			name: "tampered token", method: "GET", path: "/books",
			header: map[string]string{"Authorization": bearer(tamper(user))},
			want:   want{status: 401, challenge: []string{challengeInvalid}},
		},
		{
			name: "tampered admin token on /users", method: "GET", path: "/users",
			header: map[string]string{"X-Access-Tokens": tamper(admin)},
			want:   want{status: 401, challenge: []string{challengeInvalid}},
		},
		{
			name: "no token, forged admin headers on /users", method: "GET", path: "/users",
			header: map[string]string{"X-User-Id": adminID, "X-User-Roles": "admin"},
			want:   want{status: 401, challenge: noToken},
		},
		{
			name: "user token on /users", method: "GET", path: "/users",
			header: map[string]string{"Authorization": bearer(user)},
			want:   want{status: 403, challenge: []string{challengeForbidden}},
		},
		{
			name: "user token on /users, forged roles, asks for less", method: "GET", path: "/users",
			header: map[string]string{"Authorization": bearer(user), "X-User-Roles": "admin", "X-Tollgate-Require": "user"},
			want:   want{status: 403, challenge: []string{challengeForbidden}},
		},
		{
			name: "admin token on /users", method: "GET", path: "/users",
			header: map[string]string{"Authorization": bearer(admin), "X-User-Id": "spoofed"},
			want: want{status: 200, reaches: e.issuer, seen: map[string]string{
				"X-User-Id": adminID, "X-User-Name": e.adminName, "Authorization": "",
				"X-Tollgate-Require": "", "X-Tollgate-Route": ""}},
		},
		{
			name: "public route, forged identity headers", method: "GET", path: "/.well-known/openid-configuration",
			header: map[string]string{"X-User-Id": "spoofed", "X-User-Name": "root", "X-User-Roles": "admin"},
			want: want{status: 200, reaches: e.issuer, seen: map[string]string{
				"X-User-Id": "", "X-User-Name": "", "X-User-Roles": ""}},
		},
		{
			name: "unknown path", method: "GET", path: "/admin",
			header: map[string]string{"Authorization": bearer(admin)},
			want:   want{status: 404},
		},
		{
			name: "unknown path under a public one", method: "GET", path: "/.well-known/keys",
			want: want{status: 404},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, base+tt.path, tt.header, tt.body)
			if resp.StatusCode != tt.want.status {
				t.Errorf("%s %s via %s (%s) = %d, want %d; body: %s", tt.method, tt.path, proxy, tt.name, resp.StatusCode, tt.want.status, body)
			}
			if tt.want.challenge != nil {
				if diff := cmp.Diff(tt.want.challenge, resp.Header.Values("WWW-Authenticate")); diff != "" {
					t.Errorf("%s %s via %s (%s): WWW-Authenticate values (-want +got):\n%s", tt.method, tt.path, proxy, tt.name, diff)
				}
			}
			for _, tp := range []*tap{e.issuer, e.books} {
				seen := tp.take()
				if tp != tt.want.reaches {
					if len(seen) != 0 {
						t.Errorf("%s %s via %s (%s) reached %s; it must not", tt.method, tt.path, proxy, tt.name, tp.name)
					}
					continue
				}
				if len(seen) != 1 {
					t.Fatalf("%s %s via %s (%s) reached %s %d times, want once", tt.method, tt.path, proxy, tt.name, tp.name, len(seen))
				}
				for _, k := range slices.Sorted(maps.Keys(tt.want.seen)) {
					if got := strings.Join(seen[0].header.Values(k), ","); got != tt.want.seen[k] {
						t.Errorf("%s %s via %s (%s): %s saw %s = %q, want %q", tt.method, tt.path, proxy, tt.name, tp.name, k, got, tt.want.seen[k])
					}
				}
			}
		})
	}
}

// repoFile is the path of a file of the repository, from this package.
func repoFile(parts ...string) string {
	return filepath.Join(append([]string{"..", ".."}, parts...)...)
}
