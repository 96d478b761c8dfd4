package issuer

import (
	"net/http"
	"strings"
	"testing"
)

// TestBadInput sends every class of bad request: each gets a 4xx with a
// JSON message, never a 500, and never leaves a user behind.
func TestBadInput(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "existing", goodPassword)
	reg := func(body string) request { return request{method: "POST", path: "/register", body: body} }
	longName := strings.Repeat("a", 20<<10)
	for _, tc := range []struct {
		name string
		rq   request
		want int
		msg  string // part of the message
	}{
		{"malformed JSON", reg(`{"name": "alain", "password": `), 400, "not valid JSON"},
		{"not JSON at all", reg(`name=alain&password=secret`), 400, "not valid JSON"},
		{"empty body", request{method: "POST", path: "/register", ctype: "application/json"}, 400, "empty"},
		{"whitespace body", reg("  \n "), 400, "empty"},
		{"JSON null", reg(`null`), 400, "JSON object"},
		{"JSON array", reg(`[{"name": "alain"}]`), 400, "JSON object"},
		{"JSON string", reg(`"alain"`), 400, "JSON object"},
		{"two objects", reg(`{"name":"alain","password":"` + goodPassword + `"}{}`), 400, "after the JSON object"},
		{"unknown field", reg(`{"name":"alain","password":"` + goodPassword + `","admin":true}`), 400, `"admin"`},
		{"unknown field roles", reg(`{"name":"alain","password":"` + goodPassword + `","roles":["admin"]}`), 400, `"roles"`},
		{"name is a number", reg(`{"name":5,"password":"` + goodPassword + `"}`), 400, `"name" must be a string`},
		{"password is an object", reg(`{"name":"alain","password":{"x":1}}`), 400, `"password" must be a string`},
		{"name is null", reg(`{"name":null,"password":"` + goodPassword + `"}`), 400, "name is required"},
		{"missing password", reg(`{"name":"alain"}`), 400, "password is required"},
		{"huge number", reg(`{"name":1e400,"password":"x"}`), 400, ""},
		{"deep nesting", reg(`{"name":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`), 400, ""},
		{"invalid UTF-8 in name", reg("{\"name\":\"al\xffain\",\"password\":\"" + goodPassword + "\"}"), 400, "UTF-8"},
		{"lone surrogate escape in name", reg(`{"name":"al\ud800ain","password":"` + goodPassword + `"}`), 400, "only ASCII"},
		{"NUL in name", reg(`{"name":"al\u0000ain","password":"` + goodPassword + `"}`), 400, "only ASCII"},
		{"SQL in name", reg(`{"name":"a'; DROP TABLE users; --","password":"` + goodPassword + `"}`), 400, "only ASCII"},
		{"body over the limit", reg(`{"name":"alain","password":"` + strings.Repeat("x", maxRegisterBody) + `"}`), 413, "larger than"},
		{"text/plain", request{method: "POST", path: "/register", body: `{"name":"alain","password":"` + goodPassword + `"}`, ctype: "text/plain"}, 415, "application/json"},
		{"form content type", request{method: "POST", path: "/register", body: `{"name":"alain","password":"` + goodPassword + `"}`, ctype: "application/x-www-form-urlencoded"}, 415, "application/json"},
		{"malformed content type", request{method: "POST", path: "/register", body: `{}`, ctype: "application/json; charset"}, 415, ""},
		{"taken name", reg(`{"name":"existing","password":"` + goodPassword + `"}`), 409, "taken"},
		{"very long header", request{method: "POST", path: "/register", body: `{"name":"alain","password":"` + goodPassword + `"}`,
			headers: map[string]string{"X-Padding": strings.Repeat("p", 20<<10)}}, 431, "headers"},
		{"GET /register", request{method: "GET", path: "/register"}, 405, "POST"},
		{"PUT /login", request{method: "PUT", path: "/login"}, 405, "POST"},
		{"DELETE /users", request{method: "DELETE", path: "/users"}, 405, "GET"},
		{"POST jwks", request{method: "POST", path: "/.well-known/jwks.json", body: "{}"}, 405, "GET"},
		{"unknown path", request{method: "GET", path: "/admin"}, 404, "not found"},
		{"path trick", request{method: "GET", path: "/register/../users"}, 405, ""}, // cleaned to /users by the mux: redirect or 405, never the list
		{"login without credentials", request{method: "POST", path: "/login"}, 401, "credentials"},
		{"login with non-UTF-8 name", request{method: "POST", path: "/login", user: "al\xffain", pass: goodPassword}, 401, "invalid name or password"},
		{"login with a very long name", request{method: "POST", path: "/login", user: longName[:10<<10], pass: goodPassword}, 401, "invalid name or password"},
		{"login with SQL as name", request{method: "POST", path: "/login", user: "' OR '1'='1", pass: "' OR '1'='1"}, 401, "invalid name or password"},
		{"login with an oversized password", request{method: "POST", path: "/login", user: "existing", pass: strings.Repeat("x", MaxPasswordBytes+1)}, 401, "invalid name or password"},
		{"users with a huge role header", request{method: "GET", path: "/users", headers: map[string]string{"X-User-Id": "x", "X-User-Roles": strings.Repeat("user,", 1000)}}, 403, "admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := env.userCount(t)
			hashes := env.hashes.n.Load()
			res := env.do(t, tc.rq)
			if tc.name == "path trick" {
				if res.status < 300 || res.status >= 500 {
					t.Fatalf("%s %s = %d, want a 3xx or 4xx", tc.rq.method, tc.rq.path, res.status)
				}
				return
			}
			if res.status != tc.want {
				t.Fatalf("%s %s (%s) = %d %s, want %d", tc.rq.method, tc.rq.path, tc.name, res.status, res.body, tc.want)
			}
			if ct := res.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			msg := res.message(t)
			if msg == "" || !strings.Contains(msg, tc.msg) {
				t.Errorf("message = %q, want one containing %q", msg, tc.msg)
			}
			if tc.want == 405 && res.header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
			if after := env.userCount(t); after != before {
				t.Errorf("users %d -> %d after a refused request", before, after)
			}
			if tc.rq.path == "/register" && env.hashes.n.Load() != hashes {
				t.Errorf("a refused registration computed a hash")
			}
		})
	}
	// The table survived every attempt.
	env.mustLogin(t, "existing", goodPassword)
}

// TestNoServerErrorsForClientInput sends odd but well-formed requests
// to every route and checks none is answered with a 5xx.
func TestNoServerErrorsForClientInput(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "BREW"} {
		for _, path := range []string{"/register", "/login", "/users", "/.well-known/jwks.json", "/.well-known/openid-configuration", "/", "/x", "/users/1",
			"/token", "/revoke", "/logout", "/revocations", "/revocations?since=-5", "/revocations?since=99999999999999999999",
			"/users/00000000-0000-4000-8000-000000000000/revoke", "/users/%00/revoke"} {
			for _, headers := range []map[string]string{
				nil,
				{"X-User-Id": "a", "X-User-Roles": "admin", "Content-Type": "application/json"},
				{"Authorization": "Basic " + strings.Repeat("=", 100), "If-None-Match": "garbage", "Range": "bytes=5-1"},
				{"Authorization": "Bearer a.b.c", "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
				{"X-Access-Tokens": strings.Repeat("e", 10000), "Content-Type": "application/x-www-form-urlencoded"},
			} {
				res := env.do(t, request{method: method, path: path, headers: headers, body: `{"name":"x"}`})
				if res.status >= 500 {
					t.Errorf("%s %s %v = %d %s", method, path, headers, res.status, res.body)
				}
			}
		}
	}
	if res := env.do(t, request{method: "GET", path: "/users", headers: map[string]string{"X-User-Id": "a", "X-User-Roles": "admin"}}); res.status != http.StatusOK {
		t.Errorf("GET /users as admin = %d, want 200", res.status)
	}
}
