package authz

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// feedServer is a fake issuer revocation feed that tests change as they
// go: entries carry the version they were added at, as the issuer's do.
type feedServer struct {
	*httptest.Server
	mu       sync.Mutex
	iss      string
	version  int64
	tokens   []feedEntry
	subjects []feedEntry
	status   int // non-zero: answer every request with it
	fetches  int
}

type feedEntry struct {
	version int64
	id      string
	a, b    int64 // exp; or not_before, until
}

func newFeedServer(t testing.TB) *feedServer {
	f := &feedServer{iss: testIssuer}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *feedServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if f.status != 0 {
		w.WriteHeader(f.status)
		return
	}
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	etag := `"` + strconv.FormatInt(f.version, 10) + `"`
	w.Header().Set("ETag", etag)
	if since > 0 && r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	type tok struct {
		JTI string `json:"jti"`
		Exp int64  `json:"exp"`
	}
	type sub struct {
		Sub       string `json:"sub"`
		NotBefore int64  `json:"not_before"`
		Until     int64  `json:"until"`
	}
	out := struct {
		Iss      string `json:"iss"`
		Version  int64  `json:"version"`
		Full     bool   `json:"full"`
		Tokens   []tok  `json:"tokens"`
		Subjects []sub  `json:"subjects"`
	}{Iss: f.iss, Version: f.version, Full: since == 0, Tokens: []tok{}, Subjects: []sub{}}
	for _, e := range f.tokens {
		if e.version > since {
			out.Tokens = append(out.Tokens, tok{e.id, e.a})
		}
	}
	for _, e := range f.subjects {
		if e.version > since {
			out.Subjects = append(out.Subjects, sub{e.id, e.a, e.b})
		}
	}
	_ = json.NewEncoder(w).Encode(out)
}

func (f *feedServer) revokeJTI(jti string, exp time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.version++
	f.tokens = append(f.tokens, feedEntry{f.version, jti, exp.Unix(), 0})
}

func (f *feedServer) revokeSub(sub string, nb time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.version++
	f.subjects = append(f.subjects, feedEntry{f.version, sub, nb.Unix(), nb.Add(24 * time.Hour).Unix()})
}

func (f *feedServer) fail(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = status
}

// syncRevocations fetches the feed once, as the background loop would.
func (e *testEnv) syncRevocations() {
	e.t.Helper()
	e.srv.revocations.fetch(context.Background())
}

// revocationEnv is a test env following feed, with the cache on.
func revocationEnv(t *testing.T, feed *feedServer, mod func(*Config)) *testEnv {
	t.Helper()
	cfg := Config{
		CacheSize:           100,
		Leeway:              5 * time.Second,
		RevocationsURL:      feed.URL + "/revocations",
		RevocationsInterval: time.Hour, // tests fetch themselves
		RevocationsMaxAge:   time.Hour,
		RevocationsStale:    StaleServe,
	}
	if mod != nil {
		mod(&cfg)
	}
	e := newTestEnv(t, cfg)
	e.waitReady()
	return e
}

func statusOf(resp *authv3.CheckResponse) int {
	if resp.GetOkResponse() != nil {
		return 200
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

// esTwin returns the other valid ES256 signature of tok: (r, n-s)
// verifies wherever (r, s) does, so the twin is the same token with
// different bytes.
func esTwin(t *testing.T, k *testKey, tok string) string {
	t.Helper()
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil || len(sig) != 64 {
		t.Fatalf("ES256 signature: %v (%d bytes)", err, len(sig))
	}
	n := k.priv.(*ecdsa.PrivateKey).Curve.Params().N
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(n, s)
	twin := make([]byte, 64)
	copy(twin, sig[:32])
	s.FillBytes(twin[32:])
	return tok[:i+1] + base64.RawURLEncoding.EncodeToString(twin)
}

func TestRevokedTokenRefused(t *testing.T) {
	feed := newFeedServer(t)
	e := revocationEnv(t, feed, nil)
	claims := claimsFor("u-1", "user")
	tok := e.key.sign(t, claims, nil)
	other := e.key.sign(t, claimsFor("u-1", "user"), nil)
	twin := esTwin(t, e.key, tok)
	if tok == twin {
		t.Fatal("twin equals the token")
	}
	steps := []struct {
		name   string
		before func()
		tok    string
		want   int
		reason string
	}{
		{"valid token", nil, tok, 200, "verified"},
		{"valid token again, from the cache", nil, tok, 200, "cached"},
		{"its signature twin is also valid", nil, twin, 200, "verified"},
		{"revoked token, cached", func() { feed.revokeJTI(claims["jti"].(string), time.Now().Add(time.Hour)); e.syncRevocations() }, tok, 401, "revoked"},
		{"revoked token's signature twin", nil, twin, 401, "revoked"},
		{"another token of the same user", nil, other, 200, "verified"},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		resp := e.check(envoyRequest("GET", "/books", bearer(st.tok), nil))
		if got := statusOf(resp); got != st.want {
			t.Fatalf("Check(%s) = %d, want %d", st.name, got, st.want)
		}
		if got := e.logs.lastCheck(t)["reason"]; got != st.reason {
			t.Errorf("Check(%s) reason = %v, want %s", st.name, got, st.reason)
		}
		if st.want == 401 {
			// The same answer as any invalid token.
			want := e.srv.deniedResponse(decision{reason: reasonBadSignature})
			if got := resp.GetDeniedResponse(); got.GetBody() != want.GetDeniedResponse().GetBody() ||
				got.GetHeaders()[0].GetHeader().GetValue() != want.GetDeniedResponse().GetHeaders()[0].GetHeader().GetValue() {
				t.Errorf("Check(%s) denial = %v, want the invalid_token answer %v", st.name, got, want.GetDeniedResponse())
			}
		}
	}
	if m := counterValue(t, e.reg, "tollgate_authz_checks_total", "reason", "revoked"); m != 2 {
		t.Errorf("checks_total{reason=revoked} = %v, want 2", m)
	}
}

func TestSubjectNotBefore(t *testing.T) {
	feed := newFeedServer(t)
	e := revocationEnv(t, feed, nil)
	nb := time.Now().Truncate(time.Second)
	feed.revokeSub("u-1", nb)
	e.syncRevocations()
	at := func(sub string, iat time.Time) string {
		c := claimsFor(sub, "user")
		c["iat"], c["nbf"] = iat.Unix(), iat.Unix()
		return e.key.sign(t, c, nil)
	}
	noIAT := claimsFor("u-1", "user")
	delete(noIAT, "iat")
	tests := []struct {
		name string
		tok  string
		want int
	}{
		{"issued a second before the not-before", at("u-1", nb.Add(-time.Second)), 401},
		{"issued at the not-before", at("u-1", nb), 200},
		{"issued after", at("u-1", nb.Add(time.Second)), 200},
		{"no iat", e.key.sign(t, noIAT, nil), 401},
		{"another subject, issued before", at("u-2", nb.Add(-time.Second)), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := statusOf(e.check(envoyRequest("GET", "/books", bearer(tt.tok), nil))); got != tt.want {
				t.Errorf("Check(%s) = %d, want %d", tt.name, got, tt.want)
			}
			if got := e.logs.lastCheck(t)["reason"]; tt.want == 401 && got != "revoked" {
				t.Errorf("Check(%s) reason = %v, want revoked", tt.name, got)
			}
		})
	}
}

func TestRevocationFeedFollowing(t *testing.T) {
	feed := newFeedServer(t)
	e := revocationEnv(t, feed, nil)
	c1, c2 := claimsFor("u-1", "user"), claimsFor("u-1", "user")
	t1, t2 := e.key.sign(t, c1, nil), e.key.sign(t, c2, nil)
	steps := []struct {
		name     string
		do       func()
		want1    int
		want2    int
		wantList int
	}{
		{"nothing revoked", func() { e.syncRevocations() }, 200, 200, 0},
		{"one revoked (full load)", func() { feed.revokeJTI(c1["jti"].(string), time.Now().Add(time.Hour)); e.syncRevocations() }, 401, 200, 1},
		{"unchanged (304)", func() { e.syncRevocations() }, 401, 200, 1},
		{"second revoked (delta)", func() { feed.revokeJTI(c2["jti"].(string), time.Now().Add(time.Hour)); e.syncRevocations() }, 401, 401, 2},
		{"issuer down: last good list kept", func() { feed.fail(503); e.syncRevocations() }, 401, 401, 2},
	}
	for _, st := range steps {
		st.do()
		if got := statusOf(e.check(envoyRequest("GET", "/books", bearer(t1), nil))); got != st.want1 {
			t.Errorf("after %s: Check(token 1) = %d, want %d", st.name, got, st.want1)
		}
		if got := statusOf(e.check(envoyRequest("GET", "/books", bearer(t2), nil))); got != st.want2 {
			t.Errorf("after %s: Check(token 2) = %d, want %d", st.name, got, st.want2)
		}
		if got := len(e.srv.revocations.set().tokens); got != st.wantList {
			t.Errorf("after %s: %d revoked tokens listed, want %d", st.name, got, st.wantList)
		}
	}
	if m := counterValue(t, e.reg, "tollgate_authz_revocation_fetches_total", "result", "not_modified"); m < 1 {
		t.Errorf("revocation_fetches_total{result=not_modified} = %v, want at least 1", m)
	}
}

func TestRevocationFeedRefused(t *testing.T) {
	tests := []struct {
		name string
		iss  string
	}{
		{"another issuer's feed", "https://evil.test"},
		{"no issuer", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			feed := newFeedServer(t)
			feed.iss = tt.iss
			e := revocationEnv(t, feed, nil)
			c := claimsFor("u-1", "user")
			feed.revokeJTI(c["jti"].(string), time.Now().Add(time.Hour))
			e.syncRevocations()
			if _, ok := e.srv.revocations.age(); ok {
				t.Errorf("feed(%s) counted as a good fetch", tt.name)
			}
			if n := len(e.srv.revocations.set().tokens); n != 0 {
				t.Errorf("feed(%s) applied: %d entries, want 0", tt.name, n)
			}
		})
	}
}

func TestStaleRevocationFeed(t *testing.T) {
	tests := []struct {
		name      string
		policy    string
		wantOld   int // a token issued before the last good fetch
		wantFresh int // a token issued after it
	}{
		{"serve the last copy", StaleServe, 200, 200},
		{"deny tokens older than the last good fetch", StaleDeny, 401, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			feed := newFeedServer(t)
			e := revocationEnv(t, feed, func(c *Config) {
				c.RevocationsStale = tt.policy
				c.RevocationsInterval = 20 * time.Millisecond
				c.RevocationsMaxAge = 100 * time.Millisecond
			})
			old := claimsFor("u-1", "user")
			old["iat"] = time.Now().Add(-time.Minute).Unix()
			oldTok := e.key.sign(t, old, nil)
			waitFor(t, "a good fetch", func() bool { _, ok := e.srv.revocations.age(); return ok })
			if got := statusOf(e.check(envoyRequest("GET", "/books", bearer(oldTok), nil))); got != 200 {
				t.Fatalf("Check(old token, fresh feed, %s) = %d, want 200", tt.policy, got)
			}
			feed.fail(http.StatusBadGateway)
			waitFor(t, "the feed to go stale", func() bool { a, _ := e.srv.revocations.age(); return a > 150*time.Millisecond })
			fresh := claimsFor("u-1", "user")
			fresh["iat"] = time.Now().Add(2 * time.Second).Unix()
			if got := statusOf(e.check(envoyRequest("GET", "/books", bearer(oldTok), nil))); got != tt.wantOld {
				t.Errorf("Check(old token, stale feed, %s) = %d, want %d", tt.policy, got, tt.wantOld)
			}
			if got := statusOf(e.check(envoyRequest("GET", "/books", bearer(e.key.sign(t, fresh, nil)), nil))); got != tt.wantFresh {
				t.Errorf("Check(fresh token, stale feed, %s) = %d, want %d", tt.policy, got, tt.wantFresh)
			}
			body := readyzBody(t, e)
			if !strings.Contains(body, `"revocations"`) || !strings.Contains(body, `"age_seconds"`) {
				t.Errorf("GET /readyz = %s, want the revocation feed's age in its detail", body)
			}
			if a := counterValue(t, e.reg, "tollgate_authz_revocations_age_seconds", "", ""); a < 0.1 {
				t.Errorf("revocations_age_seconds = %v, want over 0.1 once stale", a)
			}
		})
	}
}

func TestStaleDenyBeforeFirstFetch(t *testing.T) {
	feed := newFeedServer(t)
	feed.fail(503)
	e := revocationEnv(t, feed, func(c *Config) { c.RevocationsStale = StaleDeny })
	tok := e.key.sign(t, claimsFor("u-1", "user"), nil)
	if got := statusOf(e.check(envoyRequest("GET", "/books", bearer(tok), nil))); got != 401 {
		t.Errorf("Check(no good fetch yet, deny policy) = %d, want 401", got)
	}
}

func readyzBody(t *testing.T, e *testEnv) string {
	t.Helper()
	rec := httptest.NewRecorder()
	e.srv.HTTPHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	return rec.Body.String()
}

func TestRevocationConfigRejected(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"bad url", func(c *Config) { c.RevocationsURL = "ftp://x" }},
		{"zero interval", func(c *Config) { c.RevocationsInterval = 0 }},
		{"max age below interval", func(c *Config) { c.RevocationsMaxAge = time.Second; c.RevocationsInterval = 2 * time.Second }},
		{"unknown policy", func(c *Config) { c.RevocationsStale = "maybe" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Issuer = testIssuer
			c.RevocationsURL = "http://issuer:8081/revocations"
			tt.mod(&c)
			if err := c.Validate(); err == nil {
				t.Errorf("Validate(%s) = nil, want an error", tt.name)
			}
		})
	}
}
