package authz

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestRefreshInterval(t *testing.T) {
	s := &keySource{cfg: Config{MinRefresh: time.Minute, MaxRefresh: time.Hour}}
	date := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"no header: max", nil, time.Hour},
		{"max-age within bounds", map[string]string{"Cache-Control": "public, max-age=300"}, 5 * time.Minute},
		{"max-age less Age", map[string]string{"Cache-Control": "max-age=300", "Age": "60"}, 4 * time.Minute},
		{"max-age below min", map[string]string{"Cache-Control": "max-age=5"}, time.Minute},
		{"max-age above max", map[string]string{"Cache-Control": "max-age=86400"}, time.Hour},
		{"huge max-age does not overflow", map[string]string{"Cache-Control": "max-age=99999999999999999"}, time.Hour},
		{"max-age=0", map[string]string{"Cache-Control": "max-age=0"}, time.Minute},
		{"no-store", map[string]string{"Cache-Control": "no-store"}, time.Minute},
		{"no-cache", map[string]string{"Cache-Control": "no-cache, max-age=600"}, time.Minute},
		{"Expires against Date", map[string]string{"Date": date.Format(http.TimeFormat), "Expires": date.Add(10 * time.Minute).Format(http.TimeFormat)}, 10 * time.Minute},
		{"max-age wins over Expires", map[string]string{"Cache-Control": "max-age=120", "Date": date.Format(http.TimeFormat), "Expires": date.Add(10 * time.Minute).Format(http.TimeFormat)}, 2 * time.Minute},
		{"invalid Expires means stale", map[string]string{"Expires": "0"}, time.Minute},
		{"garbage Cache-Control: max", map[string]string{"Cache-Control": "max-age=\"x"}, time.Hour},
		{"garbage max-age: max", map[string]string{"Cache-Control": "max-age=soon"}, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			if got := s.refreshInterval(h); got != tt.want {
				t.Errorf("refreshInterval(%v) = %v, want %v", tt.header, got, tt.want)
			}
		})
	}
}

func healthStatus(t testing.TB, e *testEnv, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := healthpb.NewHealthClient(e.conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health Check(%q): %v", service, err)
	}
	return resp.GetStatus()
}

func TestNotReadyUntilFirstLoad(t *testing.T) {
	k := newTestKey(t, "ES256", "main")
	jw := newJWKSServer(t, k)
	jw.fail(http.StatusServiceUnavailable)
	e := newTestEnvWithJWKS(t, Config{}, jw)
	waitFor(t, "a failed fetch", func() bool {
		return counterValue(t, e.reg, "tollgate_authz_jwks_fetches_total", "result", "error") > 0
	})
	for _, svc := range []string{"", AuthorizationService} {
		if got := healthStatus(t, e, svc); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health(%q) before any key set = %v, want NOT_SERVING", svc, got)
		}
	}
	if err := e.srv.Ready(context.Background()); err == nil {
		t.Errorf("Ready() before any key set = nil, want an error")
	}
	jw.setKeys(t, k) // the issuer comes up; the retry loop finds it
	e.waitReady()
	for _, svc := range []string{"", AuthorizationService} {
		if got := healthStatus(t, e, svc); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health(%q) after load = %v, want SERVING", svc, got)
		}
	}
	e.srv.SetStopping()
	for _, svc := range []string{"", AuthorizationService} {
		if got := healthStatus(t, e, svc); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health(%q) after SetStopping = %v, want NOT_SERVING", svc, got)
		}
	}
	if err := e.srv.Ready(context.Background()); err == nil {
		t.Errorf("Ready() after SetStopping = nil, want an error")
	}
}

func TestDiscovery(t *testing.T) {
	k := newTestKey(t, "ES256", "main")
	t.Run("finds jwks_uri", func(t *testing.T) {
		jw := newJWKSServer(t, k)
		e := newTestEnvWithJWKS(t, Config{Issuer: jw.URL, JWKSURL: "-"}, jw)
		e.waitReady()
		if jw.discoveries.Load() != 1 {
			t.Errorf("discovery fetched %d times, want 1", jw.discoveries.Load())
		}
		c := claimsFor("u-1", "user")
		c["iss"] = jw.URL
		got := e.check(envoyRequest("GET", "/books", bearer(k.sign(t, c, nil)), nil))
		if diff := diffResponse(wantAllow("u-1", "alice", "user", c["jti"].(string)), got); diff != "" {
			t.Errorf("Check(token, discovered keys) = %s, want OK; diff:\n%s", describe(got), diff)
		}
	})
	t.Run("refuses a document naming another issuer", func(t *testing.T) {
		jw := newJWKSServer(t, k)
		jw.mu.Lock()
		jw.issuer = "https://evil.example"
		jw.mu.Unlock()
		e := newTestEnvWithJWKS(t, Config{Issuer: jw.URL, JWKSURL: "-"}, jw)
		waitFor(t, "a failed fetch", func() bool {
			return counterValue(t, e.reg, "tollgate_authz_jwks_fetches_total", "result", "error") > 0
		})
		if jw.hits.Load() != 0 {
			t.Errorf("JWKS fetched from a discovery document with the wrong issuer")
		}
		if err := e.srv.Ready(context.Background()); err == nil {
			t.Errorf("Ready() = nil, want an error")
		}
	})
}

// TestUnknownKidRefetch: a token with a kid not in the set makes authz
// fetch the JWKS at once, so a new key works without waiting for the
// refresh, but at most once per RefetchInterval, so random kids cannot
// turn checks into fetches.
func TestUnknownKidRefetch(t *testing.T) {
	main := newTestKey(t, "ES256", "main")
	next := newTestKey(t, "ES256", "next")
	t.Run("random kids are rate-limited", func(t *testing.T) {
		e := newTestEnv(t, Config{RefetchInterval: time.Hour}, main)
		e.waitReady()
		for i := range 50 {
			tok := main.sign(t, claimsFor("u", "user"), map[string]any{"kid": strings.Repeat("k", i+1)})
			e.check(envoyRequest("GET", "/books", bearer(tok), nil))
		}
		// The load itself started within the interval, so no refetch.
		if n := e.jwks.hits.Load(); n != 1 {
			t.Errorf("JWKS fetched %d times for 50 random kids, want 1 (the load)", n)
		}
		if n := counterValue(t, e.reg, "tollgate_authz_jwks_refetches_total", "result", "rate_limited"); n != 50 {
			t.Errorf("rate-limited refetches = %v, want 50", n)
		}
	})
	t.Run("a new key is fetched at once", func(t *testing.T) {
		e := newTestEnv(t, Config{RefetchInterval: time.Millisecond}, main)
		e.waitReady()
		time.Sleep(5 * time.Millisecond)
		e.jwks.setKeys(t, main, next) // rotation: the refresh has not run yet
		c := claimsFor("u-2", "user")
		got := e.check(envoyRequest("GET", "/books", bearer(next.sign(t, c, nil)), nil))
		if diff := diffResponse(wantAllow("u-2", "alice", "user", c["jti"].(string)), got); diff != "" {
			t.Errorf("Check(token by a just-published key) = %s, want OK; diff:\n%s", describe(got), diff)
		}
	})
	t.Run("a new key waits out the rate limit", func(t *testing.T) {
		e := newTestEnv(t, Config{RefetchInterval: time.Hour}, main)
		e.waitReady()
		e.jwks.setKeys(t, main, next)
		got := e.check(envoyRequest("GET", "/books", bearer(next.sign(t, claimsFor("u", "user"), nil)), nil))
		if diff := diffResponse(wantInvalid, got); diff != "" {
			t.Errorf("Check(new key within the refetch interval) = %s, want 401; diff:\n%s", describe(got), diff)
		}
	})
}

// TestIssuerDownKeepsKeys: when the JWKS cannot be fetched, the last
// good key set keeps working.
func TestIssuerDownKeepsKeys(t *testing.T) {
	e := newTestEnv(t, Config{MinRefresh: 10 * time.Millisecond, MaxRefresh: 10 * time.Millisecond})
	e.waitReady()
	errs := func() float64 { return counterValue(t, e.reg, "tollgate_authz_jwks_fetches_total", "result", "error") }
	for _, step := range []struct {
		name string
		down func()
	}{
		{"JWKS answers 500", func() { e.jwks.fail(http.StatusInternalServerError) }},
		{"JWKS unreachable", func() { e.jwks.Close() }},
	} {
		before := errs()
		step.down()
		waitFor(t, "two failed refreshes", func() bool { return errs() >= before+2 })
		c := claimsFor("u-3", "user")
		got := e.check(envoyRequest("GET", "/books", bearer(e.key.sign(t, c, nil)), nil))
		if diff := diffResponse(wantAllow("u-3", "alice", "user", c["jti"].(string)), got); diff != "" {
			t.Errorf("Check(valid token, %s) = %s, want OK; diff:\n%s", step.name, describe(got), diff)
		}
		if err := e.srv.Ready(context.Background()); err != nil {
			t.Errorf("Ready() with %s = %v, want nil (the last good keys still verify)", step.name, err)
		}
	}
}

// TestKeyLeavesJWKS: when the issuer withdraws a key, its tokens stop
// working, including ones the cache already verified.
func TestKeyLeavesJWKS(t *testing.T) {
	main := newTestKey(t, "ES256", "main")
	other := newTestKey(t, "ES256", "other")
	fetched := func(e *testEnv) float64 {
		return counterValue(t, e.reg, "tollgate_authz_jwks_fetches_total", "result", "ok")
	}
	t.Run("key removed", func(t *testing.T) {
		e := newTestEnv(t, Config{CacheSize: 100, MinRefresh: 10 * time.Millisecond, MaxRefresh: 10 * time.Millisecond}, main, other)
		e.waitReady()
		c := claimsFor("u-4", "user")
		tok := main.sign(t, c, nil)
		for _, want := range []string{"verified", "cached"} {
			got := e.check(envoyRequest("GET", "/books", bearer(tok), nil))
			if diff := diffResponse(wantAllow("u-4", "alice", "user", c["jti"].(string)), got); diff != "" {
				t.Fatalf("Check(token) = %s, want OK; diff:\n%s", describe(got), diff)
			}
			if r := e.logs.lastCheck(t)["reason"]; r != want {
				t.Fatalf("Check(token) reason %v, want %s", r, want)
			}
		}
		e.jwks.setKeys(t, other)
		waitFor(t, "the key to leave", func() bool { return e.srv.defaultSource().keys().lookup(main.kid) == nil })
		waitFor(t, "the cache to be purged", func() bool { return e.srv.cache.len() == 0 })
		got := e.check(envoyRequest("GET", "/books", bearer(tok), nil))
		if diff := diffResponse(wantInvalid, got); diff != "" {
			t.Errorf("Check(token by a withdrawn key) = %s, want 401; diff:\n%s", describe(got), diff)
		}
	})
	t.Run("kid reused for another key", func(t *testing.T) {
		e := newTestEnv(t, Config{CacheSize: 100, MinRefresh: time.Hour}, main)
		e.waitReady()
		tok := main.sign(t, claimsFor("u-5", "user"), nil)
		e.check(envoyRequest("GET", "/books", bearer(tok), nil))
		if e.srv.cache.len() != 1 {
			t.Fatalf("cache has %d entries after a verification, want 1", e.srv.cache.len())
		}
		// Publish other's key material under main's kid, as a botched
		// rotation would, then force a fetch.
		swapped := other.jwkMap(t)
		swapped["kid"] = main.kid
		e.jwks.setJWKs(t, swapped)
		before := fetched(e)
		e.srv.defaultSource().start(false)
		waitFor(t, "a fetch", func() bool { return fetched(e) > before })
		got := e.check(envoyRequest("GET", "/books", bearer(tok), nil))
		if diff := diffResponse(wantInvalid, got); diff != "" {
			t.Errorf("Check(token cached under replaced key material) = %s, want 401; diff:\n%s", describe(got), diff)
		}
		if r := e.logs.lastCheck(t)["reason"]; r != "bad_signature" {
			t.Errorf("reason %v, want bad_signature (verified afresh against the new key)", r)
		}
	})
	t.Run("every key removed", func(t *testing.T) {
		e := newTestEnv(t, Config{CacheSize: 100, MinRefresh: 10 * time.Millisecond, MaxRefresh: 10 * time.Millisecond}, main)
		e.waitReady()
		tok := main.sign(t, claimsFor("u-6", "user"), nil)
		e.check(envoyRequest("GET", "/books", bearer(tok), nil))
		e.jwks.setJWKs(t)
		waitFor(t, "not ready", func() bool { return e.srv.Ready(context.Background()) != nil })
		if got := healthStatus(t, e, AuthorizationService); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health with no keys = %v, want NOT_SERVING", got)
		}
		got := e.check(envoyRequest("GET", "/books", bearer(tok), nil))
		if diff := diffResponse(wantUnavailable, got); diff != "" {
			t.Errorf("Check(token, JWKS emptied) = %s, want 503; diff:\n%s", describe(got), diff)
		}
	})
}

func TestCacheControlDrivesRefresh(t *testing.T) {
	for _, tt := range []struct {
		cc      string
		atLeast int64
		atMost  int64
		wait    time.Duration
	}{
		{cc: "max-age=0", atLeast: 4, atMost: 1000, wait: 500 * time.Millisecond},
		{cc: "max-age=3600", atLeast: 1, atMost: 1, wait: 300 * time.Millisecond},
	} {
		t.Run(tt.cc, func(t *testing.T) {
			k := newTestKey(t, "ES256", "main")
			jw := newJWKSServer(t, k)
			jw.mu.Lock()
			jw.cacheControl = tt.cc
			jw.mu.Unlock()
			e := newTestEnvWithJWKS(t, Config{MinRefresh: 20 * time.Millisecond, MaxRefresh: time.Hour}, jw)
			e.waitReady()
			time.Sleep(tt.wait)
			if n := jw.hits.Load(); n < tt.atLeast || n > tt.atMost {
				t.Errorf("with Cache-Control %q, %d fetches in %v; want %d to %d", tt.cc, n, tt.wait, tt.atLeast, tt.atMost)
			}
		})
	}
}

func TestNotModified(t *testing.T) {
	k := newTestKey(t, "ES256", "main")
	jw := newJWKSServer(t, k)
	jw.mu.Lock()
	jw.etag = `"v1"`
	jw.mu.Unlock()
	e := newTestEnvWithJWKS(t, Config{MinRefresh: 10 * time.Millisecond, MaxRefresh: 10 * time.Millisecond}, jw)
	e.waitReady()
	waitFor(t, "a 304", func() bool {
		return counterValue(t, e.reg, "tollgate_authz_jwks_fetches_total", "result", "not_modified") >= 2
	})
	if err := e.srv.Ready(context.Background()); err != nil {
		t.Errorf("Ready() after 304s = %v, want nil", err)
	}
	if got := e.srv.defaultSource().keys().len(); got != 1 {
		t.Errorf("keys after 304s = %d, want 1", got)
	}
}

func TestJWKSTooLarge(t *testing.T) {
	k := newTestKey(t, "ES256", "main")
	jw := newJWKSServer(t, k)
	jw.mu.Lock()
	jw.body = append(jw.body[:len(jw.body)-1], []byte(`,"pad":"`+strings.Repeat("x", maxDocumentBytes)+`"}`)...)
	jw.mu.Unlock()
	e := newTestEnvWithJWKS(t, Config{}, jw)
	waitFor(t, "a failed fetch", func() bool {
		return counterValue(t, e.reg, "tollgate_authz_jwks_fetches_total", "result", "error") > 0
	})
	if err := e.srv.Ready(context.Background()); err == nil {
		t.Errorf("Ready() with an oversized JWKS = nil, want an error")
	}
}

// TestKeySourceStopsWhenDoneBetweenFetches: a source whose context ends
// while a refresh is due (nextAt in the past, so run goes straight to
// start, which refuses) returns instead of looping on the refusal.
func TestKeySourceStopsWhenDoneBetweenFetches(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := newKeySource(ctx, testConfig(Config{}), slog.New(slog.DiscardHandler), nil, nil)
	done := make(chan struct{})
	go func() {
		src.run()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("keySource.run did not return within 5s of its context ending with a refresh due")
	}
}
