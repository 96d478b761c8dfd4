package chartcheck

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	corev1 "k8s.io/api/core/v1"

	"github.com/tollgate-dev/tollgate/authz"
)

// TestIstioAndEnvoyGatewayUsersAdminOnly renders the chart with each
// integration example's values, runs authz on the configuration file the
// chart renders, and asks it what Istio's CUSTOM action and Envoy
// Gateway's extAuth ask: a CheckRequest with no context_extensions. GET
// /users must be admin-only there too.
func TestIstioAndEnvoyGatewayUsersAdminOnly(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := jwk.FromRaw(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub.Set(jwk.KeyIDKey, "k1")
	pub.Set(jwk.AlgorithmKey, jwa.ES256)
	pub.Set(jwk.KeyUsageKey, "sig")
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"keys": []any{pub}})
	}))
	t.Cleanup(jwks.Close)

	for _, example := range []string{"istio", "envoy-gateway"} {
		t.Run(example, func(t *testing.T) {
			vs := valueSet{name: example + "-example", files: []string{filepath.Join("k8s", "examples", example, "tollgate-values.yaml")}}
			objs := decode(t, renderCached(t, vs))
			cm := find[*corev1.ConfigMap](t, objs, "tg-tollgate-authz-config")
			file := cm.Data["authz.yaml"]
			// Point Tollgate's issuer entry at a local JWKS.
			var iss, jwksURL string
			for _, line := range strings.Split(file, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "issuer: "); ok && iss == "" {
					iss = v
				}
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "jwks_url: "); ok && jwksURL == "" {
					jwksURL = v
				}
			}
			if iss == "" || jwksURL == "" {
				t.Fatalf("rendered authz.yaml has no Tollgate issuer:\n%s", file)
			}
			path := filepath.Join(t.TempDir(), "authz.yaml")
			if err := os.WriteFile(path, []byte(strings.Replace(file, jwksURL, jwks.URL, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := authz.DefaultConfig()
			cfg.ConfigFile = path
			srv, err := authz.New(context.Background(), cfg, nil, nil)
			if err != nil {
				t.Fatalf("authz on the rendered file: %v", err)
			}
			t.Cleanup(func() { srv.Close() })
			deadline := time.Now().Add(10 * time.Second)
			for srv.Ready(context.Background()) != nil {
				if time.Now().After(deadline) {
					t.Fatal("authz not ready")
				}
				time.Sleep(10 * time.Millisecond)
			}
			sign := func(roles ...string) string {
				now := time.Now()
				tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
					"iss": iss, "aud": []string{"tollgate"}, "sub": "u-1", "roles": roles,
					"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
				})
				tok.Header["kid"] = "k1"
				s, err := tok.SignedString(priv)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			user, admin := sign("user"), sign("admin", "user")
			for _, tt := range []struct {
				name, path, tok string
				want            int32
			}{
				{"GET /users as a user", "/users", user, 403},
				{"GET /users/ as a user", "/users/", user, 403},
				{"GET /users as the admin", "/users", admin, 200},
				{"GET /books as a user", "/books", user, 200},
			} {
				req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
					Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: tt.path, Host: "tollgate.example",
						Headers: map[string]string{":method": "GET", ":path": tt.path, "authorization": "Bearer " + tt.tok}},
				}}}
				resp, _ := srv.Check(context.Background(), req)
				got := int32(200)
				if d := resp.GetDeniedResponse(); d != nil {
					got = int32(d.GetStatus().GetCode())
				}
				if got != tt.want {
					t.Errorf("%s: Check(%s, no context_extensions) = %d, want %d", example, tt.name, got, tt.want)
				}
			}
		})
	}
}
