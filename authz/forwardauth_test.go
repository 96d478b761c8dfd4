package authz

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// faResult is what a proxy sees of a forward-auth answer.
type faResult struct {
	Status int
	Header map[string]string
	Body   string
}

// faHeaders are the response headers the tests look at.
var faHeaders = []string{"X-User-Id", "X-User-Name", "X-User-Roles", "X-Envoy-Auth-Headers-To-Remove",
	"Www-Authenticate", "Content-Type", "Retry-After"}

func forwardAuth(t *testing.T, ts *httptest.Server, method, path string, headers [][2]string) faResult {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		req.Header.Add(h[0], h[1])
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := faResult{Status: resp.StatusCode, Header: map[string]string{}, Body: string(body)}
	for _, h := range faHeaders {
		if v := resp.Header.Values(h); len(v) > 0 {
			r.Header[h] = strings.Join(v, " | ")
		}
	}
	return r
}

func faAllow(sub, name, roles string, remove string) faResult {
	h := map[string]string{"X-User-Id": sub, "X-Envoy-Auth-Headers-To-Remove": remove}
	if name != "" {
		h["X-User-Name"] = name
	}
	if roles != "" {
		h["X-User-Roles"] = roles
	}
	return faResult{Status: 200, Header: h}
}

func faDeny(status int, challenge, msg string) faResult {
	h := map[string]string{"Content-Type": "application/json"}
	if challenge != "" {
		h["Www-Authenticate"] = challenge
	} else {
		h["Retry-After"] = "5"
	}
	return faResult{Status: status, Header: h, Body: `{"message":"` + msg + `"}` + "\n"}
}

func TestForwardAuth(t *testing.T) {
	e := newTestEnv(t, Config{CacheSize: 10})
	e.waitReady()
	ts := httptest.NewServer(e.srv.HTTPHandler())
	t.Cleanup(ts.Close)
	user := e.key.sign(t, claimsFor("u-7", "user"), nil)
	admin := e.key.sign(t, claimsFor("u-8", "admin", "user"), nil)
	noName := claimsFor("u-9", "user")
	delete(noName, "name")
	const removeAll = "authorization,x-access-tokens,x-access-token,dpop"

	var (
		noToken   = faDeny(401, `Bearer realm="tollgate" | DPoP `+dpopAlgs, "a valid token is missing")
		invalid   = faDeny(401, `Bearer realm="tollgate", error="invalid_token"`, "token is invalid")
		forbidden = faDeny(403, `Bearer realm="tollgate", error="insufficient_scope"`, "insufficient permissions")
	)
	tests := []struct {
		name       string
		method     string
		path       string
		headers    [][2]string
		want       faResult
		wantMethod string
		wantPath   string
		wantReason string
	}{
		{
			name: "Envoy http_service: path prefix plus original path", method: "GET", path: "/auth/books?page=2",
			headers: [][2]string{{"Authorization", "Bearer " + user}},
			want:    faAllow("u-7", "alice", "user", removeAll), wantMethod: "GET", wantPath: "/books", wantReason: "verified",
		},
		{
			name: "nginx auth_request", method: "GET", path: "/auth",
			headers: [][2]string{{"X-Access-Tokens", user}, {"X-Original-Method", "DELETE"}, {"X-Original-URI", "/books/3?x=y"}},
			want:    faAllow("u-7", "alice", "user", removeAll), wantMethod: "DELETE", wantPath: "/books/3", wantReason: "cached",
		},
		{
			name: "Traefik ForwardAuth", method: "GET", path: "/auth",
			headers: [][2]string{{"Authorization", "bearer " + user}, {"X-Forwarded-Method", "POST"}, {"X-Forwarded-Uri", "/book"}},
			want:    faAllow("u-7", "alice", "user", removeAll), wantMethod: "POST", wantPath: "/book", wantReason: "cached",
		},
		{
			name: "HEAD works too", method: "HEAD", path: "/auth",
			headers: [][2]string{{"X-Access-Token", user}},
			want:    faAllow("u-7", "alice", "user", removeAll), wantMethod: "HEAD", wantPath: "/", wantReason: "cached",
		},
		{
			name: "no name: x-user-name removed", method: "GET", path: "/auth/books",
			headers: [][2]string{{"Authorization", "Bearer " + e.key.sign(t, noName, nil)}},
			want:    faAllow("u-9", "", "user", "x-user-name,"+removeAll), wantMethod: "GET", wantPath: "/books", wantReason: "verified",
		},
		{
			name: "no token", method: "GET", path: "/auth/books",
			want: noToken, wantMethod: "GET", wantPath: "/books", wantReason: "no_token",
		},
		{
			name: "invalid token", method: "GET", path: "/auth/books",
			headers: [][2]string{{"Authorization", "Bearer " + user[:strings.LastIndex(user, ".")] + admin[strings.LastIndex(admin, "."):]}},
			want:    invalid, wantMethod: "GET", wantPath: "/books", wantReason: "bad_signature",
		},
		{
			name: "two Authorization headers", method: "GET", path: "/auth/books",
			headers: [][2]string{{"Authorization", "Bearer " + user}, {"Authorization", "Bearer " + admin}},
			want:    invalid, wantMethod: "GET", wantPath: "/books", wantReason: "malformed",
		},
		{
			name: "require admin, user token", method: "GET", path: "/auth/users",
			headers: [][2]string{{"Authorization", "Bearer " + user}, {"X-Tollgate-Require", "admin"}, {"X-Tollgate-Route", "users"}},
			want:    forbidden, wantMethod: "GET", wantPath: "/users", wantReason: "missing_role",
		},
		{
			name: "require admin, admin token", method: "GET", path: "/auth/users",
			headers: [][2]string{{"Authorization", "Bearer " + admin}, {"X-Tollgate-Require", "admin"}},
			want:    faAllow("u-8", "alice", "admin,user", removeAll), wantMethod: "GET", wantPath: "/users", wantReason: "verified",
		},
		{
			name: "require header twice (client copy beside the proxy's)", method: "GET", path: "/auth/users",
			headers: [][2]string{{"Authorization", "Bearer " + admin}, {"X-Tollgate-Require", "admin"}, {"X-Tollgate-Require", "user"}},
			want:    forbidden, wantMethod: "GET", wantPath: "/users", wantReason: "bad_policy",
		},
		{
			name: "unknown policy header", method: "GET", path: "/auth/users",
			headers: [][2]string{{"Authorization", "Bearer " + admin}, {"X-Tollgate-Requires", "admin"}},
			want:    forbidden, wantMethod: "GET", wantPath: "/users", wantReason: "bad_policy",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := forwardAuth(t, ts, tt.method, tt.path, tt.headers)
			if tt.method == "HEAD" {
				tt.want.Body = ""
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s %s (%s) = %d, want %d; diff (-want +got):\n%s", tt.method, tt.path, tt.name, got.Status, tt.want.Status, diff)
			}
			line := e.logs.lastCheck(t)
			for k, want := range map[string]string{"protocol": "http", "method": tt.wantMethod, "path": tt.wantPath, "reason": tt.wantReason} {
				if line[k] != want {
					t.Errorf("%s: log %s = %v, want %s", tt.name, k, line[k], want)
				}
			}
		})
	}
}

func TestForwardAuthUnavailable(t *testing.T) {
	k := newTestKey(t, "ES256", "main")
	jw := newJWKSServer(t, k)
	jw.fail(500)
	e := newTestEnvWithJWKS(t, Config{}, jw)
	ts := httptest.NewServer(e.srv.HTTPHandler())
	t.Cleanup(ts.Close)
	got := forwardAuth(t, ts, "GET", "/auth/books", [][2]string{{"Authorization", "Bearer " + k.sign(t, claimsFor("u", "user"), nil)}})
	want := faDeny(503, "", "authorization is unavailable")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /auth/books with no keys = %d, want 503; diff:\n%s", got.Status, diff)
	}
}

func TestOpsEndpoints(t *testing.T) {
	k := newTestKey(t, "ES256", "main")
	jw := newJWKSServer(t, k)
	jw.fail(500)
	e := newTestEnvWithJWKS(t, Config{CacheSize: 10}, jw)
	ts := httptest.NewServer(e.srv.HTTPHandler())
	t.Cleanup(ts.Close)
	get := func(path string) (int, string) {
		resp, err := ts.Client().Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("GET /healthz = %d, want 200", code)
	}
	if code, _ := get("/readyz"); code != 503 {
		t.Errorf("GET /readyz before keys = %d, want 503", code)
	}
	jw.setKeys(t, k)
	e.waitReady()
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("GET /readyz after keys = %d (%s), want 200", code, body)
	}
	if code, body := get("/nope"); code != 404 || !strings.Contains(body, `"message"`) {
		t.Errorf("GET /nope = %d %s, want a JSON 404", code, body)
	}
	tok := k.sign(t, claimsFor("u", "user"), nil)
	e.check(envoyRequest("GET", "/books", bearer(tok), nil))
	e.check(envoyRequest("GET", "/books", bearer(tok), nil))
	e.check(envoyRequest("GET", "/books", nil, nil))
	_, metrics := get("/metrics")
	for _, want := range []string{
		`tollgate_authz_checks_total{decision="allow",reason="verified"} 1`,
		`tollgate_authz_checks_total{decision="allow",reason="cached"} 1`,
		`tollgate_authz_checks_total{decision="deny",reason="no_token"} 1`,
		`tollgate_authz_check_duration_seconds_count{decision="allow",protocol="grpc"} 2`,
		`tollgate_authz_jwks_fetches_total{result="ok"} 1`,
		`tollgate_authz_jwks_keys{issuer="tollgate"} 1`,
		`tollgate_authz_token_cache_hits_total 1`,
		`tollgate_authz_token_cache_misses_total 1`,
		`tollgate_authz_token_cache_entries 1`,
		`tollgate_http_requests_total{code="200",method="GET",route="GET /readyz"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(metrics, `tollgate_authz_jwks_fetches_total{result="error"}`) {
		t.Errorf("/metrics lacks the JWKS fetch errors")
	}
}
