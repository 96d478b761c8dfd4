package issuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate-dev/tollgate/internal/pgtest"
)

// newKeyFile writes a new alg key into dir and returns its kid.
func newKeyFile(t *testing.T, dir, alg string) string {
	t.Helper()
	_, kid, err := GenerateKeyFile(dir, alg)
	if err != nil {
		t.Fatalf("GenerateKeyFile: %v", err)
	}
	return kid
}

// publishedKIDs returns the kids in the served JWKS, sorted.
func publishedKIDs(t *testing.T, env *testEnv) []string {
	t.Helper()
	set := fetchJWKS(t, env)
	var kids []string
	for i := range set.Len() {
		k, _ := set.Key(i)
		kids = append(kids, k.KeyID())
	}
	slices.Sort(kids)
	return kids
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// signingKID logs in and returns the kid the token was signed with,
// after checking it verifies against the JWKS served at that moment.
func signingKID(t *testing.T, env *testEnv) (kid, token string) {
	t.Helper()
	token = env.mustLogin(t, "alain", goodPassword)
	mustVerify(t, env, token)
	kid, _ = tokenKID(t, token)
	return kid, token
}

func reload(t *testing.T, env *testEnv) {
	t.Helper()
	if err := env.svc.keys.reload(context.Background()); err != nil {
		t.Fatalf("reload keys: %v", err)
	}
}

// TestKeyRotation walks a rotation with a fake clock: a new key is
// published at once but signs only after the activation delay; a removed
// key stops signing at once but stays published until the last token it
// signed has expired.
func TestKeyRotation(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			clock := newFakeClock()
			cfg := testConfig(t, clock)
			cfg.DB = d.dsn(t)
			cfg.KeyDir = t.TempDir()
			cfg.KeyActivationDelay = 10 * time.Minute
			k1 := newKeyFile(t, cfg.KeyDir, ES256)
			env := start(t, cfg, clock)
			env.mustRegister(t, "alain", goodPassword)

			// The only key of a fresh deployment signs at once.
			if kid, _ := signingKID(t, env); kid != k1 {
				t.Fatalf("signing kid = %s, want the only key %s", kid, k1)
			}

			clock.Advance(time.Minute)
			k2 := newKeyFile(t, cfg.KeyDir, ES256)
			reload(t, env)
			if diff := cmp.Diff(sorted(k1, k2), publishedKIDs(t, env)); diff != "" {
				t.Fatalf("JWKS right after adding k2 (-want +got):\n%s", diff)
			}
			clock.Advance(10*time.Minute - time.Second)
			kid, lastK1Token := signingKID(t, env)
			if kid != k1 {
				t.Fatalf("signing kid 1s before k2's activation = %s, want k1", kid)
			}
			lastK1Exp := clock.Now().Truncate(time.Second).Add(45 * time.Minute)
			clock.Advance(time.Second)
			if kid, _ := signingKID(t, env); kid != k2 {
				t.Fatalf("signing kid at k2's activation = %s, want k2 %s", kid, k2)
			}

			// Remove k1: it no longer signs, but its tokens still verify.
			clock.Advance(time.Minute)
			if err := os.Remove(filepath.Join(cfg.KeyDir, k1+".pem")); err != nil {
				t.Fatal(err)
			}
			reload(t, env)
			if diff := cmp.Diff(sorted(k1, k2), publishedKIDs(t, env)); diff != "" {
				t.Fatalf("JWKS right after removing k1 (-want +got):\n%s", diff)
			}
			mustVerify(t, env, lastK1Token)

			// Until the last k1 token expired (plus the grace), k1 stays.
			clock.Advance(lastK1Exp.Add(retireGrace).Sub(clock.Now()) - time.Second)
			reload(t, env)
			if diff := cmp.Diff(sorted(k1, k2), publishedKIDs(t, env)); diff != "" {
				t.Fatalf("JWKS 1s before k1 retires (-want +got):\n%s", diff)
			}
			clock.Advance(time.Second)
			if diff := cmp.Diff([]string{k2}, publishedKIDs(t, env)); diff != "" {
				t.Fatalf("JWKS when k1 retires (-want +got):\n%s", diff)
			}
			reload(t, env)
			if diff := cmp.Diff([]string{k2}, publishedKIDs(t, env)); diff != "" {
				t.Fatalf("JWKS after k1 retired and a reload (-want +got):\n%s", diff)
			}
		})
	}
}

// TestKeyActivationSurvivesRestart: a key's first-seen time is stored, so
// a restart neither resets its activation nor forgets a removed key that
// still has live tokens.
func TestKeyActivationSurvivesRestart(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			clock := newFakeClock()
			cfg := testConfig(t, clock)
			cfg.DB = d.dsn(t)
			cfg.KeyDir = t.TempDir()
			k1 := newKeyFile(t, cfg.KeyDir, ES256)
			env := start(t, cfg, clock)
			env.mustRegister(t, "alain", goodPassword)
			clock.Advance(time.Minute)
			k2 := newKeyFile(t, cfg.KeyDir, ES256)
			reload(t, env)
			_, k1Token := signingKID(t, env)
			env.svc.Close() // stores that k1 signed

			clock.Advance(5 * time.Minute)
			env = start(t, cfg, clock)
			if kid, _ := signingKID(t, env); kid != k1 {
				t.Fatalf("after a restart 5m into k2's delay, signing kid = %s, want k1", kid)
			}
			clock.Advance(5 * time.Minute)
			if kid, _ := signingKID(t, env); kid != k2 {
				t.Fatalf("10m after k2 was first seen, signing kid = %s, want k2", kid)
			}
			// k1 removed while the service is down: after the restart it
			// is still published, from the database, for its tokens.
			env.svc.Close()
			if err := os.Remove(filepath.Join(cfg.KeyDir, k1+".pem")); err != nil {
				t.Fatal(err)
			}
			env = start(t, cfg, clock)
			if diff := cmp.Diff(sorted(k1, k2), publishedKIDs(t, env)); diff != "" {
				t.Fatalf("JWKS after restart without k1's file (-want +got):\n%s", diff)
			}
			mustVerify(t, env, k1Token)
		})
	}
}

// TestKeyUseSharedAcrossReplicas: two services on one database and one
// key directory, as replicas are. A key only the first one signed with
// stays published by the second until those tokens expire.
func TestKeyUseSharedAcrossReplicas(t *testing.T) {
	clock := newFakeClock()
	cfg := testConfig(t, clock)
	cfg.DB = pgtest.URL(t)
	cfg.KeyDir = t.TempDir()
	k1 := newKeyFile(t, cfg.KeyDir, ES256)
	a := start(t, cfg, clock)
	b := start(t, cfg, clock)
	a.mustRegister(t, "alain", goodPassword)
	clock.Advance(time.Minute)
	k2 := newKeyFile(t, cfg.KeyDir, ES256)
	reload(t, a)
	reload(t, b)
	clock.Advance(10 * time.Minute)
	// Only a signs with k1, late; b has moved on to k2.
	a.svc.keys.mu.Lock()
	a.svc.keys.keys[k2].firstSeen = a.svc.keys.keys[k2].firstSeen.Add(time.Hour) // a still in k2's delay
	a.svc.keys.mu.Unlock()
	if kid, _ := signingKID(t, a); kid != k1 {
		t.Fatalf("a signs with %s, want k1", kid)
	}
	if err := os.Remove(filepath.Join(cfg.KeyDir, k1+".pem")); err != nil {
		t.Fatal(err)
	}
	reload(t, a) // stores a's use of k1
	reload(t, b)
	if diff := cmp.Diff(sorted(k1, k2), publishedKIDs(t, b)); diff != "" {
		t.Fatalf("b's JWKS after k1's removal (-want +got):\n%s", diff)
	}
}

// TestRemovedUnusedKeyWithdrawnAtOnce: a key that never signed has no
// tokens to outlive.
func TestRemovedUnusedKeyWithdrawnAtOnce(t *testing.T) {
	dir := t.TempDir()
	k1 := newKeyFile(t, dir, ES256)
	env := newEnv(t, func(c *Config) { c.KeyDir = dir })
	k2 := newKeyFile(t, env.cfg.KeyDir, ES256)
	reload(t, env)
	if err := os.Remove(filepath.Join(env.cfg.KeyDir, k2+".pem")); err != nil {
		t.Fatal(err)
	}
	reload(t, env)
	if diff := cmp.Diff([]string{k1}, publishedKIDs(t, env)); diff != "" {
		t.Errorf("JWKS after removing a never-used key (-want +got):\n%s", diff)
	}
}

// TestReplacedKeySignsAtOnce: when every old key is removed at once,
// the new one signs rather than leaving logins failing for the delay.
func TestReplacedKeySignsAtOnce(t *testing.T) {
	clock := newFakeClock()
	cfg := testConfig(t, clock)
	cfg.KeyDir = t.TempDir()
	k1 := newKeyFile(t, cfg.KeyDir, ES256)
	env := start(t, cfg, clock)
	env.mustRegister(t, "alain", goodPassword)
	signingKID(t, env)
	os.Remove(filepath.Join(cfg.KeyDir, k1+".pem"))
	k2 := newKeyFile(t, cfg.KeyDir, ES256)
	reload(t, env)
	if kid, _ := signingKID(t, env); kid != k2 {
		t.Errorf("after replacing k1 by k2, signing kid = %s, want k2", kid)
	}
}

// TestOtherAlgorithmPublishedNotSigning: a key of another type is
// published (so verifiers learn it before a switch) but never signs.
func TestOtherAlgorithmPublishedNotSigning(t *testing.T) {
	clock := newFakeClock()
	cfg := testConfig(t, clock)
	cfg.KeyDir = t.TempDir()
	es := newKeyFile(t, cfg.KeyDir, ES256)
	ed := newKeyFile(t, cfg.KeyDir, EdDSA)
	env := start(t, cfg, clock)
	env.mustRegister(t, "alain", goodPassword)
	clock.Advance(time.Hour)
	if kid, _ := signingKID(t, env); kid != es {
		t.Errorf("signing kid = %s, want the ES256 key", kid)
	}
	if diff := cmp.Diff(sorted(es, ed), publishedKIDs(t, env)); diff != "" {
		t.Errorf("JWKS (-want +got):\n%s", diff)
	}
	res := env.do(t, request{method: "GET", path: "/.well-known/openid-configuration"})
	var doc discovery
	res.json(t, &doc)
	if diff := cmp.Diff([]string{"ES256", "EdDSA"}, doc.IDTokenSigningAlgs); diff != "" {
		t.Errorf("discovery algs (-want +got):\n%s", diff)
	}
}

// TestJWKSETagChangesWithKeys: a cached JWKS is revalidated to a new
// body when a key is added.
func TestJWKSETagChangesWithKeys(t *testing.T) {
	dir := t.TempDir()
	newKeyFile(t, dir, ES256)
	env := newEnv(t, func(c *Config) { c.KeyDir = dir })
	first := env.do(t, request{method: "GET", path: "/.well-known/jwks.json"})
	etag := first.header.Get("ETag")
	newKeyFile(t, env.cfg.KeyDir, ES256)
	reload(t, env)
	res := env.do(t, request{method: "GET", path: "/.well-known/jwks.json", headers: map[string]string{"If-None-Match": etag}})
	if res.status != http.StatusOK || res.header.Get("ETag") == etag {
		t.Errorf("revalidation after adding a key = %d ETag %s; want 200 with a new ETag", res.status, res.header.Get("ETag"))
	}
}

// TestGeneratedKeyKept: with no key directory a key is generated once
// under the data directory and reused after a restart, so tokens stay
// valid.
func TestGeneratedKeyKept(t *testing.T) {
	clock := newFakeClock()
	cfg := testConfig(t, clock)
	env := start(t, cfg, clock)
	env.mustRegister(t, "alain", goodPassword)
	kid, token := signingKID(t, env)
	files, _ := filepath.Glob(filepath.Join(cfg.DataDir, "keys", "*.pem"))
	if len(files) != 1 || filepath.Base(files[0]) != kid+".pem" {
		t.Fatalf("key files = %v, want one named %s.pem", files, kid)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	env.svc.Close()

	env = start(t, cfg, clock)
	if again, _ := signingKID(t, env); again != kid {
		t.Errorf("after restart signing kid = %s, want the kept %s", again, kid)
	}
	mustVerify(t, env, token)
	files, _ = filepath.Glob(filepath.Join(cfg.DataDir, "keys", "*"))
	if len(files) != 1 {
		t.Errorf("key files after restart = %v, want the one", files)
	}
}

// TestKubernetesSecretLayout: a mounted Secret is a directory of
// symlinks through ..data to a timestamped directory, swapped atomically
// on update.
func TestKubernetesSecretLayout(t *testing.T) {
	keyDir := t.TempDir()
	src := t.TempDir()
	k1 := newKeyFile(t, src, ES256)
	k2 := newKeyFile(t, src, ES256)
	write := func(version string, kids ...string) {
		t.Helper()
		dir := filepath.Join(keyDir, "..2030_01_02_"+version)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, kid := range kids {
			data, err := os.ReadFile(filepath.Join(src, kid+".pem"))
			if err != nil {
				t.Fatal(err)
			}
			name := []string{"signing.pem", "next.pem"}[i]
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(keyDir, name)
			if _, err := os.Lstat(link); err != nil {
				if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
					t.Fatal(err)
				}
			}
		}
		tmp := filepath.Join(keyDir, "..data_tmp")
		if err := os.Symlink(filepath.Base(dir), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(keyDir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	write("v1", k1)
	// A hidden file (an editor's backup, say) is never a key.
	hidden := newKeyFile(t, src, ES256)
	if err := os.Rename(filepath.Join(src, hidden+".pem"), filepath.Join(keyDir, ".signing.pem.bak")); err != nil {
		t.Fatal(err)
	}
	env := newEnv(t, func(c *Config) { c.KeyDir = keyDir })
	if diff := cmp.Diff([]string{k1}, publishedKIDs(t, env)); diff != "" {
		t.Fatalf("JWKS from the Secret (-want +got):\n%s", diff)
	}
	write("v2", k1, k2)
	os.RemoveAll(filepath.Join(keyDir, "..2030_01_02_v1"))
	reload(t, env)
	if diff := cmp.Diff(sorted(k1, k2), publishedKIDs(t, env)); diff != "" {
		t.Fatalf("JWKS after the Secret gained a key (-want +got):\n%s", diff)
	}
	if strings.Contains(env.logs.String(), "skipping key file") {
		t.Errorf("the Secret's own entries were treated as key files:\n%s", env.logs)
	}
}

// TestKeyPollingPicksUpChanges runs the real watcher.
func TestKeyPollingPicksUpChanges(t *testing.T) {
	dir := t.TempDir()
	newKeyFile(t, dir, ES256)
	env := newEnv(t, func(c *Config) {
		c.KeyDir = dir
		c.KeyPollInterval = 10 * time.Millisecond
	})
	k1 := newKeyFile(t, dir, ES256)
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(publishedKIDs(t, env), k1) {
		if time.Now().After(deadline) {
			t.Fatalf("key added to the directory was not published within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) {
	t.Helper()
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestUnusableKeyFilesSkipped: files that are not usable signing keys are
// logged and skipped; the rest keep working.
func TestUnusableKeyFilesSkipped(t *testing.T) {
	dir := t.TempDir()
	good := newKeyFile(t, dir, ES256)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, dir, "weak-rsa.pem", "PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(rsa1024)))
	writePEM(t, dir, "p384.pem", "PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(p384)))
	writePEM(t, dir, "public.pem", "PUBLIC KEY", must(x509.MarshalPKIXPublicKey(p384.Public())))
	writePEM(t, dir, "corrupt.pem", "PRIVATE KEY", []byte("not DER"))
	os.WriteFile(filepath.Join(dir, "README"), []byte("keys live here\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "huge.pem"), make([]byte, maxKeyFileSize+1), 0o644)

	env := newEnv(t, func(c *Config) { c.KeyDir = dir })
	if diff := cmp.Diff([]string{good}, publishedKIDs(t, env)); diff != "" {
		t.Errorf("JWKS (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(env.svc.metrics.keyEvents.WithLabelValues("invalid_file")); got != 6 {
		t.Errorf("invalid_file events = %v, want 6", got)
	}
	for _, f := range []string{"weak-rsa.pem", "p384.pem", "public.pem", "corrupt.pem", "README", "huge.pem"} {
		if !strings.Contains(env.logs.String(), `"file":"`+f+`"`) {
			t.Errorf("no warning logged for %s", f)
		}
	}
	goodPEM, _ := os.ReadFile(filepath.Join(dir, good+".pem"))
	body := strings.Split(string(goodPEM), "\n")[1] // first base64 line
	if strings.Contains(env.logs.String(), "-----BEGIN") || strings.Contains(env.logs.String(), body) {
		t.Error("logs contain key material")
	}
}

// TestNoUsableKeyRefusesToStart: a key directory with nothing that can
// sign is a configuration error, not a service that fails every login.
func TestNoUsableKeyRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	newKeyFile(t, dir, EdDSA)
	clock := newFakeClock()
	cfg := testConfig(t, clock)
	cfg.KeyDir = dir
	svc, err := New(context.Background(), cfg, nil, nil)
	if err == nil {
		svc.Close()
		t.Fatal("New with only an EdDSA key for ES256 succeeded, want an error")
	}
}

// TestReadiness: ready with a database and a signing key; not ready once
// stopping.
func TestReadiness(t *testing.T) {
	env := newEnv(t)
	if err := env.svc.Ready(context.Background()); err != nil {
		t.Fatalf("Ready = %v, want nil", err)
	}
	if res := env.do(t, request{method: "GET", path: "/readyz"}); res.status != 200 {
		t.Errorf("GET /readyz = %d, want 200", res.status)
	}
	env.svc.keys.mu.Lock()
	saved := env.svc.keys.keys
	env.svc.keys.keys = map[string]*signingKey{}
	env.svc.keys.mu.Unlock()
	if res := env.do(t, request{method: "GET", path: "/readyz"}); res.status != 503 {
		t.Errorf("GET /readyz without a signing key = %d, want 503", res.status)
	}
	env.mustRegister(t, "alain", goodPassword)
	if res := env.login(t, "alain", goodPassword); res.status != 503 {
		t.Errorf("login without a signing key = %d, want 503", res.status)
	}
	env.svc.keys.mu.Lock()
	env.svc.keys.keys = saved
	env.svc.keys.mu.Unlock()
	env.svc.SetStopping()
	if res := env.do(t, request{method: "GET", path: "/readyz"}); res.status != 503 {
		t.Errorf("GET /readyz while stopping = %d, want 503", res.status)
	}
	if res := env.do(t, request{method: "GET", path: "/healthz"}); res.status != 200 {
		t.Errorf("GET /healthz while stopping = %d, want 200", res.status)
	}
}
