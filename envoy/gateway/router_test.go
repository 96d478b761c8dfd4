package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tollgate-dev/tollgate/envoy"
)

// logBuffer collects a gateway's JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// requestFlags returns the response flags of each "request" log line.
func (l *logBuffer) requestFlags(t *testing.T) []string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.Lines(l.buf.String()) {
		var rec struct{ Msg, Flags string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Msg == "request" {
			out = append(out, rec.Flags)
		}
	}
	return out
}

// startLoggedGateway is startGateway with the gateway's log kept.
func startLoggedGateway(t *testing.T, b *bootstrapv3.Bootstrap, endpoints map[string]string) (*testGateway, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	opts := loopbackOptions()
	opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Endpoints = endpoints
	g, err := New(b, opts)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	return serveGateway(t, g), logs
}

// result is one response as a client saw it, or the error it got.
type result struct {
	status int
	header http.Header
	body   string
	err    error
}

// send makes one request with its own connection, usable from any
// goroutine; a client timeout stops a test from hanging on a gateway
// that should have answered.
func send(method, url string) result {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return result{err: err}
	}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: string(body), err: err}
}

// shippedWith loads envoy.yaml with one edit (see edit).
func shippedWith(t *testing.T, old, new string) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := envoy.ValidateYAML(edit(t, old, new))
	if err != nil {
		t.Fatalf("envoy.ValidateYAML(edited) = %v", err)
	}
	return b
}

const booksTimeout = "route: {cluster: books}\n                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    check_settings:\n                      context_extensions: {route: books}\n              - name: book-by-id"

// booksRouteTimeout is the shipped config with GET /books under timeout.
func booksRouteTimeout(t *testing.T, timeout string) *bootstrapv3.Bootstrap {
	return shippedWith(t, booksTimeout, strings.Replace(booksTimeout, "route: {cluster: books}", "route: {cluster: books, timeout: "+timeout+"}", 1))
}

// TestShippedTimeoutsAndBreakers pins what envoy.yaml asks of the router:
// 5s on the issuer's routes (a frozen issuer must not hold a login for
// Envoy's default 15s), the default 15s on the books routes, and the
// circuit breakers of each cluster.
func TestShippedTimeoutsAndBreakers(t *testing.T) {
	b, err := envoy.LoadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := compile(b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]time.Duration{}
	for _, r := range c.routes.vhosts[0].routes {
		if r.cluster != "" {
			got[r.name] = r.timeout
		}
	}
	want := map[string]time.Duration{
		"register": 5 * time.Second, "login": 5 * time.Second, "jwks": 5 * time.Second,
		"openid-configuration": 5 * time.Second, "users": 5 * time.Second,
		"token": 5 * time.Second, "revoke": 5 * time.Second, "logout": 5 * time.Second, "users-revoke": 5 * time.Second,
		"book": 15 * time.Second, "books": 15 * time.Second, "book-by-id": 15 * time.Second,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("route timeouts (-want +got):\n%s", d)
	}
	limits := map[string]thresholds{}
	for name, cc := range c.clusters {
		limits[name] = cc.limits
	}
	wantLimits := map[string]thresholds{
		"issuer": {maxConnections: 256, maxPendingRequests: 64, maxRequests: 256, maxRetries: 3},
		"books":  {maxConnections: 512, maxPendingRequests: 128, maxRequests: 512, maxRetries: 3},
		"authz":  {maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3},
	}
	if d := cmp.Diff(wantLimits, limits, cmp.AllowUnexported(thresholds{})); d != "" {
		t.Errorf("circuit breakers (-want +got):\n%s", d)
	}
}

// TestRouteTimeoutConfig: RouteAction.timeout defaults to 15s, 0 disables
// it, a negative one is refused; circuit_breakers default to Envoy's
// limits, and the first Thresholds of the default priority wins.
func TestRouteTimeoutConfig(t *testing.T) {
	t.Run("timeouts", func(t *testing.T) {
		for _, tt := range []struct {
			route string
			want  time.Duration
		}{
			{"route: {cluster: books}", 15 * time.Second},
			{"route: {cluster: books, timeout: 0s}", 0},
			{"route: {cluster: books, timeout: 0.25s}", 250 * time.Millisecond},
		} {
			b := shippedWith(t, booksTimeout, strings.Replace(booksTimeout, "route: {cluster: books}", tt.route, 1))
			c, err := compile(b, Options{})
			if err != nil {
				t.Fatalf("compile(%s) = %v", tt.route, err)
			}
			if got := c.routes.vhosts[0].routes[6].timeout; got != tt.want {
				t.Errorf("compile(%s) timeout = %v, want %v", tt.route, got, tt.want)
			}
		}
		b := booksRouteTimeout(t, "-1s")
		if _, err := New(b, DefaultOptions()); !isConfigError(err) || !strings.Contains(err.Error(), "routes[6].route.timeout") {
			t.Errorf("New(timeout -1s) = %v, want a config error naming the route's timeout", err)
		}
	})
	t.Run("circuit breakers", func(t *testing.T) {
		const books = "    circuit_breakers:\n      thresholds:\n      - {max_connections: 512, max_pending_requests: 128, max_requests: 512}\n"
		for _, tt := range []struct {
			name, with string
			want       thresholds
		}{
			{"none", "", defaultThresholds},
			{"partly set", "    circuit_breakers:\n      thresholds:\n      - {max_requests: 7}\n", thresholds{1024, 1024, 7, 3}},
			{"high priority ignored, first default wins", "    circuit_breakers:\n      thresholds:\n      - {priority: HIGH, max_requests: 1}\n      - {max_requests: 2, max_retries: 0}\n      - {max_requests: 3}\n", thresholds{1024, 1024, 2, 0}},
		} {
			b := shippedWith(t, books, tt.with)
			c, err := compile(b, Options{})
			if err != nil {
				t.Fatalf("compile(%s) = %v", tt.name, err)
			}
			if got := c.clusters["books"].limits; got != tt.want {
				t.Errorf("circuit breakers (%s) = %+v, want %+v", tt.name, got, tt.want)
			}
		}
	})
}

// TestRouteTimeout: the route timeout runs from the end of the downstream
// request to the end of the upstream response. Before the response starts
// it is a 504 "upstream request timeout" local reply (response flag UT);
// after, the response is reset. The upstream is told the timeout in
// x-envoy-expected-rq-timeout-ms, and its request is cancelled.
func TestRouteTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	authz := startFakeAuthz(t)
	var (
		mu        sync.Mutex
		expected  []string
		cancelled int
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		expected = append(expected, r.Header.Get("X-Envoy-Expected-Rq-Timeout-Ms"))
		mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Query().Get("mode") {
		case "echo":
			fmt.Fprintf(w, "got %s", body)
			return
		case "partial":
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
			mu.Lock()
			cancelled++
			mu.Unlock()
		case <-time.After(10 * time.Second):
			io.WriteString(w, "too late")
		}
	}))
	defer up.Close()
	g, logs := startLoggedGateway(t, booksRouteTimeout(t, "0.3s"), map[string]string{"authz": authz.addr, "books": strings.TrimPrefix(up.URL, "http://")})
	base := "http://" + g.Addr().String()

	t.Run("hung upstream is 504", func(t *testing.T) {
		start := time.Now()
		res := send("GET", base+"/books")
		elapsed := time.Since(start)
		if res.err != nil || res.status != 504 || res.body != bodyUpstreamTimeout {
			t.Fatalf("GET /books with a hung upstream = %d %q (%v), want 504 %q", res.status, res.body, res.err, bodyUpstreamTimeout)
		}
		if ct := res.header.Get("Content-Type"); ct != "text/plain" {
			t.Errorf("504 content-type = %q, want text/plain", ct)
		}
		if elapsed < timeout || elapsed > 8*time.Second {
			t.Errorf("504 after %v, want it after the %v route timeout, well before Envoy's default 15s", elapsed, timeout)
		}
	})
	t.Run("hung upstream is 504 over h2c", func(t *testing.T) {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get(base + "/books")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 504 || string(body) != bodyUpstreamTimeout {
			t.Errorf("GET /books over h2c with a hung upstream = %s %d %q, want HTTP/2 504 %q", resp.Proto, resp.StatusCode, body, bodyUpstreamTimeout)
		}
	})
	t.Run("the clock starts at the end of the request body", func(t *testing.T) {
		// The body arrives after twice the timeout; the upstream answers
		// at once after reading it. Envoy arms the timer only then.
		c, err := net.Dial("tcp", g.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "POST /books?mode=echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
		time.Sleep(2 * timeout)
		io.WriteString(c, "{}")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "got {}" {
			t.Errorf("POST /books with a slow body = %d %q, want 200 \"got {}\"", resp.StatusCode, body)
		}
	})
	t.Run("response already started is reset", func(t *testing.T) {
		resp, err := http.Get(base + "/books?mode=partial")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || err == nil {
			t.Errorf("GET /books with a response cut by the timeout = %d, body %q, read error %v; want 200 and a reset (read error)", resp.StatusCode, body, err)
		}
	})

	// The upstream sees the cancellation once the gateway has reset its
	// connection.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := cancelled
		mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the upstream saw %d requests cancelled, want 3 (the timed-out ones)", n)
			break
		}
	}
	mu.Lock()
	for i, v := range expected {
		if v != "300" {
			t.Errorf("request %d: x-envoy-expected-rq-timeout-ms = %q, want \"300\"", i, v)
		}
	}
	mu.Unlock()
	if got, want := logs.requestFlags(t), []string{"UT", "UT", "-", "UT"}; !cmp.Equal(got, want) {
		t.Errorf("response flags in the request log = %q, want %q", got, want)
	}
}

// TestRouteTimeoutDisabled: with timeout 0 the router arms no timer and
// sends no x-envoy-expected-rq-timeout-ms.
func TestRouteTimeoutDisabled(t *testing.T) {
	authz := startFakeAuthz(t)
	books := startUpstream(t, "books")
	g := startGateway(t, booksRouteTimeout(t, "0s"), map[string]string{"authz": authz.addr, "books": books.addr()})
	if res := send("GET", "http://"+g.Addr().String()+"/books"); res.err != nil || res.status != 200 {
		t.Fatalf("GET /books = %d (%v), want 200", res.status, res.err)
	}
	if v, ok := books.requests()[0].Header["X-Envoy-Expected-Rq-Timeout-Ms"]; ok {
		t.Errorf("x-envoy-expected-rq-timeout-ms = %q with timeout 0, want none", v)
	}
}

// gate is an upstream whose requests wait until released.
type gate struct {
	srv     *httptest.Server
	arrived chan string
	release chan struct{}
}

func startGate(t *testing.T) *gate {
	g := &gate{arrived: make(chan string, 100), release: make(chan struct{})}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.arrived <- r.URL.RequestURI()
		select {
		case <-g.release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gate) addr() string { return strings.TrimPrefix(g.srv.URL, "http://") }

// waitArrived waits for n requests to reach the gate.
func (g *gate) waitArrived(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-g.arrived:
		case <-time.After(10 * time.Second):
			t.Fatalf("a request did not reach the upstream")
		}
	}
}

// waitPending waits until the cluster's breaker holds n pending requests.
func waitPending(t *testing.T, b *breaker, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, p := b.counts(); p == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("breaker never held %d pending requests", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const booksBreaker = "- {max_connections: 512, max_pending_requests: 128, max_requests: 512}"

// TestCircuitBreakers: past a cluster's limits the router sheds a request
// at once with Envoy's overflow reply (503, x-envoy-overloaded: true,
// response flag UO) and it never reaches the upstream. Requests beyond
// max_connections wait as pending, up to max_pending_requests, and go on
// when a connection frees up.
func TestCircuitBreakers(t *testing.T) {
	authz := startFakeAuthz(t)
	tests := []struct {
		name       string
		thresholds string
		held       int // requests that reach the upstream and wait there
		pending    int // requests then waiting in the gateway
	}{
		{"max_requests", "- {max_requests: 2}", 2, 0},
		{"max_connections and max_pending_requests", "- {max_connections: 2, max_pending_requests: 1}", 2, 1},
		{"no pending allowed", "- {max_connections: 1, max_pending_requests: 0}", 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := startGate(t)
			g, logs := startLoggedGateway(t, shippedWith(t, booksBreaker, tt.thresholds), map[string]string{"authz": authz.addr, "books": up.addr()})
			base := "http://" + g.Addr().String()
			results := make(chan result, tt.held+tt.pending)
			for range tt.held {
				go func() { results <- send("GET", base+"/books") }()
			}
			up.waitArrived(t, tt.held)
			for range tt.pending {
				go func() { results <- send("GET", base+"/books") }()
			}
			waitPending(t, g.clusters["books"].breaker, tt.pending)

			res := send("GET", base+"/books")
			if res.err != nil || res.status != 503 || res.body != bodyOverflow || res.header.Get("X-Envoy-Overloaded") != "true" {
				t.Errorf("GET /books over the limit = %d %q x-envoy-overloaded %q (%v), want 503 %q with x-envoy-overloaded: true",
					res.status, res.body, res.header.Get("X-Envoy-Overloaded"), res.err, bodyOverflow)
			}
			close(up.release)
			for range tt.held + tt.pending {
				if r := <-results; r.err != nil || r.status != 200 {
					t.Errorf("an admitted request got %d (%v), want 200", r.status, r.err)
				}
			}
			if n := len(up.arrived); n != tt.pending {
				t.Errorf("%d more requests reached books after the release, want the %d pending ones", n, tt.pending)
			}
			if res := send("GET", base+"/books"); res.status != 200 {
				t.Errorf("GET /books after the load = %d (%v), want 200", res.status, res.err)
			}
			flags := logs.requestFlags(t)
			if n := strings.Count(strings.Join(flags, " "), "UO"); n != 1 {
				t.Errorf("request log flags %q: %d UO, want 1", flags, n)
			}
		})
	}
}

// TestCircuitBreakerDefaults: under Envoy's default limits 1024 requests
// are admitted at once and the 1025th waits as pending, until it gives up.
func TestCircuitBreakerDefaults(t *testing.T) {
	b := newBreaker("books", defaultThresholds, false)
	for i := range 1024 {
		if err := b.acquire(context.Background(), nil); err != nil {
			t.Fatalf("request %d: acquire = %v, want admitted under the default limits", i+1, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.acquire(ctx, nil) }()
	waitPending(t, b, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("pending acquire after cancel = %v, want context.Canceled", err)
	}
	if a, p := b.counts(); a != 1024 || p != 0 {
		t.Errorf("after a cancelled wait: %d active, %d pending; want 1024, 0", a, p)
	}
}

// TestBreakerHandOff: a released connection goes to the oldest pending
// request, and one that gave up is skipped.
func TestBreakerHandOff(t *testing.T) {
	b := newBreaker("books", thresholds{maxConnections: 1, maxPendingRequests: 3, maxRequests: 10}, false)
	if err := b.acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	gaveUp, cancel := context.WithCancel(context.Background())
	order := make(chan string, 3)
	var wg sync.WaitGroup
	for i, name := range []string{"first", "quitter", "second"} {
		ctx := context.Background()
		if name == "quitter" {
			ctx = gaveUp
		}
		wg.Go(func() {
			if err := b.acquire(ctx, nil); err != nil {
				order <- name + ": " + err.Error()
				return
			}
			order <- name
			b.release()
		})
		waitPending(t, b, i+1)
	}
	if err := b.acquire(context.Background(), nil); !errors.Is(err, errOverflow) {
		t.Errorf("acquire with 3 pending = %v, want overflow", err)
	}
	cancel()
	if got := <-order; got != "quitter: context canceled" {
		t.Fatalf("first to finish = %q, want the cancelled waiter", got)
	}
	b.release()
	wg.Wait()
	close(order)
	var got []string
	for s := range order {
		got = append(got, s)
	}
	if want := []string{"first", "second"}; !cmp.Equal(got, want) {
		t.Errorf("pending requests served in order %q, want %q", got, want)
	}
	if a, p := b.counts(); a != 0 || p != 0 {
		t.Errorf("at the end: %d active, %d pending; want 0, 0", a, p)
	}
}

// TestAuthzCircuitBreaker: the Check call goes through the authz
// cluster's circuit breakers like Envoy's envoy_grpc client; an overflow
// is an error, answered with status_on_error, and authz is not called.
func TestAuthzCircuitBreaker(t *testing.T) {
	authz := startFakeAuthz(t)
	entered, release := make(chan struct{}, 10), make(chan struct{})
	authz.set(func(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return allow(), nil
	})
	books := startUpstream(t, "books")
	b, err := envoy.ValidateYAML(bytes.Replace(
		edit(t, "- {max_requests: 1024}", "- {max_requests: 1}"),
		[]byte("timeout: 0.5s"), []byte("timeout: 20s"), 1)) // no timeout during the test
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, b, map[string]string{"authz": authz.addr, "books": books.addr()})
	base := "http://" + g.Addr().String()
	first := make(chan result, 1)
	go func() { first <- send("GET", base+"/books") }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first Check never reached authz")
	}
	if res := send("GET", base+"/books"); res.status != 503 {
		t.Errorf("GET /books with the authz breaker open = %d (%v), want 503 (status_on_error)", res.status, res.err)
	}
	if n := len(authz.calls()); n != 1 {
		t.Errorf("authz got %d Checks, want 1: the second must not be sent", n)
	}
	close(release)
	if res := <-first; res.status != 200 {
		t.Errorf("the admitted request = %d (%v), want 200", res.status, res.err)
	}
	if n := len(books.requests()); n != 1 {
		t.Errorf("books saw %d requests, want 1", n)
	}
}

// TestAuthzReconnect: after an authz outage the gateway allows requests
// again as soon as authz is back, not after a long reconnect backoff.
// Envoy opens a connection for a request that finds none; the gateway
// must not wait out a gRPC backoff that grew during the outage.
func TestAuthzReconnect(t *testing.T) {
	fa := &fakeAuthz{fn: func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) { return allow(), nil }}
	serve := func(addr string) *grpc.Server {
		t.Helper()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen on %s: %v", addr, err)
		}
		s := grpc.NewServer()
		authv3.RegisterAuthorizationServer(s, fa)
		healthpb.RegisterHealthServer(s, health.NewServer())
		go s.Serve(ln)
		t.Cleanup(s.Stop)
		fa.addr = ln.Addr().String()
		return s
	}
	first := serve("127.0.0.1:0")
	books := startUpstream(t, "books")
	b, err := envoy.LoadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, b, map[string]string{"authz": fa.addr, "books": books.addr()})
	url := "http://" + g.Addr().String() + "/books"
	if res := send("GET", url); res.status != 200 {
		t.Fatalf("GET /books before the outage = %d (%v), want 200", res.status, res.err)
	}

	first.Stop()
	// While authz is down its address accepts connections and drops them
	// at once, so the test sees every connection attempt the gateway
	// makes.
	closer, err := net.Listen("tcp", fa.addr)
	if err != nil {
		t.Fatal(err)
	}
	attempts := make(chan time.Time, 10000)
	go func() {
		for {
			c, err := closer.Accept()
			if err != nil {
				return
			}
			attempts <- time.Now()
			c.Close()
		}
	}()
	// Long enough for a gRPC backoff growing 1.6x from 100ms to pass 2s
	// between attempts; every request meanwhile fails closed.
	for start := time.Now(); time.Since(start) < 4*time.Second; time.Sleep(50 * time.Millisecond) {
		if res := send("GET", url); res.status != 503 {
			t.Fatalf("GET /books with authz down = %d (%v), want 503", res.status, res.err)
		}
	}
	// Bring authz back right after a failed connection attempt, when the
	// wait for the next one is longest.
	for len(attempts) > 0 {
		<-attempts
	}
	select {
	case <-attempts:
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway stopped trying to reach authz")
	}
	closer.Close()
	back := time.Now()
	serve(fa.addr)
	const bound = 1500 * time.Millisecond
	for {
		res := send("GET", url)
		if res.status == 200 {
			break
		}
		if time.Since(back) > bound {
			t.Fatalf("GET /books %v after authz came back = %d (%v), want 200 within %v", time.Since(back).Round(time.Millisecond), res.status, res.err, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("allowed again %v after authz came back", time.Since(back).Round(time.Millisecond))
}
