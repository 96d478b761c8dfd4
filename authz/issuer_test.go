package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/issuer"
)

// realIssuer is an issuer.Service serving on a loopback port.
type realIssuer struct {
	url    string
	keyDir string
	svc    *issuer.Service
	http   *http.Server
	done   chan struct{}
}

func startIssuer(t *testing.T, activation time.Duration) *realIssuer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ri := &realIssuer{url: "http://" + l.Addr().String(), keyDir: filepath.Join(dir, "keys"), done: make(chan struct{})}
	if _, _, err := issuer.GenerateKeyFile(ri.keyDir, issuer.ES256); err != nil {
		t.Fatal(err)
	}
	cfg := issuer.DefaultConfig()
	cfg.DataDir, cfg.DB = dir, filepath.Join(dir, "issuer.db")
	cfg.IssuerURL, cfg.Audience, cfg.KeyDir = ri.url, testAudience, ri.keyDir
	cfg.KeyPollInterval, cfg.KeyActivationDelay, cfg.JWKSMaxAge = 20*time.Millisecond, activation, time.Second
	cfg.AdminName, cfg.AdminPassword = "root", "an admin password that is long"
	ri.svc, err = issuer.New(context.Background(), cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("issuer.New: %v", err)
	}
	ri.http = &http.Server{Handler: ri.svc.Handler()}
	go func() {
		defer close(ri.done)
		ri.http.Serve(l)
	}()
	t.Cleanup(ri.stop)
	waitFor(t, "issuer ready", func() bool { return ri.svc.Ready(context.Background()) == nil })
	return ri
}

// stop shuts the issuer down; idempotent.
func (ri *realIssuer) stop() {
	select {
	case <-ri.done:
		return
	default:
	}
	ri.http.Close()
	<-ri.done
	ri.svc.Close()
}

func (ri *realIssuer) register(t *testing.T, name, password string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name, "password": password})
	resp, err := http.Post(ri.url+"/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /register = %d, want 201", resp.StatusCode)
	}
}

func (ri *realIssuer) login(t *testing.T, name, password string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", ri.url+"/login", nil)
	req.SetBasicAuth(name, password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /login = %d, want 200", resp.StatusCode)
	}
	var tr struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatal(err)
	}
	return tr.Token
}

// unverified reads a token's kid and claims without checking it, to
// build the expected response.
func unverified(t *testing.T, tok string) (kid string, c jwt.MapClaims) {
	t.Helper()
	c = jwt.MapClaims{}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, c)
	if err != nil {
		t.Fatal(err)
	}
	kid, _ = parsed.Header["kid"].(string)
	return kid, c
}

func wantAllowFor(t *testing.T, tok, name, roles string) (*authv3.CheckResponse, string) {
	t.Helper()
	_, c := unverified(t, tok)
	return wantAllow(c["sub"].(string), name, roles, c["jti"].(string)), c["sub"].(string)
}

// TestAgainstRealIssuer: register and log in at a real issuer, check the
// token; rotate the issuer's key and see new tokens pass without a
// restart; stop the issuer and see the loaded keys keep working.
func TestAgainstRealIssuer(t *testing.T) {
	const activation = 300 * time.Millisecond
	ri := startIssuer(t, activation)
	// Keys found through the issuer's discovery document; the background
	// refresh is the only way to learn a new key (no unknown-kid
	// refetch within the hour), and there is no token cache, so every
	// check below uses the key set.
	e := newTestEnvWithJWKS(t, Config{
		Issuer:          ri.url,
		JWKSURL:         "-",
		CacheSize:       0,
		MinRefresh:      20 * time.Millisecond,
		MaxRefresh:      50 * time.Millisecond,
		RefetchInterval: time.Hour,
	}, nil)
	e.waitReady()

	ri.register(t, "alice", "a long enough password")
	alice := ri.login(t, "alice", "a long enough password")
	root := ri.login(t, "root", "an admin password that is long")
	check := func(name, tok string, ext map[string]string, want *authv3.CheckResponse) {
		t.Helper()
		got := e.check(envoyRequest("GET", "/books", bearer(tok), ext))
		if diff := diffResponse(want, got); diff != "" {
			t.Errorf("Check(%s) = %s, want %s (%v); diff (-want +got):\n%s", name, describe(got), describe(want), e.logs.lastCheck(t)["err"], diff)
		}
	}
	aliceOK, _ := wantAllowFor(t, alice, "alice", "user")
	check("alice's token", alice, nil, aliceOK)
	check("alice's token on an admin route", alice, map[string]string{"require": "admin"}, wantForbidden)
	rootOK, _ := wantAllowFor(t, root, "root", "admin,user")
	check("root's token on an admin route", root, map[string]string{"require": "admin"}, rootOK)
	h, p, s := parts(alice)
	_, rp, _ := parts(root)
	check("alice's signature on root's claims", h+"."+rp+"."+s, nil, wantInvalid)
	check("alice's token, last byte changed", h+"."+p+"."+s[:len(s)-2]+"AA", nil, wantInvalid)

	// Rotate: a new key is published at once and signs after the
	// activation delay; authz learns it from its refresh, no restart.
	oldKid, _ := unverified(t, alice)
	_, newKid, err := issuer.GenerateKeyFile(ri.keyDir, issuer.ES256)
	if err != nil {
		t.Fatal(err)
	}
	var rotated string
	waitFor(t, "a token signed by the new key", func() bool {
		rotated = ri.login(t, "alice", "a long enough password")
		kid, _ := unverified(t, rotated)
		return kid == newKid
	})
	if newKid == oldKid {
		t.Fatal("rotation produced the same kid")
	}
	rotatedOK, _ := wantAllowFor(t, rotated, "alice", "user")
	check("a token signed by the rotated-in key", rotated, nil, rotatedOK)
	check("a token signed by the old key", alice, nil, aliceOK)

	// Stop the issuer: fetches fail, the last good key set stays.
	ri.stop()
	failures := counterValue(t, e.reg, "tollgate_authz_jwks_fetches_total", "result", "error")
	waitFor(t, "failed refreshes", func() bool {
		return counterValue(t, e.reg, "tollgate_authz_jwks_fetches_total", "result", "error") >= failures+2
	})
	check("the rotated token with the issuer down", rotated, nil, rotatedOK)
	check("the old token with the issuer down", alice, nil, aliceOK)
	if err := e.srv.Ready(context.Background()); err != nil {
		t.Errorf("Ready() with the issuer down = %v, want nil", err)
	}
	if strings.Contains(e.logs.all(), alice) {
		t.Errorf("a token reached the log")
	}
}

// TestRealIssuerUnknownKidRefetch: with no activation delay the issuer
// signs with a new key at once; authz refetches on the unknown kid, so
// the first such token already passes.
func TestRealIssuerUnknownKidRefetch(t *testing.T) {
	ri := startIssuer(t, 0)
	e := newTestEnvWithJWKS(t, Config{
		Issuer:          ri.url,
		JWKSURL:         ri.url + "/.well-known/jwks.json",
		MinRefresh:      time.Hour,
		RefetchInterval: time.Millisecond,
	}, nil)
	e.waitReady()
	ri.register(t, "bob", "a long enough password")
	_, newKid, err := issuer.GenerateKeyFile(ri.keyDir, issuer.ES256)
	if err != nil {
		t.Fatal(err)
	}
	var tok string
	waitFor(t, "a token signed by the new key", func() bool {
		tok = ri.login(t, "bob", "a long enough password")
		kid, _ := unverified(t, tok)
		return kid == newKid
	})
	want, _ := wantAllowFor(t, tok, "bob", "user")
	got := e.check(envoyRequest("GET", "/books", bearer(tok), nil))
	if diff := diffResponse(want, got); diff != "" {
		t.Errorf("Check(first token by a new key) = %s, want OK (%v); diff:\n%s", describe(got), e.logs.lastCheck(t)["err"], diff)
	}
	if r := e.logs.lastCheck(t)["reason"]; r != "verified" {
		t.Errorf("reason = %v, want verified", r)
	}
}
