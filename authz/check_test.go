package authz

import (
	"context"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
)

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// The expected responses are written out in full here, independently of
// the code that builds them.

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

var tokenHeaders = []string{"authorization", "x-access-tokens", "x-access-token"}

// wantAllow is the OK response for a caller; empty name or roles mean
// the header is removed instead of set.
func wantAllow(sub, name, roles, jti string) *authv3.CheckResponse {
	var headers []*corev3.HeaderValueOption
	var remove []string
	headers = append(headers, setHeader("x-user-id", sub))
	if name != "" {
		headers = append(headers, setHeader("x-user-name", name))
	} else {
		remove = append(remove, "x-user-name")
	}
	if roles != "" {
		headers = append(headers, setHeader("x-user-roles", roles))
	} else {
		remove = append(remove, "x-user-roles")
	}
	headers = append(headers, setHeader("x-user-issuer", DefaultIssuerName))
	remove = append(remove, tokenHeaders...)
	remove = append(remove, "dpop")
	md := map[string]*structpb.Value{"sub": structpb.NewStringValue(sub), "issuer": structpb.NewStringValue(DefaultIssuerName)}
	if name != "" {
		md["name"] = structpb.NewStringValue(name)
	}
	if jti != "" {
		md["jti"] = structpb.NewStringValue(jti)
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: 0},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:         headers,
			HeadersToRemove: remove,
		}},
		DynamicMetadata: &structpb.Struct{Fields: md},
	}
}

func wantDeny(rpcCode int32, httpCode typev3.StatusCode, first *corev3.HeaderValueOption, msg string) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: rpcCode, Message: msg},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: httpCode},
			Headers: []*corev3.HeaderValueOption{first, setHeader("content-type", "application/json")},
			Body:    `{"message":"` + msg + `"}` + "\n", // like every JSON body, and like forward-auth
		}},
	}
}

// addHeader is a denial's second header of a name: added beside the
// first, not over it.
func addHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
	}
}

// dpopAlgs is the algs parameter of the DPoP challenge by default.
const dpopAlgs = `algs="ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512 EdDSA"`

var (
	// A request without a token is offered both schemes.
	wantNoToken = func() *authv3.CheckResponse {
		r := wantDeny(16, typev3.StatusCode_Unauthorized,
			setHeader("www-authenticate", `Bearer realm="tollgate"`), "a valid token is missing")
		d := r.GetDeniedResponse()
		d.Headers = append(d.Headers[:1], addHeader("www-authenticate", "DPoP "+dpopAlgs), d.Headers[1])
		return r
	}()
	wantInvalid = wantDeny(16, typev3.StatusCode_Unauthorized,
		setHeader("www-authenticate", `Bearer realm="tollgate", error="invalid_token"`), "token is invalid")
	wantForbidden = wantDeny(7, typev3.StatusCode_Forbidden,
		setHeader("www-authenticate", `Bearer realm="tollgate", error="insufficient_scope"`), "insufficient permissions")
	wantUnavailable = wantDeny(14, typev3.StatusCode_ServiceUnavailable,
		setHeader("retry-after", "5"), "authorization is unavailable")
)

func diffResponse(want, got *authv3.CheckResponse) string {
	return cmp.Diff(want, got, protocmp.Transform())
}

func TestCheckEnvoyRequests(t *testing.T) {
	e := newTestEnv(t, Config{CacheSize: 100})
	e.waitReady()
	k := e.key
	const sub = "6f1d7a4e-3b8e-4c55-9a61-0e2f5b7c9d10"
	userClaims := claimsFor(sub, "user")
	user := k.sign(t, userClaims, nil)
	adminClaims := claimsFor(sub, "admin", "user")
	admin := k.sign(t, adminClaims, nil)
	noName := claimsFor(sub, "user")
	delete(noName, "name")
	noRoles := claimsFor(sub)
	jti := func(c map[string]any) string { return c["jti"].(string) }

	tests := []struct {
		name       string
		req        *authv3.CheckRequest
		want       *authv3.CheckResponse
		wantReason string
	}{
		{
			name: "bearer token",
			req:  envoyRequest("GET", "/books", bearer(user), nil),
			want: wantAllow(sub, "alice", "user", jti(userClaims)), wantReason: "verified",
		},
		{
			name: "same token again comes from the cache",
			req:  envoyRequest("GET", "/books", bearer(user), nil),
			want: wantAllow(sub, "alice", "user", jti(userClaims)), wantReason: "cached",
		},
		{
			name: "scheme is case-insensitive",
			req:  envoyRequest("GET", "/books", map[string]string{"authorization": "bEaReR " + admin}, nil),
			want: wantAllow(sub, "alice", "admin,user", jti(adminClaims)), wantReason: "verified",
		},
		{
			name: "tutorial header x-access-tokens",
			req:  envoyRequest("POST", "/book", map[string]string{"x-access-tokens": user}, nil),
			want: wantAllow(sub, "alice", "user", jti(userClaims)), wantReason: "cached",
		},
		{
			name: "header x-access-token",
			req:  envoyRequest("GET", "/books/7", map[string]string{"x-access-token": user}, nil),
			want: wantAllow(sub, "alice", "user", jti(userClaims)), wantReason: "cached",
		},
		{
			name: "Basic authorization is skipped for a later token header",
			req: envoyRequest("GET", "/books", map[string]string{
				"authorization": "Basic YWxpY2U6c2VjcmV0", "x-access-tokens": user}, nil),
			want: wantAllow(sub, "alice", "user", jti(userClaims)), wantReason: "cached",
		},
		{
			name: "client identity headers are overwritten",
			req: envoyRequest("GET", "/books", map[string]string{
				"authorization": "Bearer " + user, "x-user-id": "someone-else", "x-user-roles": "admin", "x-user-name": "root"}, nil),
			want: wantAllow(sub, "alice", "user", jti(userClaims)), wantReason: "cached",
		},
		{
			name: "no name claim removes x-user-name",
			req:  envoyRequest("GET", "/books", bearer(k.sign(t, noName, nil)), nil),
			want: wantAllow(sub, "", "user", jti(noName)), wantReason: "verified",
		},
		{
			name: "no roles removes x-user-roles",
			req:  envoyRequest("GET", "/books", bearer(k.sign(t, noRoles, nil)), nil),
			want: wantAllow(sub, "alice", "", jti(noRoles)), wantReason: "verified",
		},
		{
			name: "no token",
			req:  envoyRequest("GET", "/books", nil, nil),
			want: wantNoToken, wantReason: "no_token",
		},
		{
			name: "Basic authorization only",
			req:  envoyRequest("GET", "/books", map[string]string{"authorization": "Basic YWxpY2U6c2VjcmV0"}, nil),
			want: wantNoToken, wantReason: "no_token",
		},
		{
			name: "uppercase header key is not Envoy's and is not read",
			req:  envoyRequest("GET", "/books", map[string]string{"Authorization": "Bearer " + user}, nil),
			want: wantNoToken, wantReason: "no_token",
		},
		{
			name: "Bearer with nothing after it",
			req:  envoyRequest("GET", "/books", map[string]string{"authorization": "Bearer"}, nil),
			want: wantInvalid, wantReason: "malformed",
		},
		{
			name: "two authorization headers joined by Envoy",
			req:  envoyRequest("GET", "/books", map[string]string{"authorization": "Bearer " + user + ",Bearer " + admin}, nil),
			want: wantInvalid, wantReason: "malformed",
		},
		{
			name: "two x-access-tokens headers joined by Envoy",
			req:  envoyRequest("GET", "/books", map[string]string{"x-access-tokens": user + "," + user}, nil),
			want: wantInvalid, wantReason: "malformed",
		},
		{
			name: "require admin with a user token",
			req:  envoyRequest("GET", "/users", bearer(user), map[string]string{"require": "admin", "route": "users"}),
			want: wantForbidden, wantReason: "missing_role",
		},
		{
			name: "require admin with an admin token",
			req:  envoyRequest("GET", "/users", bearer(admin), map[string]string{"require": "admin", "route": "users"}),
			want: wantAllow(sub, "alice", "admin,user", jti(adminClaims)), wantReason: "cached",
		},
		{
			name: "require two roles, one missing",
			req:  envoyRequest("GET", "/x", bearer(user), map[string]string{"require": "user, admin"}),
			want: wantForbidden, wantReason: "missing_role",
		},
		{
			name: "require two roles, both held",
			req:  envoyRequest("GET", "/x", bearer(admin), map[string]string{"require": "user,admin"}),
			want: wantAllow(sub, "alice", "admin,user", jti(adminClaims)), wantReason: "cached",
		},
		{
			name: "unknown policy key denies a valid token",
			req:  envoyRequest("GET", "/users", bearer(admin), map[string]string{"requires": "admin"}),
			want: wantForbidden, wantReason: "bad_policy",
		},
		{
			name: "empty require denies",
			req:  envoyRequest("GET", "/users", bearer(admin), map[string]string{"require": ""}),
			want: wantForbidden, wantReason: "bad_policy",
		},
		{
			name: "empty role in require denies",
			req:  envoyRequest("GET", "/users", bearer(admin), map[string]string{"require": "admin,,user"}),
			want: wantForbidden, wantReason: "bad_policy",
		},
		{
			name: "bad route label denies",
			req:  envoyRequest("GET", "/users", bearer(admin), map[string]string{"route": "a b"}),
			want: wantForbidden, wantReason: "bad_policy",
		},
		{
			name: "bad policy denies even without a token",
			req:  envoyRequest("GET", "/users", nil, map[string]string{"virtual_host": "api"}),
			want: wantForbidden, wantReason: "bad_policy",
		},
		{
			name: "nil request",
			req:  nil,
			want: wantNoToken, wantReason: "no_token",
		},
		{
			name: "empty request",
			req:  &authv3.CheckRequest{},
			want: wantNoToken, wantReason: "no_token",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.check(tt.req)
			if diff := diffResponse(tt.want, got); diff != "" {
				t.Errorf("Check(%s) = %s, want %s; diff (-want +got):\n%s", tt.name, describe(got), describe(tt.want), diff)
			}
			if r := e.logs.lastCheck(t)["reason"]; r != tt.wantReason {
				t.Errorf("Check(%s) logged reason %v, want %s", tt.name, r, tt.wantReason)
			}
		})
	}
}

func TestCheckRawHeaderMap(t *testing.T) {
	// With encode_raw_headers, Envoy sends header_map instead of headers,
	// unmerged and as raw bytes.
	e := newTestEnv(t, Config{})
	e.waitReady()
	c := claimsFor("u-1", "user")
	tok := e.key.sign(t, c, nil)
	raw := func(kv ...string) *authv3.CheckRequest {
		req := envoyRequest("GET", "/books", nil, nil)
		hm := &corev3.HeaderMap{}
		for i := 0; i < len(kv); i += 2 {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		req.Attributes.Request.Http.Headers = nil
		req.Attributes.Request.Http.HeaderMap = hm
		return req
	}
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want *authv3.CheckResponse
	}{
		{"one token", raw(":path", "/books", "authorization", "Bearer "+tok), wantAllow("u-1", "alice", "user", c["jti"].(string))},
		{"repeated token header", raw("x-access-tokens", tok, "x-access-tokens", tok), wantInvalid},
		{"no token", raw(":path", "/books"), wantNoToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.check(tt.req)
			if diff := diffResponse(tt.want, got); diff != "" {
				t.Errorf("Check(%s) = %s, want %s; diff (-want +got):\n%s", tt.name, describe(got), describe(tt.want), diff)
			}
		})
	}
}

func TestCheckLogLine(t *testing.T) {
	e := newTestEnv(t, Config{})
	e.waitReady()
	tok := e.key.sign(t, claimsFor("u-42", "user"), nil)
	req := envoyRequest("GET", "/books?access_token=secret-in-query", bearer(tok), map[string]string{"route": "books"})
	e.check(req)
	got := e.logs.lastCheck(t)
	want := map[string]any{
		"request_id": "3f1c9c1e-8a55-4c0e-9d4f-1d2a57e3b1aa",
		"protocol":   "grpc",
		"route":      "books",
		"decision":   "allow",
		"status":     float64(200),
		"reason":     "verified",
		"sub":        "u-42",
		"method":     "GET",
		"path":       "/books",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("check log %s = %v, want %v", k, got[k], v)
		}
	}
	if got["level"] != "INFO" {
		t.Errorf("allow logged at %v, want INFO", got["level"])
	}
	e.check(envoyRequest("GET", "/users", bearer(tok), map[string]string{"requires": "admin"}))
	if bad := e.logs.lastCheck(t); bad["level"] != "WARN" || bad["reason"] != "bad_policy" {
		t.Errorf("unknown policy key logged at %v with reason %v, want WARN and bad_policy", bad["level"], bad["reason"])
	}
	all := e.logs.all()
	for _, secret := range []string{tok, strings.Split(tok, ".")[2], "secret-in-query"} {
		if strings.Contains(all, secret) {
			t.Errorf("log contains %q; tokens and queries must never be logged", secret)
		}
	}
}

// TestCheckConcurrentUsers runs allowed Checks for two users at once, in
// process and over gRPC (which marshals the answers concurrently). The
// answers for a cached token share the parts built once per identity, so
// each answer must still carry its own user's headers and metadata, and
// a caller changing its answer (a top-level field, or appending to a
// list) must not change anyone else's. Run it with -race.
func TestCheckConcurrentUsers(t *testing.T) {
	e := newTestEnv(t, Config{CacheSize: 100})
	e.waitReady()
	aliceClaims := claimsFor("u-alice", "user")
	bobClaims := claimsFor("u-bob", "admin", "user")
	delete(bobClaims, "name")
	users := []struct {
		req  *authv3.CheckRequest
		want *authv3.CheckResponse
	}{
		{
			envoyRequest("GET", "/books", bearer(e.key.sign(t, aliceClaims, nil)), nil),
			wantAllow("u-alice", "alice", "user", aliceClaims["jti"].(string)),
		},
		{
			envoyRequest("GET", "/books", bearer(e.key.sign(t, bobClaims, nil)), nil),
			wantAllow("u-bob", "", "admin,user", bobClaims["jti"].(string)),
		},
	}
	ctx := context.Background()
	const workers, rounds = 4, 100
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				u := users[(w+i)%len(users)]
				got, _ := e.srv.Check(ctx, u.req)
				if diff := diffResponse(u.want, got); diff != "" {
					t.Errorf("in-process Check(%s) mixed answers; diff (-want +got):\n%s", u.want.GetDynamicMetadata().GetFields()["sub"].GetStringValue(), diff)
					return
				}
				ok := got.GetOkResponse()
				ok.Headers = append(ok.Headers, setHeader("x-extra", "1"))
				ok.HeadersToRemove = append(ok.HeadersToRemove, "x-extra-remove")
				got.DynamicMetadata = nil

				got, err := e.client.Check(ctx, u.req)
				if err != nil {
					t.Errorf("gRPC Check: %v", err)
					return
				}
				if diff := diffResponse(u.want, got); diff != "" {
					t.Errorf("gRPC Check(%s) mixed answers; diff (-want +got):\n%s", u.want.GetDynamicMetadata().GetFields()["sub"].GetStringValue(), diff)
					return
				}
			}
		})
	}
	wg.Wait()
}
