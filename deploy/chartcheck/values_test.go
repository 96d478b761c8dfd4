package chartcheck

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jws"
	corev1 "k8s.io/api/core/v1"

	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/issuer"
)

// TestSchemaRejects proves values.schema.json refuses what the chart
// cannot run: helm template must fail, naming the offending value.
func TestSchemaRejects(t *testing.T) {
	h := helm(t)
	tests := []struct {
		name string
		set  []string
		want string // in helm's error
	}{
		{"issuer replicas > 1 with SQLite", []string{"issuer.replicas=2"}, "/issuer/replicas"},
		{"books replicas > 1 with SQLite", []string{"books.replicas=3"}, "/books/replicas"},
		{"books autoscaling with SQLite", []string{"books.autoscaling.enabled=true"}, "/books/autoscaling/enabled"},
		{"postgres without a Secret", []string{"database.driver=postgres", "issuer.replicas=3"}, "/database/postgres/existingSecret"},
		{"unknown value", []string{"issuer.replica=2"}, "replica"},
		{"unknown top-level value", []string{"gateway.envoy.imag=x"}, "imag"},
		{"unknown authz mode", []string{"authz.mode=inline"}, "/authz/mode"},
		{"unknown signing algorithm", []string{"issuer.signingAlg=HS256"}, "/issuer/signingAlg"},
		{"malformed duration", []string{"issuer.tokenTTL=45 minutes"}, "/issuer/tokenTTL"},
		{"wrong type", []string{"gateway.replicas=two"}, "/gateway/replicas"},
		{"no trusted hops", []string{"issuer.trustedHops=0"}, "/issuer/trustedHops"},
		{"unknown traffic policy", []string{"gateway.service.externalTrafficPolicy=local"}, "/gateway/service/externalTrafficPolicy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Template(t.Context(), chart, release, namespace, nil, tt.set...)
			if err == nil {
				t.Fatalf("helm template --set %v succeeded, want a schema error", tt.set)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("helm template --set %v: error does not name %q:\n%v", tt.set, tt.want, err)
			}
		})
	}
	t.Run("postgres with a Secret and 3 replicas is accepted", func(t *testing.T) {
		if _, err := h.Template(t.Context(), chart, release, namespace, nil,
			"database.driver=postgres", "database.postgres.existingSecret=db", "issuer.replicas=3", "books.replicas=3"); err != nil {
			t.Errorf("helm template: %v", err)
		}
	})
}

// TestGeneratedKeySigns installs the signing key the chart generates
// (genPrivateKey) into a real issuer and signs a token with it, for each
// algorithm: the chart's key format is one the issuer accepts.
func TestGeneratedKeySigns(t *testing.T) {
	for _, vs := range valueSets() {
		var alg string
		switch vs.name {
		case "defaults":
			alg = "ES256"
		case "rs256":
			alg = "RS256"
		case "eddsa":
			alg = "EdDSA"
		default:
			continue
		}
		t.Run(alg, func(t *testing.T) {
			objs := decode(t, renderCached(t, vs))
			keys := find[*corev1.Secret](t, objs, "tg-tollgate-signing-keys")
			admin := find[*corev1.Secret](t, objs, "tg-tollgate-admin")
			keyDir := t.TempDir()
			for name, pem := range keys.Data {
				if err := os.WriteFile(filepath.Join(keyDir, name), pem, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			password := string(admin.Data["password"])
			if len(password) != 24 {
				t.Errorf("generated admin password has %d characters, want 24", len(password))
			}
			cfg := issuer.DefaultConfig()
			cfg.DataDir = t.TempDir()
			cfg.DB = filepath.Join(cfg.DataDir, "issuer.db")
			cfg.KeyDir, cfg.SigningAlg = keyDir, alg
			cfg.AdminName, cfg.AdminPassword = "admin", password
			token := issueToken(t, cfg, "admin", password)
			msg, err := jws.Parse([]byte(token))
			if err != nil {
				t.Fatalf("parse token: %v", err)
			}
			if got := msg.Signatures()[0].ProtectedHeaders().Algorithm().String(); got != alg {
				t.Errorf("token signed with %s, want %s", got, alg)
			}
		})
	}
}

// issueToken starts an issuer with cfg and logs in as name.
func issueToken(t *testing.T, cfg issuer.Config, name, password string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := issuer.New(ctx, cfg, log, server.NewRegistry())
	if err != nil {
		t.Fatalf("issuer.New with the chart's key: %v", err)
	}
	defer svc.Close()
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/login", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(name, password)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /login = %d (%v), want 200 with a token", resp.StatusCode, err)
	}
	return body.Token
}
