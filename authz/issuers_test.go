package authz

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
)

// testIssuerB is the iss of the second issuer in multi-issuer tests.
const testIssuerB = "https://other-issuer.test"

// twoIssuers returns a Config trusting "a" (testIssuer, keys from ja)
// and "b" (testIssuerB, keys from jb), with the cache on.
func twoIssuers(ja, jb *jwksServer, mod func(a, b *IssuerConfig)) Config {
	a := IssuerConfig{Name: "a", Issuer: testIssuer, JWKSURL: ja.jwksURL(), Audiences: []string{testAudience}}
	b := IssuerConfig{Name: "b", Issuer: testIssuerB, JWKSURL: jb.jwksURL(), Audiences: []string{"books"}}
	if mod != nil {
		mod(&a, &b)
	}
	return Config{Issuers: []IssuerConfig{a, b}, CacheSize: 100}
}

// claimsB are valid claims for a token of issuer b.
func claimsB(sub string, extra map[string]any) map[string]any {
	c := claimsFor(sub)
	c["iss"], c["aud"] = testIssuerB, []string{"books"}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// sameKid returns a fresh key that publishes and signs under k's kid.
func sameKid(t testing.TB, k *testKey, name string) *testKey {
	o := *newTestKey(t, k.alg, name)
	o.kid = k.kid
	return &o
}

// okHeaders returns the headers an allow answer sets, by name.
func okHeaders(resp *authv3.CheckResponse) map[string]string {
	m := map[string]string{}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		m[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return m
}

func status(resp *authv3.CheckResponse) int {
	if resp.GetOkResponse() != nil {
		return 200
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

func TestIssuerRouting(t *testing.T) {
	ka := newTestKey(t, "ES256", "main")
	kb := sameKid(t, ka, "issuer-b") // another key under the same kid
	ja, jb := newJWKSServer(t, ka), newJWKSServer(t, kb)
	e := newTestEnvWithJWKS(t, twoIssuers(ja, jb, nil), nil)
	e.waitReady()
	fetchesA, fetchesB := ja.hits.Load(), jb.hits.Load()

	tests := []struct {
		name       string
		tok        string
		want       int
		reason     string
		wantIssuer string
	}{
		{"a's token signed by a", ka.sign(t, claimsFor("u-a", "user"), nil), 200, "verified", "a"},
		{"b's token signed by b", kb.sign(t, claimsB("u-b", nil), nil), 200, "verified", "b"},
		{"iss a, signed by b's key of the same kid", kb.sign(t, claimsFor("u-x", "admin"), nil), 401, "bad_signature", ""},
		{"iss b, signed by a's key of the same kid", ka.sign(t, claimsB("u-x", nil), nil), 401, "bad_signature", ""},
		{"iss b with a's audience", kb.sign(t, claimsB("u-b", map[string]any{"aud": []string{testAudience}}), nil), 401, "bad_audience", ""},
		{"unknown iss", ka.sign(t, claimsB("u-x", map[string]any{"iss": "https://evil.example"}), nil), 401, "bad_issuer", ""},
		{"unknown iss, unknown kid", ka.sign(t, claimsB("u-x", map[string]any{"iss": "https://evil.example"}), map[string]any{"kid": "random"}), 401, "bad_issuer", ""},
		{"no iss", ka.sign(t, claimsB("u-x", map[string]any{"iss": nil}), nil), 401, "missing_claim", ""},
		{"iss not a string", ka.sign(t, claimsB("u-x", map[string]any{"iss": 7}), nil), 401, "missing_claim", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.check(envoyRequest("GET", "/books", bearer(tt.tok), nil))
			if got := status(resp); got != tt.want {
				t.Fatalf("Check(%s) = %d, want %d (%s)", tt.name, got, tt.want, describe(resp))
			}
			if got := e.logs.lastCheck(t)["reason"]; got != tt.reason {
				t.Errorf("Check(%s) reason = %v, want %s", tt.name, got, tt.reason)
			}
			if tt.wantIssuer != "" {
				if got := okHeaders(resp)[HeaderUserIssuer]; got != tt.wantIssuer {
					t.Errorf("Check(%s) x-user-issuer = %q, want %q", tt.name, got, tt.wantIssuer)
				}
			}
		})
	}
	// Routing by iss happens before any key is looked at: nothing above,
	// not even the unknown kid, made either issuer fetch again.
	if a, b := ja.hits.Load()-fetchesA, jb.hits.Load()-fetchesB; a != 0 || b != 0 {
		t.Errorf("JWKS fetches during the checks: a %d, b %d; want none", a, b)
	}
}

func TestIssuerCacheDropIsPerIssuer(t *testing.T) {
	ka, kb := newTestKey(t, "ES256", "main"), newTestKey(t, "ES256", "issuer-b")
	ka2 := newTestKey(t, "ES256", "rotated")
	ja, jb := newJWKSServer(t, ka, ka2), newJWKSServer(t, kb)
	e := newTestEnvWithJWKS(t, twoIssuers(ja, jb, func(a, b *IssuerConfig) {}), nil)
	e.waitReady()
	ta := ka.sign(t, claimsFor("u-a", "user"), nil)
	tb := kb.sign(t, claimsB("u-b", nil), nil)
	for _, tok := range []string{ta, tb, ta, tb} {
		if resp := e.check(envoyRequest("GET", "/books", bearer(tok), nil)); status(resp) != 200 {
			t.Fatalf("Check = %s, want OK", describe(resp))
		}
	}
	if n := e.srv.cache.len(); n != 2 {
		t.Fatalf("cache holds %d tokens, want 2", n)
	}
	// Issuer a drops ka; b's key source keeps its set, so only a's token
	// leaves the cache.
	ja.setKeys(t, ka2)
	src := e.srv.state.Load().byName["a"].src
	src.start(false)
	waitFor(t, "a's key to leave", func() bool { return src.keys().lookup(ka.kid) == nil })
	waitFor(t, "a's token to leave the cache", func() bool { return e.srv.cache.len() == 1 })
	resp := e.check(envoyRequest("GET", "/books", bearer(tb), nil))
	if status(resp) != 200 || e.logs.lastCheck(t)["reason"] != "cached" {
		t.Errorf("Check(b's token after a's key left) = %d %v, want 200 cached", status(resp), e.logs.lastCheck(t)["reason"])
	}
	resp = e.check(envoyRequest("GET", "/books", bearer(ta), nil))
	if status(resp) != 401 {
		t.Errorf("Check(a's token after its key left) = %d, want 401", status(resp))
	}
}

func TestIssuerReadiness(t *testing.T) {
	ka, kb := newTestKey(t, "ES256", "main"), newTestKey(t, "ES256", "issuer-b")
	tests := []struct {
		name      string
		required  *bool
		wantReady bool
	}{
		{"b required (the default) and down", nil, false},
		{"b required: false and down", new(false), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ja, jb := newJWKSServer(t, ka), newJWKSServer(t, kb)
			jb.fail(http.StatusServiceUnavailable)
			e := newTestEnvWithJWKS(t, twoIssuers(ja, jb, func(a, b *IssuerConfig) { b.Required = tt.required }), nil)
			src := e.srv.state.Load().byName["a"].src
			waitFor(t, "a's keys", func() bool { return src.keys().len() > 0 })
			waitFor(t, "b's first fetch", func() bool { return jb.hits.Load() > 0 })
			time.Sleep(20 * time.Millisecond)
			err := e.srv.Ready(context.Background())
			if (err == nil) != tt.wantReady {
				t.Fatalf("Ready() = %v, want ready %v", err, tt.wantReady)
			}
			if !tt.wantReady && !strings.Contains(err.Error(), "issuer b") {
				t.Errorf("Ready() = %v, want it to name issuer b", err)
			}
			// a's tokens are served either way once a is up; b's get 503.
			resp := e.check(envoyRequest("GET", "/books", bearer(ka.sign(t, claimsFor("u-a"), nil)), nil))
			if status(resp) != 200 {
				t.Errorf("Check(a's token) = %d, want 200", status(resp))
			}
			resp = e.check(envoyRequest("GET", "/books", bearer(kb.sign(t, claimsB("u-b", nil), nil)), nil))
			if status(resp) != 503 {
				t.Errorf("Check(b's token while b is down) = %d, want 503", status(resp))
			}
		})
	}
}

func TestClaimPath(t *testing.T) {
	tests := []struct {
		in      string
		want    claimPath
		wantErr bool
	}{
		{"sub", claimPath{"sub"}, false},
		{"realm_access.roles", claimPath{"realm_access", "roles"}, false},
		{"resource_access.books.roles", claimPath{"resource_access", "books", "roles"}, false},
		{`["https://example.com/roles"]`, claimPath{"https://example.com/roles"}, false},
		{`a["b.c"].d`, claimPath{"a", "b.c", "d"}, false},
		{`a["b"]["c"]`, claimPath{"a", "b", "c"}, false},
		{`["quote\"inside"]`, claimPath{`quote"inside`}, false},
		{"", nil, true},
		{"a.", nil, true},
		{".a", nil, true},
		{"a..b", nil, true},
		{"a[b]", nil, true},
		{`a["b"`, nil, true},
		{`a["b"]c`, nil, true},
		{`[""]`, nil, true},
		{"a b", nil, true},
	}
	for _, tt := range tests {
		got, err := parseClaimPath(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseClaimPath(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestVendorClaimMappings feeds tokens shaped like those of Keycloak,
// Entra ID, Okta and Auth0 through claim mappings written as those
// products document their claims.
func TestVendorClaimMappings(t *testing.T) {
	k := newTestKey(t, "ES256", "main")
	jw := newJWKSServer(t, k)
	tests := []struct {
		name    string
		claims  ClaimsConfig
		headers map[string]string
		token   map[string]any
		ext     map[string]string
		want    int
		wantHdr map[string]string
	}{
		{
			name: "Keycloak: realm and client roles, groups, preferred_username",
			claims: ClaimsConfig{Name: "preferred_username",
				Roles: []string{"realm_access.roles", "resource_access.books.roles"}},
			headers: map[string]string{"x-user-email": "email", "x-user-groups": "groups"},
			token: map[string]any{"sub": "f1b0c6a4", "preferred_username": "alice", "email": "alice@example.com",
				"realm_access":    map[string]any{"roles": []string{"offline_access", "admin"}},
				"resource_access": map[string]any{"books": map[string]any{"roles": []string{"books-editor", "admin"}}, "account": map[string]any{"roles": []string{"manage-account"}}},
				"groups":          []string{"/staff", "/staff/editors"},
				"scope":           "openid profile email"},
			ext:  map[string]string{"require": "admin,books-editor", "scopes": "openid,email"},
			want: 200,
			wantHdr: map[string]string{HeaderUserID: "f1b0c6a4", HeaderUserName: "alice", HeaderUserRoles: "offline_access,admin,books-editor",
				"x-user-email": "alice@example.com", "x-user-groups": "/staff,/staff/editors", HeaderUserIssuer: "vendor"},
		},
		{
			name:   "Entra ID: roles at the top level, scp as a space-delimited string, oid as subject",
			claims: ClaimsConfig{Subject: "oid", Roles: []string{"roles"}, Scopes: []string{"scp"}},
			token: map[string]any{"sub": "pairwise-sub", "oid": "00000000-0000-0000-0000-000000000001", "name": "Alice",
				"roles": []string{"Books.Admin"}, "scp": "Books.Read Books.Write"},
			ext:     map[string]string{"require": "Books.Admin", "scopes": "Books.Write"},
			want:    200,
			wantHdr: map[string]string{HeaderUserID: "00000000-0000-0000-0000-000000000001", HeaderUserName: "Alice", HeaderUserRoles: "Books.Admin"},
		},
		{
			name:   "Entra ID: a scope the token lacks",
			claims: ClaimsConfig{Subject: "oid", Scopes: []string{"scp"}},
			token:  map[string]any{"oid": "o-1", "scp": "Books.Read"},
			ext:    map[string]string{"scopes": "Books.Write"},
			want:   403,
		},
		{
			name:    "Okta: scp as an array, groups as roles",
			claims:  ClaimsConfig{Roles: []string{"groups"}},
			token:   map[string]any{"sub": "00u1", "scp": []string{"openid", "books:write"}, "groups": []string{"Everyone", "Admins"}},
			ext:     map[string]string{"require_any": "Admins,Owners", "cel": "'books:write' in scopes || request.method == 'GET'"},
			want:    200,
			wantHdr: map[string]string{HeaderUserID: "00u1", HeaderUserRoles: "Everyone,Admins"},
		},
		{
			name:    "Auth0: namespaced roles, scope as a string",
			claims:  ClaimsConfig{Roles: []string{`["https://example.com/roles"]`}},
			token:   map[string]any{"sub": "auth0|123", "https://example.com/roles": []string{"admin"}, "scope": "read:books write:books"},
			ext:     map[string]string{"require": "admin", "scopes": "write:books"},
			want:    200,
			wantHdr: map[string]string{HeaderUserID: "auth0|123", HeaderUserRoles: "admin"},
		},
		{
			name:   "Auth0: namespaced roles without the role asked for",
			claims: ClaimsConfig{Roles: []string{`["https://example.com/roles"]`}},
			token:  map[string]any{"sub": "auth0|123", "https://example.com/roles": []string{"reader"}},
			ext:    map[string]string{"require": "admin"},
			want:   403,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ic := IssuerConfig{Name: "vendor", Issuer: testIssuer, JWKSURL: jw.jwksURL(), Audiences: []string{testAudience},
				Claims: tt.claims, Headers: tt.headers}
			e := newTestEnvWithJWKS(t, Config{Issuers: []IssuerConfig{ic}}, nil)
			e.waitReady()
			c := claimsFor("")
			delete(c, "sub")
			delete(c, "name")
			for k, v := range tt.token {
				c[k] = v
			}
			resp := e.check(envoyRequest("POST", "/books", bearer(k.sign(t, c, nil)), tt.ext))
			if got := status(resp); got != tt.want {
				t.Fatalf("Check(%s) = %d, want %d (%s; log %v)", tt.name, got, tt.want, describe(resp), e.logs.lastCheck(t))
			}
			got := okHeaders(resp)
			for h, v := range tt.wantHdr {
				if got[h] != v {
					t.Errorf("Check(%s) header %s = %q, want %q", tt.name, h, got[h], v)
				}
			}
		})
	}
}

// TestPolicyKeys pins every policy key, in context_extensions and in
// forward-auth headers, allowing and denying.
func TestPolicyKeys(t *testing.T) {
	ka, kb := newTestKey(t, "ES256", "main"), newTestKey(t, "ES256", "issuer-b")
	ja, jb := newJWKSServer(t, ka), newJWKSServer(t, kb)
	e := newTestEnvWithJWKS(t, twoIssuers(ja, jb, nil), nil)
	e.waitReady()
	ts := httptest.NewServer(e.srv.HTTPHandler())
	t.Cleanup(ts.Close)
	user := claimsFor("u-1", "user", "editor")
	user["scope"] = "books:read books:write"
	tokA := ka.sign(t, user, nil)
	tokB := kb.sign(t, claimsB("u-b", map[string]any{"roles": []string{"user"}}), nil)
	tests := []struct {
		name   string
		tok    string
		method string
		ext    map[string]string
		want   int
		reason string
	}{
		{"require, held", tokA, "GET", map[string]string{"require": "user,editor"}, 200, "verified"},
		{"require, one missing", tokA, "GET", map[string]string{"require": "user,admin"}, 403, "missing_role"},
		{"require_any, one held", tokA, "GET", map[string]string{"require_any": "admin, editor"}, 200, "verified"},
		{"require_any, none held", tokA, "GET", map[string]string{"require_any": "admin,owner"}, 403, "missing_role"},
		{"scopes, held", tokA, "GET", map[string]string{"scopes": "books:write"}, 200, "verified"},
		{"scopes, one missing", tokA, "GET", map[string]string{"scopes": "books:read,books:delete"}, 403, "missing_scope"},
		{"issuers, a's token on an a route", tokA, "GET", map[string]string{"issuers": "a"}, 200, "verified"},
		{"issuers, b's token on an a route", tokB, "GET", map[string]string{"issuers": "a"}, 403, "wrong_issuer"},
		{"issuers, b's token on an a-or-b route", tokB, "GET", map[string]string{"issuers": "a,b"}, 200, "verified"},
		{"cel true by scope", tokA, "POST", map[string]string{"cel": "'books:write' in scopes || request.method == 'GET'"}, 200, "verified"},
		{"cel true by method", tokB, "GET", map[string]string{"cel": "'books:write' in scopes || request.method == 'GET'"}, 200, "verified"},
		{"cel false", tokB, "POST", map[string]string{"cel": "'books:write' in scopes || request.method == 'GET'"}, 403, "policy_denied"},
		{"cel over claims and issuer", tokA, "GET", map[string]string{"cel": "claims.sub == 'u-1' && issuer == 'a' && 'editor' in roles"}, 200, "verified"},
		{"cel over request path and headers", tokA, "GET", map[string]string{"cel": "request.path.startsWith('/books') && request.headers['x-team'] == 'red'"}, 200, "verified"},
		{"cel error (missing claim) denies", tokA, "GET", map[string]string{"cel": "claims.nothing == 'x'"}, 403, "policy_denied"},
		{"every key at once", tokA, "GET", map[string]string{"require": "user", "require_any": "editor", "scopes": "books:read", "issuers": "a", "cel": "true"}, 200, "verified"},

		{"bad: cel does not compile", tokA, "GET", map[string]string{"cel": "claims.sub =="}, 403, "bad_policy"},
		{"bad: cel is not a bool", tokA, "GET", map[string]string{"cel": "claims.sub"}, 403, "bad_policy"},
		{"bad: cel is a string", tokA, "GET", map[string]string{"cel": "'true'"}, 403, "bad_policy"},
		{"bad: cel unknown variable", tokA, "GET", map[string]string{"cel": "user == 'x'"}, 403, "bad_policy"},
		{"bad: cel too long", tokA, "GET", map[string]string{"cel": "true" + strings.Repeat(" && true", maxCELBytes/8)}, 403, "bad_policy"},
		{"bad: require_any empty", tokA, "GET", map[string]string{"require_any": ""}, 403, "bad_policy"},
		{"bad: require_any with a space inside", tokA, "GET", map[string]string{"require_any": "a b"}, 403, "bad_policy"},
		{"bad: scopes with an empty item", tokA, "GET", map[string]string{"scopes": "books:read,,x"}, 403, "bad_policy"},
		{"bad: issuers naming no issuer", tokA, "GET", map[string]string{"issuers": "a,c"}, 403, "bad_policy"},
		{"bad: misspelt key", tokA, "GET", map[string]string{"require-any": "admin"}, 403, "bad_policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := bearer(tt.tok)
			h["x-team"] = "red"
			resp := e.check(envoyRequest(tt.method, "/books", h, tt.ext))
			if got := status(resp); got != tt.want {
				t.Fatalf("Check(%s) = %d, want %d (%v)", tt.name, got, tt.want, e.logs.lastCheck(t))
			}
			if got := e.logs.lastCheck(t)["reason"]; got != tt.reason && !(tt.reason == "verified" && got == "cached") {
				t.Errorf("Check(%s) reason = %v, want %s", tt.name, got, tt.reason)
			}
			// The same policy in forward-auth headers decides the same.
			fh := [][2]string{{"Authorization", "Bearer " + tt.tok}, {"X-Team", "red"}, {"X-Forwarded-Method", tt.method}, {"X-Forwarded-Uri", "/books"}}
			for k, v := range tt.ext {
				fh = append(fh, [2]string{policyHeaderPrefix + k, v})
			}
			if got := forwardAuth(t, ts, "GET", "/auth", fh).Status; got != tt.want {
				t.Errorf("forward-auth(%s) = %d, want %d", tt.name, got, tt.want)
			}
		})
	}
}

func TestCELBounds(t *testing.T) {
	k := newTestKey(t, "ES256", "main")
	e := newTestEnv(t, Config{}, k)
	e.waitReady()
	c := claimsFor("u-1", "user")
	long := make([]string, 60)
	for i := range long {
		long[i] = fmt.Sprint("r", i)
	}
	c["roles"] = long
	tok := k.sign(t, c, nil)
	// Nested comprehensions over the roles: 60^4 steps, far over the
	// cost limit, so evaluation stops and the check is denied at once.
	hostile := "roles.all(a, roles.all(b, roles.all(c, roles.all(d, a + b + c + d != ''))))"
	start := time.Now()
	resp := e.check(envoyRequest("GET", "/books", bearer(tok), map[string]string{"cel": hostile}))
	if got := status(resp); got != 403 {
		t.Fatalf("Check(hostile cel) = %d, want 403", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Check(hostile cel) took %v; the cost limit should stop it at once", d)
	}
	if err, _ := e.logs.lastCheck(t)["err"].(string); !strings.Contains(err, "cost") {
		t.Errorf("Check(hostile cel) err = %q, want the cost limit named", err)
	}

	// The compiled-program cache stays bounded however many distinct
	// expressions arrive.
	for i := range maxCELPrograms + 50 {
		e.srv.programs.get(fmt.Sprintf("%d == %d", i, i))
	}
	if n := e.srv.programs.len(); n > maxCELPrograms {
		t.Errorf("compiled CEL programs = %d, want at most %d", n, maxCELPrograms)
	}
}

// TestMappedHeaders pins the identity headers a mapping fills: lists
// joined with commas, unsafe lists refused, objects and long values
// omitted, and every mapped header removed when the token gives none,
// whichever issuer maps it.
func TestMappedHeaders(t *testing.T) {
	ka, kb := newTestKey(t, "ES256", "main"), newTestKey(t, "ES256", "issuer-b")
	ja, jb := newJWKSServer(t, ka), newJWKSServer(t, kb)
	e := newTestEnvWithJWKS(t, twoIssuers(ja, jb, func(a, b *IssuerConfig) {
		a.Headers = map[string]string{"x-user-email": "email", "x-user-groups": "groups", "x-user-org": "org", "x-user-level": "level"}
	}), nil)
	e.waitReady()
	ts := httptest.NewServer(e.srv.HTTPHandler())
	t.Cleanup(ts.Close)
	with := func(extra map[string]any) string {
		c := claimsFor("u-1", "user")
		for k, v := range extra {
			c[k] = v
		}
		return ka.sign(t, c, nil)
	}
	tests := []struct {
		name       string
		tok        string
		want       int
		set        map[string]string
		removed    []string
		wantReason string
	}{
		{"string, list and number", with(map[string]any{"email": "a@example.com", "groups": []string{"red", "blue"}, "level": 3}), 200,
			map[string]string{"x-user-email": "a@example.com", "x-user-groups": "red,blue", "x-user-level": "3"}, []string{"x-user-org"}, ""},
		{"no claims: every mapped header removed", with(nil), 200, nil, []string{"x-user-email", "x-user-groups", "x-user-org", "x-user-level"}, ""},
		{"b's token: a's mapped headers removed too", kb.sign(t, claimsB("u-b", nil), nil), 200, map[string]string{HeaderUserIssuer: "b"},
			[]string{"x-user-email", "x-user-groups", "x-user-org", "x-user-level"}, ""},
		{"list item with a comma is refused", with(map[string]any{"groups": []string{"red,admin"}}), 403, nil, nil, "unsafe_claims"},
		{"list item with a newline is refused", with(map[string]any{"groups": []string{"red\nx: y"}}), 403, nil, nil, "unsafe_claims"},
		{"non-ASCII list item is refused", with(map[string]any{"groups": []string{"rød"}}), 403, nil, nil, "unsafe_claims"},
		{"string with a control character is refused", with(map[string]any{"email": "a@example.com\r\nx-user-roles: admin"}), 403, nil, nil, "unsafe_claims"},
		{"object is omitted", with(map[string]any{"org": map[string]any{"id": 1}, "email": "a@example.com"}), 200,
			map[string]string{"x-user-email": "a@example.com"}, []string{"x-user-org"}, ""},
		{"too long is omitted", with(map[string]any{"email": strings.Repeat("a", maxMappedHeaderLen+1)}), 200, nil, []string{"x-user-email"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := bearer(tt.tok)
			// A client's own copies, which must never reach the upstream.
			for _, n := range []string{"x-user-email", "x-user-groups", "x-user-org", "x-user-level", "x-user-issuer"} {
				h[n] = "smuggled"
			}
			resp := e.check(envoyRequest("GET", "/books", h, nil))
			if got := status(resp); got != tt.want {
				t.Fatalf("Check(%s) = %d, want %d (%v)", tt.name, got, tt.want, e.logs.lastCheck(t))
			}
			if tt.wantReason != "" {
				if got := e.logs.lastCheck(t)["reason"]; got != tt.wantReason {
					t.Errorf("Check(%s) reason = %v, want %s", tt.name, got, tt.wantReason)
				}
				return
			}
			got := okHeaders(resp)
			for k, v := range tt.set {
				if got[k] != v {
					t.Errorf("Check(%s) %s = %q, want %q", tt.name, k, got[k], v)
				}
			}
			remove := resp.GetOkResponse().GetHeadersToRemove()
			for _, k := range tt.removed {
				if !slices.Contains(remove, k) {
					t.Errorf("Check(%s) does not remove %s (removes %v)", tt.name, k, remove)
				}
				if _, ok := got[k]; ok {
					t.Errorf("Check(%s) sets %s, want it removed", tt.name, k)
				}
			}
			for _, opt := range resp.GetOkResponse().GetHeaders() {
				if opt.GetAppendAction().String() != "OVERWRITE_IF_EXISTS_OR_ADD" {
					t.Errorf("Check(%s) %s append action = %v", tt.name, opt.GetHeader().GetKey(), opt.GetAppendAction())
				}
			}
			// Forward-auth: the same headers, and the same removals.
			fa := forwardAuthRaw(t, ts, [][2]string{{"Authorization", "Bearer " + tt.tok}})
			for k, v := range tt.set {
				if fa.Header.Get(k) != v {
					t.Errorf("forward-auth(%s) %s = %q, want %q", tt.name, k, fa.Header.Get(k), v)
				}
			}
			rm := strings.Split(fa.Header.Get(HeaderRemove), ",")
			for _, k := range tt.removed {
				if !slices.Contains(rm, k) {
					t.Errorf("forward-auth(%s) does not remove %s (removes %v)", tt.name, k, rm)
				}
			}
		})
	}
	if !strings.Contains(e.logs.all(), "mapped headers omitted") {
		t.Errorf("omitting a mapped header was not logged")
	}
}

// forwardAuthRaw asks forward-auth and returns the response.
func forwardAuthRaw(t *testing.T, ts *httptest.Server, headers [][2]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", ts.URL+"/auth", nil)
	for _, h := range headers {
		req.Header.Add(h[0], h[1])
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestIssuerConfigErrors(t *testing.T) {
	good := func() IssuerConfig {
		return IssuerConfig{Name: "x", Issuer: "https://x.example", Audiences: []string{"a"}}
	}
	tests := []struct {
		name string
		mod  func(*IssuerConfig)
		want string
	}{
		{"bad name", func(c *IssuerConfig) { c.Name = "has space" }, "name"},
		{"no issuer", func(c *IssuerConfig) { c.Issuer = "" }, "issuer is required"},
		{"issuer not a URL without jwks_url", func(c *IssuerConfig) { c.Issuer = "urn:x" }, "discovery base"},
		{"bad jwks_url", func(c *IssuerConfig) { c.JWKSURL = "ftp://x" }, "jwks_url"},
		{"no audiences", func(c *IssuerConfig) { c.Audiences = nil }, "audiences"},
		{"HS256 allowed", func(c *IssuerConfig) { c.Algorithms = []string{"HS256"} }, `"HS256" is not allowed`},
		{"none allowed", func(c *IssuerConfig) { c.Algorithms = []string{"none"} }, `"none" is not allowed`},
		{"bad claim path", func(c *IssuerConfig) { c.Claims.Roles = []string{"a..b"} }, "claims.roles"},
		{"header name upper case", func(c *IssuerConfig) { c.Headers = map[string]string{"X-Email": "email"} }, "lowercase HTTP token"},
		{"pseudo-header", func(c *IssuerConfig) { c.Headers = map[string]string{":path": "email"} }, "lowercase HTTP token"},
		{"host", func(c *IssuerConfig) { c.Headers = map[string]string{"host": "email"} }, "reserved"},
		{"token header", func(c *IssuerConfig) { c.Headers = map[string]string{"authorization": "email"} }, "reserved"},
		{"identity header", func(c *IssuerConfig) { c.Headers = map[string]string{"x-user-id": "email"} }, "reserved"},
		{"hop-by-hop", func(c *IssuerConfig) { c.Headers = map[string]string{"transfer-encoding": "email"} }, "reserved"},
		{"policy header", func(c *IssuerConfig) { c.Headers = map[string]string{"x-tollgate-require": "email"} }, "reserved"},
		{"header path bad", func(c *IssuerConfig) { c.Headers = map[string]string{"x-email": `["x`} }, "headers.x-email"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ic := good()
			tt.mod(&ic)
			_, err := New(context.Background(), testConfig(Config{Issuers: []IssuerConfig{ic}}), nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New(%s) = %v, want an error containing %q", tt.name, err, tt.want)
			}
		})
	}
	t.Run("two issuers of one name", func(t *testing.T) {
		a, b := good(), good()
		b.Issuer = "https://y.example"
		_, err := New(context.Background(), testConfig(Config{Issuers: []IssuerConfig{a, b}}), nil, nil)
		if err == nil || !strings.Contains(err.Error(), "used twice") {
			t.Fatalf("New(two issuers named x) = %v, want an error", err)
		}
	})
}

// writeConfig writes a configuration file and returns its path.
func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "authz.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"unknown top-level key", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\nroute:\n  - {}\n", `:5: unknown key "route"`},
		{"misspelt issuer key", "issuers:\n  - name: a\n    issuer: https://a.example\n    audience: [x]\n", `:4: unknown key "audience"`},
		{"misspelt claims key", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\n    claims:\n      role: [x]\n", `:6: unknown key "role"`},
		{"misspelt match key", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\nroutes:\n  - match: {paths: /x}\n", `:6: unknown key "paths"`},
		{"misspelt route policy key", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\nroutes:\n  - match: {path: /x}\n    requires: [admin]\n", `:7: unknown key "requires"`},
		{"misspelt default key", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\ndefault:\n  require_all: [x]\n", `:6: unknown key "require_all"`},
		{"wrong type", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: x\n", `:4: cannot unmarshal`},
		{"bad duration", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\n    max_token_lifetime: forever\n", `:5:`},
		{"YAML syntax", "issuers:\n  - name: a\n   issuer: [\n", `:1: did not find expected`},
		{"duplicate key", "issuers:\n  - name: a\n    name: b\n    issuer: https://a.example\n    audiences: [x]\n", `:3:`},
		{"empty file", "", `:1: the file is empty`},
		{"no issuers", "routes: []\n", `at least one issuer`},
		{"bad issuer entry names its line", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\n  - name: b\n    issuer: https://b.example\n", `:5: issuers[1]: audiences`},
		{"bad cel names the route's line", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\nroutes:\n  - match: {path: /x}\n  - match: {path: /y}\n    cel: \"claims.sub ==\"\n", `:7: routes[1]`},
		{"route names an unknown issuer", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\nroutes:\n  - match: {path_prefix: /x}\n    issuers: [b]\n", `:6: routes[0]`},
		{"route list item with a comma", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\nroutes:\n  - match: {path: /x}\n    require: [\"a,b\"]\n", `write a YAML list`},
		{"path and path_prefix", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\nroutes:\n  - match: {path: /x, path_prefix: /y}\n", `exclusive`},
		{"host with port", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\nroutes:\n  - match: {hosts: [\"a.example:80\"]}\n", `without port`},
		{"lower-case method", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\nroutes:\n  - match: {methods: [get]}\n", `upper-case`},
		{"bad default", "issuers:\n  - name: a\n    issuer: https://a.example\n    audiences: [x]\ndefault:\n  cel: \"1\"\n", `:5: default`},
		{"two documents", "issuers: []\n---\nissuers: []\n", `second YAML document`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, t.TempDir(), tt.body)
			_, err := New(context.Background(), testConfig(Config{ConfigFile: p, ReloadInterval: time.Second}), nil, nil)
			if err == nil {
				t.Fatalf("New(%s) succeeded, want an error containing %q", tt.name, tt.want)
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%s) = %v\nwant FILE:LINE and %q", tt.name, err, tt.want)
			}
		})
	}
}

// TestConfigReload swaps the file the way a mounted ConfigMap changes
// (a new directory, then the ..data symlink renamed over), good, bad,
// good again.
func TestConfigReload(t *testing.T) {
	ka, kb := newTestKey(t, "ES256", "main"), newTestKey(t, "ES256", "issuer-b")
	ja, jb := newJWKSServer(t, ka), newJWKSServer(t, kb)
	dir := t.TempDir()
	version := 0
	publish := func(body string) {
		version++
		v := filepath.Join(dir, fmt.Sprintf("..v%d", version))
		must(t, os.Mkdir(v, 0o755))
		must(t, os.WriteFile(filepath.Join(v, "authz.yaml"), []byte(body), 0o644))
		tmp := filepath.Join(dir, "..data_tmp")
		must(t, os.Symlink(filepath.Base(v), tmp))
		must(t, os.Rename(tmp, filepath.Join(dir, "..data")))
		if version == 1 {
			must(t, os.Symlink("..data/authz.yaml", filepath.Join(dir, "authz.yaml")))
		}
	}
	issuers := fmt.Sprintf("issuers:\n  - name: a\n    issuer: %s\n    jwks_url: %s\n    audiences: [%s]\n", testIssuer, ja.jwksURL(), testAudience)
	withB := issuers + fmt.Sprintf("  - name: b\n    issuer: %s\n    jwks_url: %s\n    audiences: [books]\n", testIssuerB, jb.jwksURL())
	publish(issuers)
	e := newTestEnvWithJWKS(t, Config{ConfigFile: filepath.Join(dir, "authz.yaml"), ReloadInterval: 20 * time.Millisecond, CacheSize: 100}, nil)
	e.waitReady()
	tokA := ka.sign(t, claimsFor("u-a", "user"), nil)
	tokB := kb.sign(t, claimsB("u-b", nil), nil)
	check := func(tok string) int { return status(e.check(envoyRequest("GET", "/books", bearer(tok), nil))) }
	if check(tokA) != 200 || check(tokB) != 401 {
		t.Fatalf("before reload: a %d, b %d; want 200, 401", check(tokA), check(tokB))
	}

	// Good: b is added, and its tokens pass within the reload interval.
	publish(withB)
	waitFor(t, "b to be trusted", func() bool { return check(tokB) == 200 })
	// The reload is counted just after it is committed, so a check can
	// see b before the counter moves.
	waitFor(t, "the reload to be counted", func() bool {
		return counterValue(t, e.reg, "tollgate_authz_config_reloads_total", "result", "ok") >= 1
	})
	if got := counterValue(t, e.reg, "tollgate_authz_config_reloads_total", "result", "ok"); got != 1 {
		t.Errorf("reloads ok = %v, want 1", got)
	}

	// Bad: refused, logged with FILE:LINE, counted; the last good stays.
	publish(withB + "routes:\n  - match: {path: /books}\n    requirez: [admin]\n")
	waitFor(t, "the bad file to be refused", func() bool {
		return counterValue(t, e.reg, "tollgate_authz_config_reloads_total", "result", "error") == 1
	})
	if !strings.Contains(e.logs.all(), `authz.yaml:12: unknown key \"requirez\"`) {
		t.Errorf("refusal log does not name FILE:LINE and the key:\n%s", e.logs.all())
	}
	if check(tokA) != 200 || check(tokB) != 200 {
		t.Errorf("after a refused reload: a %d, b %d; want the last good configuration", check(tokA), check(tokB))
	}

	// Good again: a route making /books admin-only, and b dropped; b's
	// cached token ends with it.
	publish(issuers + "routes:\n  - match: {path_prefix: /books}\n    require: [admin]\n")
	waitFor(t, "the route to apply", func() bool { return check(tokA) == 403 })
	if got := check(tokB); got != 401 {
		t.Errorf("b's cached token after b was removed = %d, want 401", got)
	}
	waitFor(t, "the second reload to be counted", func() bool {
		return counterValue(t, e.reg, "tollgate_authz_config_reloads_total", "result", "ok") >= 2
	})
	if got := counterValue(t, e.reg, "tollgate_authz_config_reloads_total", "result", "ok"); got != 2 {
		t.Errorf("reloads ok = %v, want 2", got)
	}
}

func TestRoutes(t *testing.T) {
	k := newTestKey(t, "ES256", "main")
	jw := newJWKSServer(t, k)
	body := fmt.Sprintf(`issuers:
  - name: tollgate
    issuer: %s
    jwks_url: %s
    audiences: [%s]
routes:
  - route: users
    match: {path_prefix: /users}
    require: [admin]
  - route: reports
    match: {methods: [POST, DELETE], hosts: ["*.internal.example"], path: /reports}
    require_any: [auditor]
  - route: public-host
    match: {hosts: [Books.Example]}
    cel: "request.method == 'GET'"
default:
  require: [user]
`, testIssuer, jw.jwksURL(), testAudience)
	e := newTestEnvWithJWKS(t, Config{ConfigFile: writeConfig(t, t.TempDir(), body), ReloadInterval: time.Hour}, nil)
	e.waitReady()
	user := k.sign(t, claimsFor("u-1", "user"), nil)
	admin := k.sign(t, claimsFor("u-2", "admin", "user"), nil)
	nobody := k.sign(t, claimsFor("u-3"), nil)
	tests := []struct {
		name, method, host, path, tok string
		ext                           map[string]string
		want                          int
		route                         string
	}{
		{"/users as admin", "GET", "gw.example", "/users", admin, nil, 200, "users"},
		{"/users as user", "GET", "gw.example", "/users", user, nil, 403, "users"},
		{"/users/ as user", "GET", "gw.example", "/users/", user, nil, 403, "users"},
		{"/users/x as user", "GET", "gw.example", "/users/x", user, nil, 403, "users"},
		{"/users?x as user", "GET", "gw.example", "/users?a=b", user, nil, 403, "users"},
		{"/usersx is not /users", "GET", "gw.example", "/usersx", user, nil, 200, ""},
		{"POST /reports on a subdomain, no auditor", "POST", "a.internal.example:8443", "/reports", user, nil, 403, "reports"},
		{"GET /reports: method does not match", "GET", "a.internal.example", "/reports", user, nil, 200, ""},
		{"POST /reports on the bare domain: host does not match", "POST", "internal.example", "/reports", user, nil, 200, ""},
		{"POST /reports/x: exact path does not match", "POST", "a.internal.example", "/reports/x", user, nil, 200, ""},
		{"host matched case-insensitively, GET", "GET", "BOOKS.example:80", "/x", nobody, nil, 200, "public-host"},
		{"host matched, POST", "POST", "books.EXAMPLE", "/x", nobody, nil, 403, "public-host"},
		{"default needs user", "GET", "gw.example", "/books", nobody, nil, 403, ""},
		{"default and context_extensions: both must pass", "GET", "gw.example", "/books", user, map[string]string{"require": "admin"}, 403, ""},
		{"route and context_extensions: both must pass", "GET", "gw.example", "/users", admin, map[string]string{"require": "auditor"}, 403, "users"},
		{"route and context_extensions: both pass", "GET", "gw.example", "/users", admin, map[string]string{"require": "user"}, 200, "users"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := envoyRequest(tt.method, tt.path, bearer(tt.tok), tt.ext)
			req.Attributes.Request.Http.Host = tt.host
			resp := e.check(req)
			if got := status(resp); got != tt.want {
				t.Fatalf("Check(%s) = %d, want %d (%v)", tt.name, got, tt.want, e.logs.lastCheck(t))
			}
			if got, _ := e.logs.lastCheck(t)["route"].(string); got != tt.route {
				t.Errorf("Check(%s) route = %q, want %q", tt.name, got, tt.route)
			}
		})
	}
	// Forward-auth matches the original request the proxy names.
	ts := httptest.NewServer(e.srv.HTTPHandler())
	t.Cleanup(ts.Close)
	for _, tt := range []struct {
		name string
		hdr  [][2]string
		want int
	}{
		{"Traefik-style /users as user", [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/users/x"}, {"X-Forwarded-Host", "gw.example"}}, 403},
		{"nginx-style /users as user", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/users"}}, 403},
		{"Traefik-style /books as user", [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/books"}, {"X-Forwarded-Host", "gw.example"}}, 200},
	} {
		h := append([][2]string{{"Authorization", "Bearer " + user}}, tt.hdr...)
		if got := forwardAuth(t, ts, "GET", "/auth", h).Status; got != tt.want {
			t.Errorf("forward-auth(%s) = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestRouteMatch(t *testing.T) {
	tests := []struct {
		m                  RouteMatch
		method, host, path string
		want               bool
	}{
		{RouteMatch{PathPrefix: "/users"}, "GET", "h", "/users", true},
		{RouteMatch{PathPrefix: "/users/"}, "GET", "h", "/users", true},
		{RouteMatch{PathPrefix: "/users"}, "GET", "h", "/users/a/b", true},
		{RouteMatch{PathPrefix: "/users"}, "GET", "h", "/usersx", false},
		{RouteMatch{PathPrefix: "/users"}, "GET", "h", "/Users", false},
		{RouteMatch{PathPrefix: "/"}, "GET", "h", "/anything", true},
		{RouteMatch{Path: "/users"}, "GET", "h", "/users/", false},
		{RouteMatch{Hosts: []string{"*.example.com"}}, "GET", "a.b.example.com", "/", true},
		{RouteMatch{Hosts: []string{"*.example.com"}}, "GET", "example.com", "/", false},
		{RouteMatch{Hosts: []string{"*.example.com"}}, "GET", "badexample.com", "/", false},
		{RouteMatch{Hosts: []string{"example.com"}}, "GET", "EXAMPLE.com:8080", "/", true},
		{RouteMatch{Hosts: []string{"::1"}}, "GET", "[::1]:8080", "/", true},
		{RouteMatch{Methods: []string{"GET"}}, "POST", "h", "/", false},
	}
	s := &Server{programs: newCELPrograms()}
	for _, tt := range tests {
		r, err := s.newRoute(RouteConfig{Match: tt.m}, &trustState{})
		if err != nil {
			t.Fatalf("newRoute(%+v): %v", tt.m, err)
		}
		if got := r.matches(tt.method, tt.host, tt.path); got != tt.want {
			t.Errorf("match %+v against %s %s%s = %v, want %v", tt.m, tt.method, tt.host, tt.path, got, tt.want)
		}
	}
}

func TestSingleIssuerFlagsMeanOneIssuer(t *testing.T) {
	// The single-issuer settings are the same as a one-issuer list.
	k := newTestKey(t, "ES256", "main")
	jw := newJWKSServer(t, k)
	flagCfg := newTestEnvWithJWKS(t, Config{}, jw)
	listCfg := newTestEnvWithJWKS(t, Config{Issuers: []IssuerConfig{{Name: DefaultIssuerName, Issuer: testIssuer, JWKSURL: jw.jwksURL(), Audiences: []string{testAudience}}}}, nil)
	flagCfg.waitReady()
	listCfg.waitReady()
	tok := k.sign(t, claimsFor("u-1", "user"), nil)
	a := flagCfg.check(envoyRequest("GET", "/books", bearer(tok), nil))
	b := listCfg.check(envoyRequest("GET", "/books", bearer(tok), nil))
	if diff := cmp.Diff(describe(a), describe(b)); diff != "" {
		t.Errorf("flags and a one-issuer list answer differently (-flags +list):\n%s", diff)
	}
}

// TestJWKSGaugesPerIssuer: the key set gauges are per issuer, so one
// issuer's outage or refused keys is not hidden by another's healthy
// set (with one unlabelled gauge, the last fetch won).
func TestJWKSGaugesPerIssuer(t *testing.T) {
	ka, ka2, kb := newTestKey(t, "ES256", "a1"), newTestKey(t, "ES256", "a2"), newTestKey(t, "ES256", "b1")
	ja, jb := newJWKSServer(t, ka, ka2), newJWKSServer(t, kb)
	jb.mu.Lock()
	jb.body = append(jb.body[:len(jb.body)-2], []byte(`,{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}]}`)...)
	jb.mu.Unlock()
	e := newTestEnvWithJWKS(t, twoIssuers(ja, jb, nil), nil)
	e.waitReady()
	for _, c := range []struct {
		metric, issuer string
		want           float64
	}{
		{"tollgate_authz_jwks_keys", "a", 2},
		{"tollgate_authz_jwks_keys", "b", 1},
		{"tollgate_authz_jwks_refused_keys", "a", 0},
		{"tollgate_authz_jwks_refused_keys", "b", 1},
	} {
		if got := counterValue(t, e.reg, c.metric, "issuer", c.issuer); got != c.want {
			t.Errorf("%s{issuer=%q} = %v, want %v", c.metric, c.issuer, got, c.want)
		}
	}
	for _, name := range []string{"a", "b"} {
		if got := counterValue(t, e.reg, "tollgate_authz_jwks_last_success_timestamp_seconds", "issuer", name); got < float64(time.Now().Add(-time.Minute).Unix()) {
			t.Errorf("tollgate_authz_jwks_last_success_timestamp_seconds{issuer=%q} = %v, want a time in the last minute", name, got)
		}
	}
}
