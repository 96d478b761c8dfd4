package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/issuer"
)

// material is what the issuer pod would see: the files of its projected
// signing-keys volume and the admin password.
type material struct {
	keys     map[string][]byte // file name -> PEM
	password string
}

// signingSecrets are the Secrets the issuer's key volume projects.
func signingSecrets(fullname string) []string {
	base := fullname + "-signing-keys"
	return []string{base, base + "-es256", base + "-rs256", base + "-eddsa"}
}

// readMaterial reads the generated Secrets of the release fullname.
func readMaterial(t *testing.T, ns, fullname string) material {
	t.Helper()
	m := material{keys: map[string][]byte{}}
	for _, name := range signingSecrets(fullname) {
		for k, v := range secretData(t, ns, name) {
			m.keys[k] = v
		}
	}
	m.password = string(secretData(t, ns, fullname+"-admin")["password"])
	return m
}

// issuerOn starts a real issuer on m's keys and password, with alg as
// its signing algorithm, the way the pod would start (issuer.New fails
// when no key of alg is there), on the database in dataDir: like the
// pod's volume, it remembers a removed key until the tokens it signed
// have expired.
func issuerOn(t *testing.T, dataDir string, m material, alg string) (*httptest.Server, error) {
	t.Helper()
	keyDir := t.TempDir()
	for name, pem := range m.keys {
		if err := os.WriteFile(filepath.Join(keyDir, name), pem, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := issuer.DefaultConfig()
	cfg.DataDir, cfg.DB = dataDir, filepath.Join(dataDir, "issuer.db")
	cfg.KeyDir, cfg.SigningAlg = keyDir, alg
	cfg.AdminName, cfg.AdminPassword = "admin", m.password
	svc, err := issuer.New(ctx, cfg, log, server.NewRegistry())
	if err != nil {
		cancel()
		return nil, err
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(func() {
		srv.Close()
		svc.Close()
		cancel()
	})
	return srv, nil
}

// login signs a token for the admin with the issuer's own code, from
// the Secrets as they are now.
func login(t *testing.T, dataDir string, m material, alg string) (string, error) {
	t.Helper()
	srv, err := issuerOn(t, dataDir, m, alg)
	if err != nil {
		return "", fmt.Errorf("issuer.New on the Secrets' keys with %s: %w", alg, err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/login", nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth("admin", m.password)
	resp, err := srv.Client().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /login as admin = %d (%v), want 200 with a token", resp.StatusCode, err)
	}
	return body.Token, nil
}

// verify checks token against the JWKS an issuer publishes from the
// Secrets as they are now.
func verify(t *testing.T, dataDir string, m material, alg, token string) error {
	t.Helper()
	srv, err := issuerOn(t, dataDir, m, alg)
	if err != nil {
		return fmt.Errorf("issuer.New on the Secrets' keys with %s: %w", alg, err)
	}
	set, err := jwk.Fetch(t.Context(), srv.URL+"/.well-known/jwks.json", jwk.WithHTTPClient(srv.Client()))
	if err != nil {
		return fmt.Errorf("fetch the JWKS: %w", err)
	}
	if _, err := jwt.Parse([]byte(token), jwt.WithKeySet(set), jwt.WithValidate(true)); err != nil {
		return fmt.Errorf("token does not verify against the published keys: %w", err)
	}
	return nil
}
