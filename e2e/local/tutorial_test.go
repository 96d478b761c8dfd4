package local

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/tutorial"
	"github.com/tollgate-dev/tollgate/issuer"
	"github.com/tollgate-dev/tollgate/stack"
)

// user is the tutorial's user.json.
type user struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

func readUser(t *testing.T) user {
	t.Helper()
	var u user
	data, err := os.ReadFile(filepath.Join("testdata", "user.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &u); err != nil {
		t.Fatalf("testdata/user.json: %v", err)
	}
	return u
}

func readBook(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "book1.json"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// clock is the issuer's clock, which a test can move to mint tokens that
// are already expired.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *clock) set(d time.Duration) { c.offset.Store(int64(d)) }

// syncBuffer collects the stack's logs, shown when a test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startStack starts the whole stack on ephemeral loopback ports with a
// fresh data directory, behind the dev gateway running envoy/envoy.yaml;
// adjust changes the issuer's configuration.
func startStack(t *testing.T, c *clock, adjust ...func(*issuer.Config)) *stack.Stack {
	t.Helper()
	cfg, logs := loopbackStack(t)
	cfg.IssuerConfig = func(ic *issuer.Config) {
		if c != nil {
			ic.Now = c.now
		}
		for _, f := range adjust {
			f(ic)
		}
	}
	return startConfigured(t, cfg, logs)
}

// loopbackStack is a stack configuration on ephemeral loopback ports in
// a fresh directory, behind the dev gateway running envoy/envoy.yaml,
// logging into the buffer it returns.
func loopbackStack(t *testing.T) (stack.Config, *syncBuffer) {
	logs := &syncBuffer{}
	cfg := stack.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.GatewayConfig = filepath.Join("..", "..", "envoy", "envoy.yaml")
	cfg.GatewayAddr, cfg.GatewayAdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.IssuerAddr, cfg.BooksAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.AuthzGRPCAddr, cfg.AuthzHTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.ShutdownTimeout = 5 * time.Second
	return cfg, logs
}

// startConfigured starts a stack with cfg and shuts it down when the
// test ends, showing its logs if the test failed.
func startConfigured(t *testing.T, cfg stack.Config, logs *syncBuffer) *stack.Stack {
	t.Helper()
	st, err := stack.Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("stack.Start: %v\nlogs:\n%s", err, logs)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := st.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("stack logs:\n%s", logs)
		}
	})
	return st
}

// get sends one request through the gateway and returns its status.
func get(t *testing.T, client *http.Client, method, url string, header ...string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestTutorial runs the tutorial's flow through the gateway as its user
// would, then takes parts of the stack away under it.
func TestTutorial(t *testing.T) {
	c := &clock{}
	st := startStack(t, c)
	base := st.GatewayURL()
	client := &http.Client{Timeout: 10 * time.Second}
	u := readUser(t)
	adminName, adminPassword := st.Admin()

	t.Run("authz holds the keys once the stack is ready", func(t *testing.T) {
		// Start returned, so authz must answer ready at once.
		if got := get(t, client, "GET", "http://"+st.Addrs().AuthzHTTP+"/readyz"); got != http.StatusOK {
			t.Fatalf("GET authz /readyz right after Start = %d, want 200", got)
		}
	})

	opts := tutorial.Options{
		Name: u.Name, Password: u.Password,
		AdminName: adminName, AdminPassword: adminPassword,
		Book: readBook(t),
	}
	for _, step := range tutorial.Steps(base, client, opts) {
		if !t.Run(step.Name, func(t *testing.T) {
			if err := step.Run(t.Context()); err != nil {
				t.Fatal(err)
			}
		}) {
			t.FailNow()
		}
	}

	t.Run("expired token is 401", func(t *testing.T) {
		ctx := t.Context()
		// Issued 2h ago with the default 45m lifetime: expired well past
		// authz's leeway, yet signed by the issuer's current key.
		c.set(-2 * time.Hour)
		token, err := tutorial.Login(ctx, base, client, u.Name, u.Password)
		c.set(0)
		if err != nil {
			t.Fatal(err)
		}
		if err := tutorial.Unauthenticated(ctx, base, client, token); err != nil {
			t.Errorf("expired token: %v", err)
		}
		// The same user, logged in now, gets through: only the expiry
		// was wrong.
		fresh, err := tutorial.Login(ctx, base, client, u.Name, u.Password)
		if err != nil {
			t.Fatal(err)
		}
		if got := get(t, client, "GET", base+"/books", "x-access-tokens", fresh); got != http.StatusOK {
			t.Errorf("GET /books with a fresh token = %d, want 200", got)
		}
	})

	t.Run("issuer stopped: tokens still verify, login fails", func(t *testing.T) {
		ctx := t.Context()
		token, err := tutorial.Login(ctx, base, client, u.Name, u.Password)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Stop(ctx, stack.Issuer); err != nil {
			t.Fatalf("Stop(issuer): %v", err)
		}
		// authz verifies with the key set it holds.
		if got := get(t, client, "GET", base+"/books", "x-access-tokens", token); got != http.StatusOK {
			t.Errorf("GET /books with the issuer stopped = %d, want 200", got)
		}
		if _, err := tutorial.Login(ctx, base, client, u.Name, u.Password); err == nil {
			t.Errorf("Login with the issuer stopped succeeded, want an error")
		}
		if err := st.Start(ctx, stack.Issuer); err != nil {
			t.Fatalf("Start(issuer): %v", err)
		}
		if _, err := tutorial.Login(ctx, base, client, u.Name, u.Password); err != nil {
			t.Errorf("Login after the issuer restarted: %v", err)
		}
	})

	t.Run("authz stopped: protected routes fail closed, public ones work", func(t *testing.T) {
		ctx := t.Context()
		token, err := tutorial.Login(ctx, base, client, u.Name, u.Password)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Stop(ctx, stack.Authz); err != nil {
			t.Fatalf("Stop(authz): %v", err)
		}
		// envoy.yaml sets status_on_error 503.
		if err := tutorial.FailClosedStatus(ctx, base, client, token, http.StatusServiceUnavailable); err != nil {
			t.Errorf("with authz stopped: %v", err)
		}
		if err := tutorial.Public(ctx, base, client); err != nil {
			t.Errorf("public routes with authz stopped: %v", err)
		}

		if err := st.Start(ctx, stack.Authz); err != nil {
			t.Fatalf("Start(authz): %v", err)
		}
		// The gateway reconnects with backoff; give it a bounded while.
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := get(t, client, "GET", base+"/books", "x-access-tokens", token)
			if got == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /books after authz restarted = %d, want 200 within 20s", got)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Recovered, and still checking.
		if got := get(t, client, "GET", base+"/books"); got != http.StatusUnauthorized {
			t.Errorf("GET /books without a token after authz restarted = %d, want 401", got)
		}
		if err := tutorial.Run(ctx, base, client, tutorial.Options{}); err != nil {
			t.Errorf("the flow after authz restarted: %v", err)
		}
	})

	t.Run("no part of the stack failed", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		if err := st.Wait(ctx); err != nil {
			t.Errorf("Wait = %v, want nil: stopping and starting parts is no failure", err)
		}
	})
}
