package main

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate-dev/tollgate/internal/dpop"
)

// dpopRun runs `tollgate dpop args` in process and returns its stdout
// (trimmed), stderr and error.
func dpopRun(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := signProof(args, &stdout, &stderr)
	return strings.TrimSpace(stdout.String()), stderr.String(), err
}

// newKeyFile writes key as a PKCS #8 PEM file of mode 0600 and returns
// its path.
func newKeyFile(t *testing.T, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writeKeyFile(t, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func writeKeyFile(t *testing.T, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

// proofClaims are a proof's claims, read without verifying: the
// verifier ignores the query of htu, so what the helper put there is
// checked here.
func proofClaims(t *testing.T, proof string) jwt.MapClaims {
	t.Helper()
	c := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(proof, c); err != nil {
		t.Fatalf("proof %q: %v", proof, err)
	}
	return c
}

// TestDPoPProof signs proofs with the command and verifies them with
// internal/dpop's Verifier, as the issuer and authz do: each must verify
// for the request it was made for, and only for it.
func TestDPoPProof(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	nonces, err := dpop.NewNonces(nil, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	const token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJl"
	for _, tc := range []struct {
		name    string
		key     crypto.Signer
		env     map[string]string
		args    []string
		nonces  *dpop.Nonces
		req     dpop.Request // JKT is filled in with the key's
		wantAlg string
		wantErr error // what Verify returns; nil for a proof that verifies
	}{
		{"token endpoint", ec, nil, []string{"-method", "POST", "-url", "http://localhost:8080/token"}, nil,
			dpop.Request{Method: "POST", URL: "http://localhost:8080/token"}, "ES256", nil},
		{"resource request with -token", ec, nil, []string{"-url", "http://localhost:8080/books", "-token", token}, nil,
			dpop.Request{Method: "GET", URL: "http://localhost:8080/books", AccessToken: token}, "ES256", nil},
		{"token from the environment", ec, map[string]string{"TOLLGATE_DPOP_TOKEN": token}, []string{"-url", "http://localhost:8080/books"}, nil,
			dpop.Request{Method: "GET", URL: "http://localhost:8080/books", AccessToken: token}, "ES256", nil},
		{"ath names only its token", ec, nil, []string{"-url", "http://localhost:8080/books", "-token", token}, nil,
			dpop.Request{Method: "GET", URL: "http://localhost:8080/books", AccessToken: token + "x"}, "ES256", dpop.ErrTokenHash},
		{"no -token, no ath", ec, nil, []string{"-url", "http://localhost:8080/books"}, nil,
			dpop.Request{Method: "GET", URL: "http://localhost:8080/books", AccessToken: token}, "ES256", dpop.ErrTokenHash},
		{"-method", ec, nil, []string{"-method", "DELETE", "-url", "http://localhost:8080/books/1"}, nil,
			dpop.Request{Method: "DELETE", URL: "http://localhost:8080/books/1"}, "ES256", nil},
		{"proof for another method", ec, nil, []string{"-method", "DELETE", "-url", "http://localhost:8080/books/1"}, nil,
			dpop.Request{Method: "GET", URL: "http://localhost:8080/books/1"}, "ES256", dpop.ErrInvalidProof},
		{"proof for another URL", ec, nil, []string{"-url", "http://localhost:8080/books/1"}, nil,
			dpop.Request{Method: "GET", URL: "http://localhost:8080/books/2"}, "ES256", dpop.ErrInvalidProof},
		{"query and fragment", ec, nil, []string{"-url", "http://localhost:8080/books?page=2#top"}, nil,
			dpop.Request{Method: "GET", URL: "http://localhost:8080/books?page=3"}, "ES256", nil},
		{"-nonce", ec, nil, []string{"-url", "http://localhost:8080/books", "-nonce", nonces.Current()}, nonces,
			dpop.Request{Method: "GET", URL: "http://localhost:8080/books"}, "ES256", nil},
		{"no -nonce where one is asked for", ec, nil, []string{"-url", "http://localhost:8080/books"}, nonces,
			dpop.Request{Method: "GET", URL: "http://localhost:8080/books"}, "ES256", dpop.ErrUseNonce},
		{"P-384 key", ec384, nil, []string{"-url", "https://books.example/books"}, nil,
			dpop.Request{Method: "GET", URL: "https://books.example/books"}, "ES384", nil},
		{"Ed25519 key", ed, nil, []string{"-url", "https://books.example/books"}, nil,
			dpop.Request{Method: "GET", URL: "https://books.example/books"}, "EdDSA", nil},
		{"RSA 2048 key", rsaKey, nil, []string{"-url", "https://books.example/books"}, nil,
			dpop.Request{Method: "GET", URL: "https://books.example/books"}, "PS256", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			keyFile := newKeyFile(t, tc.key)
			proof, stderr, err := dpopRun(t, append([]string{"-key", keyFile}, tc.args...)...)
			if err != nil {
				t.Fatalf("tollgate dpop %q: %v", tc.args, err)
			}
			if stderr != "" {
				t.Errorf("tollgate dpop %q with an existing key printed %q on stderr, want nothing", tc.args, stderr)
			}
			jkt, err := dpop.Thumbprint(tc.key.Public())
			if err != nil {
				t.Fatal(err)
			}
			cfg := dpop.DefaultConfig()
			cfg.Nonces = tc.nonces
			v, err := dpop.NewVerifier(cfg)
			if err != nil {
				t.Fatal(err)
			}
			req := tc.req
			req.JKT = jkt
			_, err = v.Verify(t.Context(), proof, req)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Errorf("Verify(tollgate dpop %q, %+v) = %v, want %v", tc.args, req, err, tc.wantErr)
			}
			c := proofClaims(t, proof)
			if htu, _ := c["htu"].(string); strings.ContainsAny(htu, "?#") {
				t.Errorf("tollgate dpop %q: htu = %q, want it without query and fragment (RFC 9449 §4.2)", tc.args, htu)
			}
			tok, _, _ := jwt.NewParser().ParseUnverified(proof, jwt.MapClaims{})
			if alg := tok.Header["alg"]; alg != tc.wantAlg {
				t.Errorf("tollgate dpop %q: alg = %v, want %s", tc.args, alg, tc.wantAlg)
			}
		})
	}
}

// TestDPoPKeyCreatedOnce pins the newcomer's path: the first run creates
// the key (mode 0600, a note on stderr), every later run signs with the
// same key, and -thumbprint names it.
func TestDPoPKeyCreatedOnce(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "dpop.pem")
	url := "http://localhost:8080/token"
	first, stderr, err := dpopRun(t, "-key", keyFile, "-method", "POST", "-url", url)
	if err != nil {
		t.Fatalf("tollgate dpop (new key): %v", err)
	}
	if !strings.Contains(stderr, "created a new ECDSA P-256 key in "+keyFile) {
		t.Errorf("tollgate dpop (new key) stderr = %q, want a note that it created %s", stderr, keyFile)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatalf("key file after the first run: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("new key file mode = %04o, want 0600", perm)
	}
	created, _ := os.ReadFile(keyFile)
	if k, err := readKey(keyFile); err != nil {
		t.Errorf("readKey(new key) = %v", err)
	} else if ek, ok := k.(*ecdsa.PrivateKey); !ok || ek.Curve != elliptic.P256() {
		t.Errorf("new key is a %T, want an ECDSA P-256 key", k)
	}

	second, stderr, err := dpopRun(t, "-key", keyFile, "-method", "POST", "-url", url)
	if err != nil {
		t.Fatalf("tollgate dpop (existing key): %v", err)
	}
	if stderr != "" {
		t.Errorf("tollgate dpop (existing key) stderr = %q, want nothing", stderr)
	}
	if again, _ := os.ReadFile(keyFile); !bytes.Equal(again, created) {
		t.Error("the second run rewrote the key file")
	}
	jkt, _, err := dpopRun(t, "-key", keyFile, "-thumbprint")
	if err != nil {
		t.Fatalf("tollgate dpop -thumbprint: %v", err)
	}
	v, err := dpop.NewVerifier(dpop.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ name, proof string }{{"first", first}, {"second", second}} {
		got, err := v.Verify(t.Context(), p.proof, dpop.Request{Method: "POST", URL: url, JKT: jkt})
		if err != nil {
			t.Errorf("Verify(%s proof, jkt from -thumbprint) = %v, want the key -thumbprint names", p.name, err)
			continue
		}
		if got.JKT != jkt {
			t.Errorf("%s proof's key thumbprint = %s, want %s", p.name, got.JKT, jkt)
		}
	}
	if c1, c2 := proofClaims(t, first), proofClaims(t, second); c1["jti"] == c2["jti"] {
		t.Errorf("two proofs share jti %v, want a new one each time", c1["jti"])
	}
}

// TestDPoPBadKeyFile: a file that is not a usable private key is an
// error (exit 1) that says what is wrong, and is left as it was: never
// replaced by a new key.
func TestDPoPBadKeyFile(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	sec1, _ := x509.MarshalECPrivateKey(ec)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallDER, _ := x509.MarshalPKCS8PrivateKey(small)
	x, _ := ecdh.X25519().GenerateKey(rand.Reader)
	xDER, _ := x509.MarshalPKCS8PrivateKey(x)
	pub, _ := x509.MarshalPKIXPublicKey(ec.Public())
	for _, tc := range []struct {
		name string
		data []byte
		mode os.FileMode
		want string // in the error
	}{
		{"not PEM", []byte("hello\n"), 0o600, "not a PEM file"},
		{"empty", nil, 0o600, "not a PEM file"},
		{"SEC 1 EC key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600, `"EC PRIVATE KEY" PEM block, not a PKCS #8`},
		{"public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600, `"PUBLIC KEY" PEM block`},
		{"encrypted", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}), 0o600, "is encrypted"},
		{"garbage in a PRIVATE KEY block", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("garbage")}), 0o600, "not a valid PKCS #8 private key"},
		{"RSA 1024", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: smallDER}), 0o600, "RSA 1024, under the 2048 bits"},
		{"X25519, which cannot sign", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: xDER}), 0o600, "cannot sign"},
		{"huge", bytes.Repeat([]byte("A"), maxKeyFileBytes+1), 0o600, "over 64 KiB"},
		{"world-readable", good, 0o644, "can be read or written by others (mode 0644): run chmod 600"},
		{"group-readable", good, 0o640, "(mode 0640)"},
		{"world-writable", good, 0o602, "(mode 0602)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keyFile := writeKeyFile(t, tc.data, tc.mode)
			for _, args := range [][]string{
				{"-key", keyFile, "-url", "http://localhost:8080/books"},
				{"-key", keyFile, "-thumbprint"},
			} {
				out, _, err := dpopRun(t, args...)
				var ue usageError
				switch {
				case err == nil:
					t.Errorf("tollgate dpop %q (%s) = proof %q, want an error", args, tc.name, out)
				case errors.As(err, &ue):
					t.Errorf("tollgate dpop %q (%s) = usage error %v, want a failure (exit 1)", args, tc.name, err)
				case !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), keyFile):
					t.Errorf("tollgate dpop %q (%s) = %v, want an error naming %s and saying %q", args, tc.name, err, keyFile, tc.want)
				}
				if out != "" {
					t.Errorf("tollgate dpop %q (%s) printed %q on stdout, want nothing", args, tc.name, out)
				}
			}
			if got, _ := os.ReadFile(keyFile); !bytes.Equal(got, tc.data) {
				t.Errorf("tollgate dpop changed the unusable key file %s", tc.name)
			}
		})
	}
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		if _, _, err := dpopRun(t, "-key", dir, "-thumbprint"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("tollgate dpop -key DIR = %v, want an error saying it is not a regular file", err)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		keyFile := filepath.Join(t.TempDir(), "missing", "dpop.pem")
		var ue usageError
		if _, _, err := dpopRun(t, "-key", keyFile, "-thumbprint"); err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "create key "+keyFile) {
			t.Errorf("tollgate dpop -key in a missing directory = %v, want a failure to create %s", err, keyFile)
		}
	})
}

// TestDPoPUsage: command lines the command cannot use are usage errors
// (exit 2), and create no key.
func TestDPoPUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string // after -key, except where -key is the point
		want string
	}{
		{"no -url", nil, "-url is required"},
		{"no -key", []string{"-url", "http://localhost:8080/books"}, "-key FILE is required"},
		{"relative -url", []string{"-url", "/books"}, `-url "/books"`},
		{"-url not http", []string{"-url", "ftp://localhost/books"}, "not http or https"},
		{"-url with user info", []string{"-url", "http://alain:pw@localhost:8080/login"}, "no user info"},
		{"-method with a space", []string{"-method", "GE T", "-url", "http://localhost:8080/books"}, "is not an HTTP method"},
		{"empty -method", []string{"-method", "", "-url", "http://localhost:8080/books"}, "is not an HTTP method"},
		{"unknown flag", []string{"-nope"}, "flag provided but not defined"},
		{"extra argument", []string{"-url", "http://localhost:8080/books", "GET"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keyFile := filepath.Join(t.TempDir(), "dpop.pem")
			args := tc.args
			if tc.name != "no -key" {
				args = append([]string{"-key", keyFile}, args...)
			}
			_, _, err := dpopRun(t, args...)
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("tollgate dpop %q = %v, want a usage error saying %q", args, err, tc.want)
			}
			if _, err := os.Stat(keyFile); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("tollgate dpop %q created a key file on a bad command line (stat: %v)", args, err)
			}
		})
	}
}

// TestDPoPCreateKeyNeverReplaces: a key that appears between the look
// and the write (another run's) is kept, not overwritten.
func TestDPoPCreateKeyNeverReplaces(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyFile := newKeyFile(t, ec)
	before, _ := os.ReadFile(keyFile)
	if _, err := createKey(keyFile); !errors.Is(err, os.ErrExist) {
		t.Errorf("createKey(existing file) = %v, want os.ErrExist", err)
	}
	if after, _ := os.ReadFile(keyFile); !bytes.Equal(after, before) {
		t.Error("createKey replaced an existing key file")
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(keyFile), ".dpop-key-*")); len(left) > 0 {
		t.Errorf("createKey left temporary files: %q", left)
	}
}
