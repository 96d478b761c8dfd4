package issuer

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwt"
)

// form posts an urlencoded form to path.
func (e *testEnv) form(t *testing.T, path string, v url.Values, headers ...string) response {
	t.Helper()
	h := map[string]string{}
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = headers[i+1]
	}
	return e.do(t, request{method: "POST", path: path, body: v.Encode(), ctype: "application/x-www-form-urlencoded", headers: h})
}

func (r response) oauthError(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.json(t, &e)
	return e.Error
}

// grant is a /token answer.
type grant struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

func (e *testEnv) passwordGrant(t *testing.T, name, password string) grant {
	t.Helper()
	res := e.form(t, "/token", url.Values{"grant_type": {"password"}, "client_id": {DefaultClient}, "username": {name}, "password": {password}})
	if res.status != http.StatusOK {
		t.Fatalf("password grant(%s) = %d %s, want 200", name, res.status, res.body)
	}
	var g grant
	res.json(t, &g)
	return g
}

func (e *testEnv) refreshGrant(t *testing.T, refresh string) response {
	t.Helper()
	return e.form(t, "/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {DefaultClient}, "refresh_token": {refresh}})
}

func (e *testEnv) mustRefresh(t *testing.T, refresh string) grant {
	t.Helper()
	res := e.refreshGrant(t, refresh)
	if res.status != http.StatusOK {
		t.Fatalf("refresh grant = %d %s, want 200", res.status, res.body)
	}
	var g grant
	res.json(t, &g)
	return g
}

// feedState is the revocation feed as a follower sees it from scratch.
type feedState struct {
	Version  int64            `json:"version"`
	Full     bool             `json:"full"`
	Tokens   []revokedToken   `json:"tokens"`
	Subjects []revokedSubject `json:"subjects"`
}

func (e *testEnv) feed(t *testing.T, since string) feedState {
	t.Helper()
	res := e.do(t, request{method: "GET", path: "/revocations?since=" + since})
	if res.status != http.StatusOK {
		t.Fatalf("GET /revocations = %d %s, want 200", res.status, res.body)
	}
	var f feedState
	res.json(t, &f)
	return f
}

func (f feedState) revokedJTI(jti string) bool {
	for _, tk := range f.Tokens {
		if tk.JTI == jti {
			return true
		}
	}
	return false
}

func jtiOf(t *testing.T, tok string) string {
	t.Helper()
	parsed, err := jwt.ParseString(tok, jwt.WithVerify(false), jwt.WithValidate(false))
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	return parsed.JwtID()
}

func iatOf(t *testing.T, tok string) time.Time {
	t.Helper()
	parsed, err := jwt.ParseString(tok, jwt.WithVerify(false), jwt.WithValidate(false))
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	return parsed.IssuedAt()
}

func TestTokenEndpointInput(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	good := func() url.Values {
		return url.Values{"grant_type": {"password"}, "client_id": {DefaultClient}, "username": {"alain"}, "password": {goodPassword}}
	}
	with := func(k, v string) url.Values { f := good(); f.Set(k, v); return f }
	without := func(k string) url.Values { f := good(); f.Del(k); return f }
	tests := []struct {
		name       string
		body       string
		ctype      string
		wantStatus int
		wantError  string
	}{
		{"password grant", good().Encode(), "", 200, ""},
		{"wrong password", with("password", "not the password").Encode(), "", 400, "invalid_grant"},
		{"unknown user", with("username", "nobody").Encode(), "", 400, "invalid_grant"},
		{"unknown client", with("client_id", "evil-app").Encode(), "", 401, "invalid_client"},
		{"no client", without("client_id").Encode(), "", 401, "invalid_client"},
		{"no grant type", without("grant_type").Encode(), "", 400, "invalid_request"},
		{"unsupported grant type", with("grant_type", "client_credentials").Encode(), "", 400, "unsupported_grant_type"},
		{"refresh without token", with("grant_type", "refresh_token").Encode(), "", 400, "invalid_request"},
		{"unknown refresh token", url.Values{"grant_type": {"refresh_token"}, "client_id": {DefaultClient}, "refresh_token": {"nope"}}.Encode(), "", 400, "invalid_grant"},
		{"parameter twice", good().Encode() + "&client_id=" + DefaultClient, "", 400, "invalid_request"},
		{"JSON body", `{"grant_type":"password"}`, "application/json", 400, "invalid_request"},
		{"text content type", good().Encode(), "none", 400, "invalid_request"},
		{"bad escape", "grant_type=%zz", "", 400, "invalid_request"},
		{"oversized body", good().Encode() + "&pad=" + strings.Repeat("a", maxFormBody), "", 413, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctype := tt.ctype
			switch ctype {
			case "":
				ctype = "application/x-www-form-urlencoded"
			case "none":
				ctype = ""
			}
			rq := request{method: "POST", path: "/token", body: tt.body, ctype: ctype}
			if ctype == "" {
				rq.ctype = "text/plain"
			}
			res := env.do(t, rq)
			if res.status != tt.wantStatus {
				t.Fatalf("POST /token(%s) = %d %s, want %d", tt.name, res.status, res.body, tt.wantStatus)
			}
			if cc := res.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("POST /token(%s) Cache-Control = %q, want no-store", tt.name, cc)
			}
			if tt.wantError != "" {
				if got := res.oauthError(t); got != tt.wantError {
					t.Errorf("POST /token(%s) error = %q, want %q", tt.name, got, tt.wantError)
				}
				return
			}
			var g grant
			res.json(t, &g)
			if g.AccessToken == "" || g.RefreshToken == "" || g.TokenType != "Bearer" || g.ExpiresIn != 2700 {
				t.Errorf("POST /token(%s) = %+v, want an access token, a refresh token, Bearer, 2700", tt.name, g)
			}
		})
	}
}

func TestLoginRefreshToken(t *testing.T) {
	tests := []struct {
		name        string
		disable     bool
		wantRefresh bool
	}{
		{"refresh on by default", false, true},
		{"refresh turned off", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.DisableRefresh = tt.disable })
			env.mustRegister(t, "alain", goodPassword)
			res := env.login(t, "alain", goodPassword)
			var out tokenResponse
			res.json(t, &out)
			if out.Token == "" || out.Token != out.AccessToken {
				t.Fatalf("login(%s) = %s, want token == access_token", tt.name, res.body)
			}
			if got := out.RefreshToken != ""; got != tt.wantRefresh {
				t.Fatalf("login(%s) has refresh token = %v, want %v", tt.name, got, tt.wantRefresh)
			}
			if tt.wantRefresh {
				env.mustRefresh(t, out.RefreshToken)
				return
			}
			if res := env.refreshGrant(t, "anything"); res.status != 400 || res.oauthError(t) != "unsupported_grant_type" {
				t.Errorf("refresh grant(%s) = %d %s, want 400 unsupported_grant_type", tt.name, res.status, res.body)
			}
		})
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.DB = d.dsn(t) })
			env.mustRegister(t, "alain", goodPassword)
			g0 := env.passwordGrant(t, "alain", goodPassword)
			g1 := env.mustRefresh(t, g0.RefreshToken)
			g2 := env.mustRefresh(t, g1.RefreshToken)
			if g1.RefreshToken == g0.RefreshToken || g2.RefreshToken == g1.RefreshToken {
				t.Fatalf("refresh returned the same refresh token again, want a new one each time")
			}
			if jtiOf(t, g1.AccessToken) == jtiOf(t, g0.AccessToken) {
				t.Fatalf("refresh returned the same access token, want a new one")
			}
			// The stored form is the hash, never the token.
			var n int
			if err := env.svc.db.QueryRow(env.svc.db.Rebind(`SELECT COUNT(*) FROM refresh_tokens WHERE hash = $1`), g2.RefreshToken).Scan(&n); err != nil || n != 0 {
				t.Fatalf("refresh token found stored in the clear (%d rows, %v)", n, err)
			}
			if f := env.feed(t, "0"); len(f.Tokens) != 0 {
				t.Fatalf("feed before reuse = %+v, want nothing revoked", f.Tokens)
			}

			// Reuse of a used token: refused, and the whole family ends.
			if res := env.refreshGrant(t, g0.RefreshToken); res.status != 400 || res.oauthError(t) != "invalid_grant" {
				t.Fatalf("refresh(used token) = %d %s, want 400 invalid_grant", res.status, res.body)
			}
			if res := env.refreshGrant(t, g2.RefreshToken); res.status != 400 || res.oauthError(t) != "invalid_grant" {
				t.Errorf("refresh(latest token after reuse) = %d %s, want 400 invalid_grant (family revoked)", res.status, res.body)
			}
			f := env.feed(t, "0")
			for i, g := range []grant{g0, g1, g2} {
				if !f.revokedJTI(jtiOf(t, g.AccessToken)) {
					t.Errorf("feed after reuse lacks access token %d of the family", i)
				}
			}
			if !strings.Contains(env.logs.String(), "refresh token reused") {
				t.Errorf("reuse was not logged")
			}
			if strings.Contains(env.logs.String(), g0.RefreshToken) {
				t.Errorf("a refresh token reached the log")
			}
		})
	}
}

func TestConcurrentRefresh(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.DB = d.dsn(t) })
			env.mustRegister(t, "alain", goodPassword)
			g := env.passwordGrant(t, "alain", goodPassword)
			const n = 16 // more than the SQLite pool (8 connections)
			var wg sync.WaitGroup
			statuses := make([]response, n)
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					statuses[i] = env.refreshGrant(t, g.RefreshToken)
				})
			}
			close(start)
			wg.Wait()
			ok := 0
			for i, res := range statuses {
				switch {
				case res.status == 200:
					ok++
				case res.status == 400 && res.oauthError(t) == "invalid_grant":
				default:
					t.Errorf("concurrent refresh %d = %d %s, want 200 or 400 invalid_grant", i, res.status, res.body)
				}
			}
			if ok != 1 {
				t.Errorf("concurrent refreshes with one token: %d got 200, want exactly 1", ok)
			}
			var rows int
			if err := env.svc.db.QueryRow(`SELECT COUNT(*) FROM refresh_tokens`).Scan(&rows); err != nil || rows != 2 {
				t.Errorf("refresh tokens stored after the race = %d (%v), want 2 (the used one and its one successor)", rows, err)
			}
		})
	}
}

func TestRefreshBoundToClient(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.Clients = []string{DefaultClient, "other-app"} })
	env.mustRegister(t, "alain", goodPassword)
	g := env.passwordGrant(t, "alain", goodPassword)
	res := env.form(t, "/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {"other-app"}, "refresh_token": {g.RefreshToken}})
	if res.status != 400 || res.oauthError(t) != "invalid_grant" {
		t.Fatalf("refresh(other client) = %d %s, want 400 invalid_grant", res.status, res.body)
	}
	// Another client's attempt does not consume the token.
	env.mustRefresh(t, g.RefreshToken)
}

func TestSessionLifetimes(t *testing.T) {
	tests := []struct {
		name  string
		steps []time.Duration // waits before each refresh; the last must fail
	}{
		{"idle lifetime", []time.Duration{DefaultSessionIdleTTL}},
		{"absolute lifetime", []time.Duration{13 * 24 * time.Hour, 13 * 24 * time.Hour, 13 * 24 * time.Hour, 13 * 24 * time.Hour,
			13 * 24 * time.Hour, 13 * 24 * time.Hour, 13 * 24 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.KeyActivationDelay = 0 })
			env.mustRegister(t, "alain", goodPassword)
			refresh := env.passwordGrant(t, "alain", goodPassword).RefreshToken
			for i, wait := range tt.steps {
				env.clock.Advance(wait)
				reload(t, env)
				res := env.refreshGrant(t, refresh)
				if i < len(tt.steps)-1 {
					if res.status != 200 {
						t.Fatalf("refresh %d after %v = %d %s, want 200", i, wait, res.status, res.body)
					}
					var g grant
					res.json(t, &g)
					refresh = g.RefreshToken
					continue
				}
				if res.status != 400 || res.oauthError(t) != "invalid_grant" {
					t.Fatalf("refresh(%s passed) = %d %s, want 400 invalid_grant", tt.name, res.status, res.body)
				}
			}
		})
	}
}

func TestRevokeEndpoint(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.Clients = []string{DefaultClient, "other-app"} })
	env.mustRegister(t, "alain", goodPassword)
	tests := []struct {
		name       string
		form       func(g grant) url.Values
		wantStatus int
		wantError  string
		wantAccess bool // the grant's access token is in the feed after
		refreshOK  bool // the grant's refresh token still works after
	}{
		{"access token", func(g grant) url.Values { return url.Values{"token": {g.AccessToken}, "client_id": {DefaultClient}} }, 200, "", true, true},
		{"refresh token", func(g grant) url.Values { return url.Values{"token": {g.RefreshToken}, "client_id": {DefaultClient}} }, 200, "", true, false},
		{"unknown token", func(g grant) url.Values { return url.Values{"token": {"no-such-token"}, "client_id": {DefaultClient}} }, 200, "", false, true},
		{"forged jwt", func(g grant) url.Values {
			return url.Values{"token": {g.AccessToken[:len(g.AccessToken)-4] + "AAAA"}, "client_id": {DefaultClient}}
		}, 200, "", false, true},
		{"other client's access token", func(g grant) url.Values { return url.Values{"token": {g.AccessToken}, "client_id": {"other-app"}} }, 400, "unauthorized_client", false, true},
		{"other client's refresh token", func(g grant) url.Values { return url.Values{"token": {g.RefreshToken}, "client_id": {"other-app"}} }, 400, "unauthorized_client", false, true},
		{"unknown client", func(g grant) url.Values { return url.Values{"token": {g.AccessToken}, "client_id": {"evil"}} }, 401, "invalid_client", false, true},
		{"no token", func(g grant) url.Values { return url.Values{"client_id": {DefaultClient}} }, 400, "invalid_request", false, true},
		{"bad hint", func(g grant) url.Values {
			return url.Values{"token": {g.AccessToken}, "client_id": {DefaultClient}, "token_type_hint": {"id_token"}}
		}, 400, "unsupported_token_type", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := env.passwordGrant(t, "alain", goodPassword)
			res := env.form(t, "/revoke", tt.form(g))
			if res.status != tt.wantStatus {
				t.Fatalf("POST /revoke(%s) = %d %s, want %d", tt.name, res.status, res.body, tt.wantStatus)
			}
			if tt.wantError != "" && res.oauthError(t) != tt.wantError {
				t.Errorf("POST /revoke(%s) error = %s, want %s", tt.name, res.body, tt.wantError)
			}
			if got := env.feed(t, "0").revokedJTI(jtiOf(t, g.AccessToken)); got != tt.wantAccess {
				t.Errorf("after /revoke(%s), access token revoked = %v, want %v", tt.name, got, tt.wantAccess)
			}
			if got := env.refreshGrant(t, g.RefreshToken).status == 200; got != tt.refreshOK {
				t.Errorf("after /revoke(%s), refresh works = %v, want %v", tt.name, got, tt.refreshOK)
			}
		})
	}
}

func TestLogout(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	tests := []struct {
		name       string
		header     func(tok string) (string, string)
		wantStatus int
	}{
		{"bearer", func(tok string) (string, string) { return "Authorization", "Bearer " + tok }, 204},
		{"tutorial header", func(tok string) (string, string) { return "x-access-tokens", tok }, 204},
		{"no token", func(tok string) (string, string) { return "X-Other", tok }, 401},
		{"forged token", func(tok string) (string, string) { return "Authorization", "Bearer " + tok[:len(tok)-4] + "AAAA" }, 401},
		{"basic auth", func(tok string) (string, string) { return "Authorization", "Basic YWxhaW46eA==" }, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := env.login(t, "alain", goodPassword)
			var g tokenResponse
			res.json(t, &g)
			k, v := tt.header(g.AccessToken)
			res = env.do(t, request{method: "POST", path: "/logout", headers: map[string]string{k: v}})
			if res.status != tt.wantStatus {
				t.Fatalf("POST /logout(%s) = %d %s, want %d", tt.name, res.status, res.body, tt.wantStatus)
			}
			ended := tt.wantStatus == 204
			if got := env.feed(t, "0").revokedJTI(jtiOf(t, g.AccessToken)); got != ended {
				t.Errorf("after /logout(%s), access token revoked = %v, want %v", tt.name, got, ended)
			}
			if got := env.refreshGrant(t, g.RefreshToken).status == 200; got == ended {
				t.Errorf("after /logout(%s), refresh works = %v, want %v", tt.name, got, !ended)
			}
		})
	}
}

func TestRevokeUser(t *testing.T) {
	env := newEnv(t)
	id := env.mustRegister(t, "alain", goodPassword)
	admin := map[string]string{"X-User-Id": "admin-id", "X-User-Roles": "admin,user"}
	tests := []struct {
		name       string
		path       string
		headers    map[string]string
		wantStatus int
	}{
		{"no identity", "/users/" + id + "/revoke", nil, 401},
		{"not an admin", "/users/" + id + "/revoke", map[string]string{"X-User-Id": "x", "X-User-Roles": "user"}, 403},
		{"not a uuid", "/users/alain/revoke", admin, 400},
		{"unknown user", "/users/00000000-0000-4000-8000-000000000000/revoke", admin, 404},
		{"admin", "/users/" + id + "/revoke", admin, 204},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res := env.do(t, request{method: "POST", path: tt.path, headers: tt.headers}); res.status != tt.wantStatus {
				t.Fatalf("POST %s(%s) = %d %s, want %d", tt.path, tt.name, res.status, res.body, tt.wantStatus)
			}
		})
	}
}

// TestRevokeUserSameSecond pins how a token issued in the second of a
// user's revocation is told apart: the not-before is rounded up to the
// next second, and tokens issued after the revocation get an iat of at
// least that.
func TestRevokeUserSameSecond(t *testing.T) {
	env := newEnv(t)
	id := env.mustRegister(t, "alain", goodPassword)
	env.clock.Advance(300 * time.Millisecond) // within a second
	before := env.passwordGrant(t, "alain", goodPassword)
	env.clock.Advance(100 * time.Millisecond)
	admin := map[string]string{"X-User-Id": "admin-id", "X-User-Roles": "admin"}
	if res := env.do(t, request{method: "POST", path: "/users/" + id + "/revoke", headers: admin}); res.status != 204 {
		t.Fatalf("revoke user = %d %s, want 204", res.status, res.body)
	}
	env.clock.Advance(100 * time.Millisecond) // still the same second
	after := env.passwordGrant(t, "alain", goodPassword)

	f := env.feed(t, "0")
	if len(f.Subjects) != 1 || f.Subjects[0].Sub != id {
		t.Fatalf("feed subjects = %+v, want one entry for %s", f.Subjects, id)
	}
	nb := time.Unix(f.Subjects[0].NotBefore, 0)
	if got := iatOf(t, before.AccessToken); !got.Before(nb) {
		t.Errorf("token issued before the revocation: iat %v, not before %v: want iat < not_before (refused)", got, nb)
	}
	if got := iatOf(t, after.AccessToken); got.Before(nb) {
		t.Errorf("token issued after the revocation in the same second: iat %v < not_before %v, want it accepted", got, nb)
	}
	if res := env.refreshGrant(t, before.RefreshToken); res.status != 400 {
		t.Errorf("refresh of a session from before the revocation = %d, want 400", res.status)
	}
	env.mustRefresh(t, after.RefreshToken)
}

func TestRevocationFeed(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	g1 := env.passwordGrant(t, "alain", goodPassword)
	g2 := env.passwordGrant(t, "alain", goodPassword)
	revoke := func(tok string) {
		t.Helper()
		if res := env.form(t, "/revoke", url.Values{"token": {tok}, "client_id": {DefaultClient}}); res.status != 200 {
			t.Fatalf("revoke = %d", res.status)
		}
	}
	revoke(g1.AccessToken)
	v1 := env.feed(t, "0").Version
	revoke(g2.AccessToken)

	tests := []struct {
		name      string
		since     string
		inm       string
		want      int
		wantJTIs  []string
		wantFull  bool
		wantCount int
	}{
		{"from scratch", "0", "", 200, []string{jtiOf(t, g1.AccessToken), jtiOf(t, g2.AccessToken)}, true, 2},
		{"delta", itoa(v1), "", 200, []string{jtiOf(t, g2.AccessToken)}, false, 1},
		{"up to date", itoa(v1 + 1), `"` + itoa(v1+1) + `"`, 304, nil, false, 0},
		{"stale etag", itoa(v1), `"` + itoa(v1) + `"`, 200, []string{jtiOf(t, g2.AccessToken)}, false, 1},
		{"ahead of the database", "999999", "", 200, []string{jtiOf(t, g1.AccessToken), jtiOf(t, g2.AccessToken)}, true, 2},
		{"bad since", "x", "", 400, nil, false, 0},
		{"negative since", "-1", "", 400, nil, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.inm != "" {
				h["If-None-Match"] = tt.inm
			}
			res := env.do(t, request{method: "GET", path: "/revocations?since=" + tt.since, headers: h})
			if res.status != tt.want {
				t.Fatalf("GET /revocations(%s) = %d %s, want %d", tt.name, res.status, res.body, tt.want)
			}
			if res.status != 200 {
				return
			}
			var f feedState
			if err := json.Unmarshal(res.body, &f); err != nil {
				t.Fatal(err)
			}
			if f.Full != tt.wantFull || len(f.Tokens) != tt.wantCount {
				t.Errorf("GET /revocations(%s) = full %v, %d tokens, want %v, %d", tt.name, f.Full, len(f.Tokens), tt.wantFull, tt.wantCount)
			}
			for _, j := range tt.wantJTIs {
				if !f.revokedJTI(j) {
					t.Errorf("GET /revocations(%s) lacks %s", tt.name, j)
				}
			}
		})
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// TestOAuthOddInput sends odd forms to /token and /revoke: every answer
// is a 4xx OAuth error or a success, never a 5xx, and nothing is stored
// for a refused request.
func TestOAuthOddInput(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	long := strings.Repeat("A", 10000)
	tests := []struct {
		path, body string
		want       int
	}{
		{"/token", "grant_type=password&client_id=tollgate-cli&username=%ff%fe&password=x", 400},
		{"/token", "grant_type=password&client_id=tollgate-cli&username=alain&password=" + long, 400},
		{"/token", "grant_type=password&client_id=tollgate-cli&username=alain", 400},
		{"/token", "grant_type=refresh_token&client_id=tollgate-cli&refresh_token=" + long, 400},
		{"/token", "grant_type=refresh_token&client_id=tollgate-cli&refresh_token=%00", 400},
		{"/token", "grant_type=password&client_id=" + long, 401},
		{"/token", "grant_type=&client_id=tollgate-cli", 400},
		{"/token", "%%%", 400},
		{"/revoke", "client_id=tollgate-cli&token=a.b.c", 200},
		{"/revoke", "client_id=tollgate-cli&token=eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0.", 200},
		{"/revoke", "client_id=tollgate-cli&token=" + long[:2000] + "." + long[:3000] + "." + long[:3000], 200},
		{"/revoke", "client_id=tollgate-cli&token=" + long + "." + long + "." + long, 413},
		{"/revoke", "client_id=tollgate-cli&token=x&token=y", 400},
	}
	for _, tt := range tests {
		res := env.do(t, request{method: "POST", path: tt.path, body: tt.body, ctype: "application/x-www-form-urlencoded"})
		if res.status != tt.want {
			t.Errorf("POST %s(%.60s) = %d %s, want %d", tt.path, tt.body, res.status, res.body, tt.want)
		}
	}
	var n int
	if err := env.svc.db.QueryRow(`SELECT COUNT(*) FROM sessions`).Scan(&n); err != nil || n != 0 {
		t.Errorf("sessions after refused requests = %d (%v), want 0", n, err)
	}
	if f := env.feed(t, "0"); len(f.Tokens) != 0 {
		t.Errorf("revoked tokens after odd revocations = %d, want 0", len(f.Tokens))
	}
}
