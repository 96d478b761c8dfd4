package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/tollgate-dev/tollgate/internal/dpop"
)

// maxKeyFileBytes caps what is read of a key file: an RSA 8192 PKCS #8
// PEM is under 7 KiB.
const maxKeyFileBytes = 64 << 10

// minProofRSABits is the smallest RSA key the verifiers accept in a proof.
const minProofRSABits = 2048

// dpopFlags are the settings of `tollgate dpop`.
type dpopFlags struct {
	key        string
	method     string
	url        string
	token      string
	nonce      string
	thumbprint bool
}

func (f *dpopFlags) register(fs *flagSet) {
	fs.String(&f.key, "key", "TOLLGATE_DPOP_KEY", "", "PKCS #8 PEM private key file; created (ECDSA P-256, mode 0600) when it does not exist")
	fs.String(&f.method, "method", "TOLLGATE_DPOP_METHOD", "GET", "HTTP method of the request the proof goes with (htm)")
	fs.String(&f.url, "url", "TOLLGATE_DPOP_URL", "", "URL of the request the proof goes with (htu; the query is left out), e.g. http://localhost:8080/token")
	fs.String(&f.token, "token", "TOLLGATE_DPOP_TOKEN", "", "access token the proof goes with, for a resource request (adds ath); none at the token endpoint")
	fs.String(&f.nonce, "nonce", "TOLLGATE_DPOP_NONCE", "", "server nonce from a DPoP-Nonce header, when the server asks for one")
	fs.Bool(&f.thumbprint, "thumbprint", "TOLLGATE_DPOP_THUMBPRINT", false, "print the key's RFC 7638 thumbprint (a bound token's cnf.jkt) instead of a proof")
}

// runDPoP is `tollgate dpop`: one DPoP proof (RFC 9449), signed with a
// local key file, on stdout, for curl.
func runDPoP(ctx context.Context, args []string) error {
	return signProof(args, os.Stdout, os.Stderr)
}

// signProof is runDPoP with its output streams: the proof (or the
// thumbprint) goes to stdout, the note about a new key to stderr.
func signProof(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dpop")
	var f dpopFlags
	f.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: tollgate dpop -key FILE -url URL [-method POST] [-token ACCESS_TOKEN] [-nonce NONCE]
       tollgate dpop -key FILE -thumbprint

Prints one DPoP proof (RFC 9449) for one request, signed with the key in
FILE, which is created (ECDSA P-256, mode 0600) if it does not exist. A
proof is good for one request within a minute; make a new one for each:

  curl -X POST http://localhost:8080/token \
    -H "DPoP: $(tollgate dpop -key dpop.pem -method POST -url http://localhost:8080/token)" ...
  curl http://localhost:8080/books -H "Authorization: DPoP $TOKEN" \
    -H "DPoP: $(tollgate dpop -key dpop.pem -url http://localhost:8080/books -token "$TOKEN")"

-thumbprint prints the key's thumbprint, the cnf.jkt of the tokens bound
to it. A key file that others can read is refused, as ssh refuses one.

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	if f.key == "" {
		return usageError{errors.New("-key FILE is required (it is created if it does not exist)")}
	}
	var htu string
	if !f.thumbprint {
		if f.url == "" {
			return usageError{errors.New("-url is required: the URL of the request the proof goes with")}
		}
		// The normalised form is the URL without query and fragment, as
		// htu must be (§4.2), and is what the server compares.
		u, err := dpop.NormalizeURL(f.url)
		if err != nil {
			return usageError{fmt.Errorf("-url %q: %w", f.url, err)}
		}
		htu = u
		if !isToken(f.method) {
			return usageError{fmt.Errorf("-method %q is not an HTTP method", f.method)}
		}
	}
	key, created, err := loadOrCreateKey(f.key)
	if err != nil {
		return err
	}
	s, err := dpop.NewSigner(key)
	if err != nil {
		return fmt.Errorf("key %s: %w", f.key, err)
	}
	if created {
		fmt.Fprintf(stderr, "tollgate dpop: created a new ECDSA P-256 key in %s (thumbprint %s)\n", f.key, s.JKT())
	}
	if f.thumbprint {
		_, err := fmt.Fprintln(stdout, s.JKT())
		return err
	}
	proof, err := s.Proof(f.method, htu, dpop.ProofOptions{AccessToken: f.token, Nonce: f.nonce})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, proof)
	return err
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2), as a
// method is.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// loadOrCreateKey reads the private key in path, or creates one there if
// there is no file, and reports whether it did.
func loadOrCreateKey(path string) (crypto.Signer, bool, error) {
	k, err := readKey(path)
	if !errors.Is(err, os.ErrNotExist) {
		return k, false, err
	}
	k, err = createKey(path)
	if errors.Is(err, os.ErrExist) {
		// Another run created it first: use that one.
		k, err = readKey(path)
		return k, false, err
	}
	return k, err == nil, err
}

// readKey reads a PKCS #8 PEM private key that only its owner can read.
func readKey(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key %s is not a regular file", path)
	}
	// A key others can read makes the tokens bound to it as easy to steal
	// as bearer tokens: refuse it, as ssh does. Windows has no such bits.
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("key %s can be read or written by others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("key %s is over %d KiB: not a private key file", path, maxKeyFileBytes>>10)
	}
	block, _ := pem.Decode(data)
	switch {
	case block == nil:
		return nil, fmt.Errorf("key %s is not a PEM file (want a PKCS #8 \"PRIVATE KEY\" block)", path)
	case block.Type == "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("key %s is encrypted; decrypt it first (openssl pkcs8 -in %s -out FILE)", path, path)
	case block.Type != "PRIVATE KEY":
		return nil, fmt.Errorf("key %s holds a %q PEM block, not a PKCS #8 \"PRIVATE KEY\" (convert it: openssl pkcs8 -topk8 -nocrypt -in %s -out FILE)", path, block.Type, path)
	}
	raw, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		// The ASN.1 detail helps no one who can act on it.
		return nil, fmt.Errorf("key %s is not a valid PKCS #8 private key", path)
	}
	k, ok := raw.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key %s is a %T, which cannot sign", path, raw)
	}
	if r, ok := k.(*rsa.PrivateKey); ok && r.N.BitLen() < minProofRSABits {
		return nil, fmt.Errorf("key %s is RSA %d, under the %d bits a server accepts in a proof", path, r.N.BitLen(), minProofRSABits)
	}
	return k, nil
}

// createKey writes a new ECDSA P-256 key to path, mode 0600, whole or
// not at all, and fails with os.ErrExist if path appeared meanwhile.
func createKey(path string) (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	// CreateTemp makes the file 0600; linking it into place never
	// replaces a key another run wrote meanwhile.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".dpop-key-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create key %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("create key %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, err
		}
		return nil, fmt.Errorf("create key %s: %w", path, err)
	}
	return k, nil
}
