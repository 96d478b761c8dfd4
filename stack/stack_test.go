package stack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/envoy/gateway"
	"github.com/tollgate-dev/tollgate/internal/tutorial"
)

// fakeEnvoyEnv makes the test binary act as envoy: TestEnvoyProcess runs
// it as Config.EnvoyBinary, so the real child-process path runs without
// an envoy binary on the machine.
const fakeEnvoyEnv = "TOLLGATE_STACK_FAKE_ENVOY"

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnvoyEnv) == "1" {
		os.Exit(fakeEnvoy(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeEnvoy takes envoy's command line as the stack gives it, loads the
// bootstrap as strictly as envoy would, and serves it with the dev
// gateway exactly as written (no address overrides) until SIGTERM. It
// writes its pid beside the bootstrap.
func fakeEnvoy(args []string) int {
	want := []string{"-c", "", "--disable-hot-restart", "--log-level", "warn"}
	if len(args) != len(want) || args[0] != "-c" || strings.Join(args[2:], " ") != strings.Join(want[2:], " ") {
		fmt.Fprintf(os.Stderr, "fake envoy: unexpected arguments %q\n", args)
		return 2
	}
	b, err := envoy.LoadFile(args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake envoy: %v\n", err)
		return 1
	}
	g, err := gateway.New(b, gateway.DefaultOptions())
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake envoy: %v\n", err)
		return 1
	}
	l, admin, err := g.Listen()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake envoy: %v\n", err)
		return 1
	}
	pid := filepath.Join(filepath.Dir(args[1]), "fake-envoy.pid")
	if err := os.WriteFile(pid, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "fake envoy: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := g.Serve(ctx, l, admin); err != nil {
		fmt.Fprintf(os.Stderr, "fake envoy: %v\n", err)
		return 1
	}
	return 0
}

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the logged records, in order.
func (b *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testConfig is a stack on ephemeral loopback ports in a fresh directory.
func testConfig(t *testing.T, logs *logBuffer) Config {
	c := DefaultConfig()
	c.DataDir = t.TempDir()
	c.GatewayConfig = filepath.Join("..", "envoy", "envoy.yaml")
	c.GatewayAddr = "127.0.0.1:0"
	c.GatewayAdminAddr = "127.0.0.1:0"
	c.IssuerAddr = "127.0.0.1:0"
	c.BooksAddr = "127.0.0.1:0"
	c.AuthzGRPCAddr = "127.0.0.1:0"
	c.AuthzHTTPAddr = "127.0.0.1:0"
	c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	c.ShutdownTimeout = 5 * time.Second
	return c
}

func start(t *testing.T, cfg Config, logs *logBuffer) *Stack {
	t.Helper()
	st, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start: %v\nlogs:\n%s", err, logs)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st.Shutdown(ctx)
		if t.Failed() {
			t.Logf("logs:\n%s", logs)
		}
	})
	return st
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// freeAddr returns a loopback address with a port nothing listens on
// right now, for envoy, which must be told its ports.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// slowTransport delays every request.
type slowTransport struct{ delay time.Duration }

func (s slowTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	select {
	case <-time.After(s.delay):
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestDefaultServiceAddrsAreLoopback(t *testing.T) {
	cfg := DefaultConfig()
	for name, addr := range map[string]string{
		"issuer": cfg.IssuerAddr, "books": cfg.BooksAddr, "authz gRPC": cfg.AuthzGRPCAddr, "authz HTTP": cfg.AuthzHTTPAddr,
	} {
		host, _, err := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			t.Errorf("default %s address = %q, want loopback: the services trust the gateway's identity headers", name, addr)
		}
	}
}

func TestAdminPassword(t *testing.T) {
	t.Run("generated once, owner only", func(t *testing.T) {
		dir := t.TempDir()
		p1, file, err := adminPassword(dir, "")
		if err != nil {
			t.Fatal(err)
		}
		if file != filepath.Join(dir, AdminPasswordFile) {
			t.Errorf("adminPassword file = %q, want %q", file, filepath.Join(dir, AdminPasswordFile))
		}
		if len(p1) < 20 {
			t.Errorf("generated password %q is too short", p1)
		}
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("admin password file mode = %o, want 600", mode)
		}
		p2, _, err := adminPassword(dir, "")
		if err != nil || p2 != p1 {
			t.Errorf("second adminPassword = %q, %v; want the stored %q", p2, err, p1)
		}
	})
	t.Run("given password wins and is not stored", func(t *testing.T) {
		dir := t.TempDir()
		p, file, err := adminPassword(dir, "a given passphrase")
		if err != nil || p != "a given passphrase" || file != "" {
			t.Errorf("adminPassword(given) = %q, %q, %v; want the given password and no file", p, file, err)
		}
		if _, err := os.Stat(filepath.Join(dir, AdminPasswordFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("admin password file exists after a given password (stat: %v)", err)
		}
	})
	t.Run("edited file keeps its password without the newline", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, AdminPasswordFile), []byte("chosen by hand\n"), 0o600)
		if p, _, err := adminPassword(dir, ""); err != nil || p != "chosen by hand" {
			t.Errorf("adminPassword = %q, %v; want %q", p, err, "chosen by hand")
		}
	})
	t.Run("empty file is an error", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, AdminPasswordFile), []byte("\n"), 0o600)
		if p, _, err := adminPassword(dir, ""); err == nil {
			t.Errorf("adminPassword(empty file) = %q, nil; want an error", p)
		}
	})
}

// TestLifecycle starts the stack, checks it is ready when Start returns,
// stops and starts a component, and shuts down in order.
func TestLifecycle(t *testing.T) {
	logs := &logBuffer{}
	cfg := testConfig(t, logs)
	// A slow key fetch: a Start that did not wait for authz's keys would
	// return while authz is still unready.
	cfg.AuthzConfig = func(c *authz.Config) {
		c.HTTPClient = &http.Client{Transport: slowTransport{delay: 300 * time.Millisecond}}
	}
	st := start(t, cfg, logs)
	a := st.Addrs()
	ctx := t.Context()

	// Ready means authz has the keys, not just that it listens.
	if got := status(t, "http://"+a.AuthzHTTP+"/readyz"); got != http.StatusOK {
		t.Fatalf("authz /readyz right after Start = %d, want 200", got)
	}
	if _, port, _ := net.SplitHostPort(a.Gateway); st.IssuerURL() != "http://localhost:"+port {
		t.Errorf("IssuerURL = %q, want http://localhost:%s (the gateway's port)", st.IssuerURL(), port)
	}

	if err := st.Stop(ctx, "nonesuch"); err == nil {
		t.Errorf("Stop(unknown component) = nil, want an error")
	}
	if err := st.Start(ctx, Books); err == nil {
		t.Errorf("Start(running books) = nil, want an error")
	}
	if err := st.Stop(ctx, Books); err != nil {
		t.Fatalf("Stop(books): %v", err)
	}
	if err := st.Stop(ctx, Books); !errors.Is(err, errNotRunning) {
		t.Errorf("Stop(stopped books) = %v, want %v", err, errNotRunning)
	}
	if _, err := http.Get("http://" + a.Books + "/healthz"); err == nil {
		t.Errorf("books still answers after Stop")
	}
	if err := st.Start(ctx, Books); err != nil {
		t.Fatalf("Start(books): %v", err)
	}
	if st.Addrs().Books != a.Books {
		t.Errorf("books restarted on %s, want its old address %s", st.Addrs().Books, a.Books)
	}
	if got := status(t, "http://"+a.Books+"/readyz"); got != http.StatusOK {
		t.Errorf("books /readyz after Start = %d, want 200", got)
	}

	before := len(logs.lines(t))
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := st.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// The gateway drains before any service stops serving.
	gateway, firstService := -1, -1
	for i, l := range logs.lines(t)[before:] {
		switch {
		case l["msg"] == "shutting down" && l["component"] == "gateway":
			gateway = i
		case l["msg"] == "shutting down" && firstService < 0:
			firstService = i
		}
	}
	if gateway < 0 || firstService < 0 || gateway > firstService {
		t.Errorf("shutdown order: gateway at log line %d, first service at %d; want the gateway first", gateway, firstService)
	}
	// The gateway stopping is no failure once Shutdown began.
	wctx, wcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer wcancel()
	if err := st.Wait(wctx); err != nil {
		t.Errorf("Wait after Shutdown = %v, want nil", err)
	}
}

func TestNoGateway(t *testing.T) {
	logs := &logBuffer{}
	cfg := testConfig(t, logs)
	cfg.Gateway = NoGateway
	st := start(t, cfg, logs)
	if a := st.Addrs(); a.Gateway != "" || a.GatewayAdmin != "" || st.GatewayURL() != "" {
		t.Errorf("with NoGateway: gateway %q, admin %q, URL %q; want none", a.Gateway, a.GatewayAdmin, st.GatewayURL())
	}
	// The iss a user's own Envoy on the contract's port implies.
	if got, want := st.IssuerURL(), "http://localhost:8080"; got != want {
		t.Errorf("IssuerURL = %q, want %q", got, want)
	}
	if got := status(t, "http://"+st.Addrs().AuthzHTTP+"/readyz"); got != http.StatusOK {
		t.Errorf("authz /readyz = %d, want 200", got)
	}
}

// TestEnvoyProcess runs the gateway as a child process the way -envoy
// does, with the test binary standing in for envoy (it loads the
// bootstrap the stack wrote and serves it as written).
func TestEnvoyProcess(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeEnvoyEnv, "1")
	envoyConfig := func(t *testing.T, logs *logBuffer) Config {
		cfg := testConfig(t, logs)
		cfg.Gateway = EnvoyProcess
		cfg.EnvoyBinary = exe
		cfg.EnvoyOutput = logs
		cfg.GatewayAddr, cfg.GatewayAdminAddr = freeAddr(t), freeAddr(t)
		return cfg
	}

	t.Run("the tutorial through it, then a clean stop", func(t *testing.T) {
		logs := &logBuffer{}
		cfg := envoyConfig(t, logs)
		st := start(t, cfg, logs)
		if st.Addrs().Gateway != cfg.GatewayAddr {
			t.Errorf("gateway address = %s, want %s", st.Addrs().Gateway, cfg.GatewayAddr)
		}
		fi, err := os.Stat(filepath.Join(cfg.DataDir, EnvoyBootstrapFile))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("bootstrap file mode = %o, want 600", fi.Mode().Perm())
		}
		client := &http.Client{Timeout: 10 * time.Second}
		name, password := st.Admin()
		if err := tutorial.Run(t.Context(), st.GatewayURL(), client, tutorial.Options{AdminName: name, AdminPassword: password}); err != nil {
			t.Fatalf("tutorial through envoy: %v", err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		if err := st.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v, want a clean stop of envoy and the services", err)
		}
		if _, err := http.Get(st.GatewayURL() + "/.well-known/jwks.json"); err == nil {
			t.Errorf("envoy still answers after Shutdown")
		}
	})

	t.Run("envoy dying fails the stack", func(t *testing.T) {
		logs := &logBuffer{}
		cfg := envoyConfig(t, logs)
		st := start(t, cfg, logs)
		data, err := os.ReadFile(filepath.Join(cfg.DataDir, "fake-envoy.pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(string(data))
		if err != nil {
			t.Fatal(err)
		}
		p, err := os.FindProcess(pid)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := st.Wait(ctx); err == nil {
			t.Errorf("Wait after envoy was killed = nil, want the failure")
		}
	})

	t.Run("port 0 is refused", func(t *testing.T) {
		logs := &logBuffer{}
		cfg := envoyConfig(t, logs)
		cfg.GatewayAddr = "127.0.0.1:0"
		if st, err := Start(t.Context(), cfg); err == nil {
			st.Shutdown(context.Background())
			t.Errorf("Start(envoy on port 0) = nil error, want a refusal")
		}
	})
}

// TestStartFailureLeavesNothingRunning fails Start after the gateway, the
// issuer and books are up (authz refuses its config): all of them must be
// stopped, their ports free again.
func TestStartFailureLeavesNothingRunning(t *testing.T) {
	logs := &logBuffer{}
	cfg := testConfig(t, logs)
	cfg.IssuerAddr, cfg.BooksAddr, cfg.GatewayAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	cfg.AuthzConfig = func(c *authz.Config) { c.Leeway = -time.Second }
	st, err := Start(t.Context(), cfg)
	if err == nil {
		st.Shutdown(context.Background())
		t.Fatal("Start(authz with a negative leeway) = nil error, want the failure")
	}
	for _, addr := range []string{cfg.IssuerAddr, cfg.BooksAddr, cfg.GatewayAddr} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("after a failed Start, %s is still taken: %v", addr, err)
			continue
		}
		l.Close()
	}
}
