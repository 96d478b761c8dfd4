package tutorial_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/books"
	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/envoy/gateway"
	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/internal/tutorial"
	"github.com/tollgate-dev/tollgate/issuer"
)

const (
	issuerURL     = "http://tollgate.test"
	adminName     = "admin"
	adminPassword = "an admin passphrase"
)

// stack is the whole Tollgate stack in this process, behind the dev
// gateway loaded from envoy/envoy.yaml.
type stack struct {
	gatewayURL string
	booksURL   string
	grpc       *grpc.Server
}

// startStack starts issuer, books and authz on ephemeral ports and the dev
// gateway in front of them; misconfigure, when not nil, edits the HTTP
// connection manager of envoy/envoy.yaml first, as a misconfigured
// gateway would have it.
func startStack(t *testing.T, misconfigure func(*hcmv3.HttpConnectionManager)) *stack {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()

	icfg := issuer.DefaultConfig()
	icfg.DataDir, icfg.DB = dir, filepath.Join(dir, "issuer.db")
	icfg.IssuerURL, icfg.AdminName, icfg.AdminPassword = issuerURL, adminName, adminPassword
	iss, err := issuer.New(ctx, icfg, nil, server.NewRegistry())
	if err != nil {
		t.Fatalf("issuer.New: %v", err)
	}
	t.Cleanup(func() { iss.Close() })
	issSrv := httptest.NewServer(iss.Handler())
	t.Cleanup(issSrv.Close)

	bcfg := books.DefaultConfig()
	bcfg.DB = filepath.Join(dir, "books.db")
	bk, err := books.New(ctx, bcfg, nil, server.NewRegistry())
	if err != nil {
		t.Fatalf("books.New: %v", err)
	}
	t.Cleanup(func() { bk.Close() })
	booksSrv := httptest.NewServer(bk.Handler())
	t.Cleanup(booksSrv.Close)

	acfg := authz.DefaultConfig()
	acfg.Issuer, acfg.JWKSURL, acfg.CacheSize = issuerURL, issSrv.URL+"/.well-known/jwks.json", 0
	az, err := authz.New(ctx, acfg, nil, server.NewRegistry())
	if err != nil {
		t.Fatalf("authz.New: %v", err)
	}
	t.Cleanup(func() { az.Close() })
	gs := grpc.NewServer()
	az.RegisterGRPC(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	waitReady(t, az.Ready)

	b, err := envoy.LoadFile(filepath.Join("..", "..", "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if misconfigure != nil {
		editHCM(t, b.StaticResources.Listeners[0].FilterChains[0].Filters[0].GetTypedConfig(), misconfigure)
	}
	opts := gateway.DefaultOptions()
	opts.ListenAddr, opts.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	opts.Endpoints = map[string]string{
		"issuer": strings.TrimPrefix(issSrv.URL, "http://"),
		"books":  strings.TrimPrefix(booksSrv.URL, "http://"),
		"authz":  ln.Addr().String(),
	}
	gw, err := gateway.New(b, opts)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	gl, admin, err := gw.Listen()
	if err != nil {
		t.Fatalf("gateway Listen: %v", err)
	}
	gctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- gw.Serve(gctx, gl, admin) }()
	t.Cleanup(func() { stop(); <-served })
	return &stack{gatewayURL: "http://" + gl.Addr().String(), booksURL: booksSrv.URL, grpc: gs}
}

func waitReady(t *testing.T, ready func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ready(t.Context())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("authz not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// editHCM rewrites the HTTP connection manager in a with edit.
func editHCM(t *testing.T, a *anypb.Any, edit func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	hcm := &hcmv3.HttpConnectionManager{}
	if err := a.UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	edit(hcm)
	if err := a.MarshalFrom(hcm); err != nil {
		t.Fatal(err)
	}
}

// failOpen turns the ext_authz filter's failure_mode_allow on, so that it
// lets requests through when authz cannot answer.
func failOpen(t *testing.T) func(*hcmv3.HttpConnectionManager) {
	return func(hcm *hcmv3.HttpConnectionManager) {
		for _, f := range hcm.HttpFilters {
			ea := &extauthzv3.ExtAuthz{}
			if f.GetTypedConfig().MessageIs(ea) {
				if err := f.GetTypedConfig().UnmarshalTo(ea); err != nil {
					t.Fatal(err)
				}
				ea.FailureModeAllow = true
				if err := f.GetTypedConfig().MarshalFrom(ea); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// noPathNormalization turns off every path defence of the HTTP connection
// manager, so that routes match the path as the client sent it.
func noPathNormalization(hcm *hcmv3.HttpConnectionManager) {
	hcm.NormalizePath = wrapperspb.Bool(false)
	hcm.MergeSlashes = false
	hcm.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_KEEP_UNCHANGED
}

// forwardUnknown sends what no route matches to books unchecked, instead
// of answering 404.
func forwardUnknown(hcm *hcmv3.HttpConnectionManager) {
	routes := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()
	last := routes[len(routes)-1]
	last.ResponseHeadersToAdd = nil
	last.Action = &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "books"},
	}}
}

func TestTutorialThroughTheGateway(t *testing.T) {
	s := startStack(t, nil)
	client := &http.Client{Timeout: 10 * time.Second}
	opts := tutorial.Options{AdminName: adminName, AdminPassword: adminPassword}
	for _, step := range tutorial.Steps(s.gatewayURL, client, opts) {
		if !t.Run(step.Name, func(t *testing.T) {
			if err := step.Run(t.Context()); err != nil {
				t.Fatal(err)
			}
		}) {
			break
		}
	}

	t.Run("fail closed with authz stopped", func(t *testing.T) {
		ctx := t.Context()
		if err := tutorial.Register(ctx, s.gatewayURL, client, "closed-user", "a long passphrase"); err != nil {
			t.Fatal(err)
		}
		token, err := tutorial.Login(ctx, s.gatewayURL, client, "closed-user", "a long passphrase")
		if err != nil {
			t.Fatal(err)
		}
		s.grpc.Stop()
		if err := tutorial.FailClosed(ctx, s.gatewayURL, client, token); err != nil {
			t.Errorf("FailClosed with authz stopped: %v", err)
		}
	})
}

// TestFlowCatches runs the flow against gateways that each lack one
// defence: the flow must fail, naming the step that caught it.
func TestFlowCatches(t *testing.T) {
	client := &http.Client{Timeout: 10 * time.Second}

	t.Run("identity headers forwarded without a check", func(t *testing.T) {
		s := startStack(t, nil)
		gw, _ := url.Parse(s.gatewayURL)
		bk, _ := url.Parse(s.booksURL)
		toGateway, toBooks := httputil.NewSingleHostReverseProxy(gw), httputil.NewSingleHostReverseProxy(bk)
		// A front proxy that trusts a client's x-user-id, as a gateway
		// without ext_authz on that route would.
		smuggler := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("x-user-id") != "" && r.Header.Get("x-access-tokens") == "" {
				toBooks.ServeHTTP(w, r)
				return
			}
			toGateway.ServeHTTP(w, r)
		}))
		defer smuggler.Close()
		err := tutorial.Run(t.Context(), smuggler.URL, client, tutorial.Options{})
		if err == nil || !strings.Contains(err.Error(), "forged identity without a token") {
			t.Errorf("Run(through a proxy that forwards forged identities) = %v, want the forged-identity step to fail", err)
		}
	})

	t.Run("fail open", func(t *testing.T) {
		s := startStack(t, failOpen(t))
		ctx := t.Context()
		if err := tutorial.Register(ctx, s.gatewayURL, client, "open-user", "a long passphrase"); err != nil {
			t.Fatal(err)
		}
		token, err := tutorial.Login(ctx, s.gatewayURL, client, "open-user", "a long passphrase")
		if err != nil {
			t.Fatal(err)
		}
		s.grpc.Stop()
		if err := tutorial.FailClosed(ctx, s.gatewayURL, client, token); err == nil {
			t.Errorf("FailClosed(gateway with failure_mode_allow) = nil, want an error")
		}
	})

	for _, tc := range []struct {
		name         string
		misconfigure func(*hcmv3.HttpConnectionManager)
		step         string
	}{
		{"paths routed as sent", noPathNormalization, "path tricks"},
		{"unknown paths forwarded", forwardUnknown, "unknown paths are never forwarded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startStack(t, tc.misconfigure)
			err := tutorial.Run(t.Context(), s.gatewayURL, client, tutorial.Options{})
			t.Logf("Run: %v", err)
			if err == nil || !strings.HasPrefix(err.Error(), tc.step) {
				t.Errorf("Run(gateway with %s) = %v, want the step %q to fail", tc.name, err, tc.step)
			}
		})
	}

	t.Run("gateway down", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		err = tutorial.Run(t.Context(), "http://"+addr, client, tutorial.Options{})
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			t.Errorf("Run(nothing listening) = %v, want a connection error", err)
		}
	})
}
