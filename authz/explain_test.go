package authz

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestExplain pins each explanation: the decision, the reason in an
// operator's words, the claims of a verified token, the headers an
// allow sets, and never the token itself.
func TestExplain(t *testing.T) {
	key := newTestKey(t, "ES256", "main")
	other := newTestKey(t, "ES256", "other")
	e := newTestEnv(t, Config{}, key)
	e.waitReady()
	now := time.Unix(time.Now().Unix()+2, 0) // whole seconds, after every iat below
	e.srv.now = func() time.Time { return now }
	expired := claimsFor("user-2")
	expired["exp"] = now.Add(-(3*time.Minute + 12*time.Second)).Unix()
	expired["iat"] = time.Now().Add(-time.Hour).Unix()
	expired["nbf"] = time.Now().Add(-time.Hour).Unix()
	tampered := key.sign(t, claimsFor("user-1"), nil)
	tampered = tampered[:len(tampered)-4] + "AAAA"
	cases := []struct {
		name       string
		req        ExplainRequest
		wantDec    string
		wantStatus int
		wantReason string // a substring
		wantSub    string // "" = no claims shown
		wantHeader string // x-user-roles an allow sets
	}{
		{"allow", ExplainRequest{Token: key.sign(t, claimsFor("user-1", "admin"), nil), Policy: map[string]string{"require": "admin"}},
			"allow", 200, `signature by key "` + key.kid + `" (ES256) verified; expires in 59m5`, "user-1", "admin"},
		{"allow, Bearer prefix", ExplainRequest{Token: "Bearer " + key.sign(t, claimsFor("user-1"), nil)},
			"allow", 200, "verified", "user-1", ""},
		{"expired", ExplainRequest{Token: key.sign(t, expired, nil)}, "deny", 401, "expired 3m12s ago", "user-2", ""},
		{"unknown kid", ExplainRequest{Token: other.sign(t, claimsFor("user-1"), nil)}, "deny", 401,
			`kid "` + other.kid + `" not in the issuer's key set (1 keys, refreshed `, "", ""},
		{"bad signature", ExplainRequest{Token: tampered}, "deny", 401, `signature does not verify with key "` + key.kid + `"`, "", ""},
		{"missing role", ExplainRequest{Token: key.sign(t, claimsFor("user-3", "user"), nil), Policy: map[string]string{"require": "admin"}},
			"deny", 403, "token lacks role admin (the route requires admin; the token has: user)", "user-3", ""},
		{"no token", ExplainRequest{}, "deny", 401, "no token given", "", ""},
		{"bad policy", ExplainRequest{Token: "x", Policy: map[string]string{"requires": "admin"}}, "deny", 403, "route policy is not understood", "", ""},
		{"malformed", ExplainRequest{Token: "not-a-jwt"}, "deny", 401, "malformed", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := e.srv.Explain(context.Background(), tc.req)
			if got.Decision != tc.wantDec || got.Status != tc.wantStatus {
				t.Errorf("Explain(%s) = %s %d, want %s %d (reason %q)", tc.name, got.Decision, got.Status, tc.wantDec, tc.wantStatus, got.Reason)
			}
			if !strings.Contains(got.Reason, tc.wantReason) {
				t.Errorf("Explain(%s) reason = %q, want it to contain %q", tc.name, got.Reason, tc.wantReason)
			}
			sub, _ := got.Claims["sub"].(string)
			if sub != tc.wantSub {
				t.Errorf("Explain(%s) claims sub = %q, want %q", tc.name, sub, tc.wantSub)
			}
			if tc.wantDec == "allow" && (got.Headers[HeaderUserID] != tc.wantSub || got.Headers[HeaderUserRoles] != tc.wantHeader) {
				t.Errorf("Explain(%s) headers = %v, want x-user-id %q, x-user-roles %q", tc.name, got.Headers, tc.wantSub, tc.wantHeader)
			}
			if tc.wantDec == "deny" && len(got.Headers) > 0 {
				t.Errorf("Explain(%s) headers = %v, want none for a denial", tc.name, got.Headers)
			}
			out, _ := json.Marshal(got)
			if tok := strings.TrimPrefix(tc.req.Token, "Bearer "); len(tok) > 20 && strings.Contains(string(out), tok[len(tok)-20:]) {
				t.Errorf("Explain(%s) = %s repeats the token", tc.name, out)
			}
		})
	}
	if got := counterValue(t, e.reg, "tollgate_authz_checks_total", "", ""); got != 0 {
		t.Errorf("checks counted after Explain = %v, want 0: explaining is not checking", got)
	}
	if n := len(e.logs.checks()); n != 0 {
		t.Errorf("check log lines after Explain = %d, want 0", n)
	}
}

// TestExplainEndpoint pins POST /explain: absent unless enabled, JSON in
// and out, and a 400 for a body that is not an ExplainRequest.
func TestExplainEndpoint(t *testing.T) {
	key := newTestKey(t, "ES256", "main")
	tok := key.sign(t, claimsFor("user-1"), nil)
	cases := []struct {
		name    string
		enabled bool
		method  string
		body    string
		want    int
	}{
		{"off by default", false, "POST", `{"token":"` + tok + `"}`, 404},
		{"on", true, "POST", `{"token":"` + tok + `"}`, 200},
		{"on, GET", true, "GET", ``, 404},
		{"on, not JSON", true, "POST", `token=abc`, 400},
		{"on, unknown field", true, "POST", `{"tokens":"abc"}`, 400},
		{"on, too large", true, "POST", `{"token":"` + strings.Repeat("a", maxExplainBody) + `"}`, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, Config{Explain: tc.enabled}, key)
			e.waitReady()
			r := httptest.NewRequest(tc.method, "/explain", strings.NewReader(tc.body))
			w := httptest.NewRecorder()
			e.srv.HTTPHandler().ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("%s /explain (%s) = %d, want %d: %s", tc.method, tc.name, w.Code, tc.want, w.Body)
			}
			if tc.want == http.StatusOK {
				var got Explanation
				if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.Decision != "allow" {
					t.Errorf("POST /explain = %s (%v), want an allow explanation", w.Body, err)
				}
			}
		})
	}
}
