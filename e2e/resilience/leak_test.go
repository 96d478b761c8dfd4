package resilience

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/books"
	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/envoy/gateway"
	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/issuer"
)

// TestNoLeaks starts each service in this process, serves real requests
// with it, stops it, and checks that no goroutine it started outlives
// it: the per-service half of "no leaks" (the soak's half is the usage
// check every scenario makes on the processes).
func TestNoLeaks(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	ctx := context.Background()

	// startIssuer runs an issuer on a loopback port; stop shuts it down.
	startIssuer := func(t *testing.T) (url string, stop func()) {
		dir := t.TempDir()
		if _, _, err := issuer.GenerateKeyFile(filepath.Join(dir, "keys"), issuer.ES256); err != nil {
			t.Fatal(err)
		}
		cfg := issuer.DefaultConfig()
		cfg.DataDir, cfg.DB, cfg.KeyDir, cfg.KeyPollInterval = dir, filepath.Join(dir, "issuer.db"), filepath.Join(dir, "keys"), 10*time.Millisecond
		cfg.IssuerURL, cfg.AdminPassword, cfg.JWKSMaxAge = IssuerURL, "an admin password", time.Second
		svc, err := issuer.New(ctx, cfg, quiet, server.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(svc.Handler())
		return srv.URL, func() {
			srv.Close()
			if err := svc.Close(); err != nil {
				t.Errorf("issuer Close: %v", err)
			}
		}
	}

	t.Run("issuer", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		url, stop := startIssuer(t)
		defer stop()
		c := NewAPIClient(url)
		defer c.HTTP.CloseIdleConnections()
		u := NewUser("leak")
		if err := c.Register(ctx, u); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Login(ctx, u); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // a few key directory polls
	})

	t.Run("books", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		cfg := books.DefaultConfig()
		cfg.DB = filepath.Join(t.TempDir(), "books.db")
		svc, err := books.New(ctx, cfg, quiet, server.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(svc.Handler())
		defer func() {
			srv.Close()
			if err := svc.Close(); err != nil {
				t.Errorf("books Close: %v", err)
			}
		}()
		c := NewAPIClient(srv.URL)
		defer c.HTTP.CloseIdleConnections()
		id := "9b2c3e1a-0000-4000-8000-000000000001"
		if _, err := c.do(ctx, http.MethodPost, "/books", NewBookInput(1), IdentityHeader(id, "user"), nil, http.StatusCreated); err != nil {
			t.Fatal(err)
		}
		if _, err := c.do(ctx, http.MethodGet, "/books", nil, IdentityHeader(id, "user"), nil, http.StatusOK); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("authz", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		url, stopIssuer := startIssuer(t)
		defer stopIssuer()
		cfg := authz.DefaultConfig()
		cfg.Issuer, cfg.JWKSURL, cfg.CacheSize = IssuerURL, url+"/.well-known/jwks.json", 100
		cfg.MinRefresh, cfg.MaxRefresh = 10*time.Millisecond, 20*time.Millisecond
		srv, err := authz.New(ctx, cfg, quiet, server.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		gs := grpc.NewServer(authz.ServerOptions()...)
		srv.RegisterGRPC(gs)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- gs.Serve(l) }()
		defer func() {
			gs.GracefulStop()
			<-served
		}()
		hs := httptest.NewServer(srv.HTTPHandler())
		defer hs.Close()
		if err := Retry(ctx, 10*time.Second, func() error { return srv.Ready(ctx) }); err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		resp, err := authv3.NewAuthorizationClient(cc).Check(ctx, &authv3.CheckRequest{})
		if err != nil || resp.GetStatus().GetCode() == 0 {
			t.Fatalf("Check(no token) = %v, %v; want a denial", resp.GetStatus(), err)
		}
		r, err := http.Get(hs.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		http.DefaultClient.CloseIdleConnections()
		time.Sleep(50 * time.Millisecond) // a few background refreshes
	})

	t.Run("gateway", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		root, err := ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		b, err := envoy.LoadFile(filepath.Join(root, "envoy", "envoy.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		// Upstreams that refuse every connection: the gateway answers
		// for them, and must not leave its retries behind.
		dead := func() string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			a := l.Addr().String()
			l.Close()
			return a
		}
		opts := gateway.DefaultOptions()
		opts.ListenAddr, opts.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
		opts.Endpoints = map[string]string{"issuer": dead(), "books": dead(), "authz": dead()}
		g, err := gateway.New(b, opts)
		if err != nil {
			t.Fatal(err)
		}
		l, adminL, err := g.Listen()
		if err != nil {
			t.Fatal(err)
		}
		gctx, stop := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- g.Serve(gctx, l, adminL) }()
		c := NewAPIClient("http://" + l.Addr().String())
		defer c.HTTP.CloseIdleConnections()
		for _, rq := range []struct {
			method, path string
			want         int
		}{
			{http.MethodGet, "/books", http.StatusServiceUnavailable},  // authz down: fail closed
			{http.MethodPost, "/login", http.StatusServiceUnavailable}, // issuer down
			{http.MethodGet, "/nowhere", http.StatusNotFound},
		} {
			if _, err := c.do(ctx, rq.method, rq.path, nil, nil, nil, rq.want); err != nil {
				t.Error(err)
			}
		}
		admin := NewAPIClient("http://" + adminL.Addr().String())
		defer admin.HTTP.CloseIdleConnections()
		if _, err := admin.do(ctx, http.MethodGet, "/ready", nil, nil, nil, http.StatusOK); err != nil {
			t.Error(err)
		}
		stop()
		if err := <-served; err != nil {
			t.Errorf("gateway Serve = %v, want nil after its context ended", err)
		}
	})
}
