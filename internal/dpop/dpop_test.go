package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/tollgate-dev/tollgate/internal/jose"
)

const (
	testURL   = "https://api.example.com/books"
	testToken = "the.access.token"
)

var (
	clock     = time.Unix(1_800_000_000, 0)
	keyOnce   sync.Once
	keyA      *ecdsa.PrivateKey
	keyB      *ecdsa.PrivateKey
	keyP384   *ecdsa.PrivateKey
	keyRSA    *rsa.PrivateKey
	keyRSA1k  *rsa.PrivateKey
	keyEd     ed25519.PrivateKey
	testNonce *Nonces
)

func keys(t testing.TB) {
	keyOnce.Do(func() {
		keyA, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		keyB, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		keyP384, _ = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		keyRSA, _ = rsa.GenerateKey(rand.Reader, 2048)
		keyRSA1k, _ = rsa.GenerateKey(rand.Reader, 1024)
		_, keyEd, _ = ed25519.GenerateKey(rand.Reader)
		testNonce, _ = NewNonces([]byte(strings.Repeat("s", 32)), time.Minute, func() time.Time { return clock })
	})
}

// jwkOf is key's public JWK as a header member.
func jwkOf(t testing.TB, pub crypto.PublicKey) map[string]any {
	t.Helper()
	k, err := jwk.FromRaw(pub)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(k)
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

// proof is one proof under construction: the header and claims as maps,
// so that a case can change, add or drop any member, and the key that
// signs it.
type proof struct {
	header map[string]any
	claims map[string]any
	method jwt.SigningMethod
	key    crypto.Signer
}

func goodProof(t testing.TB) *proof {
	keys(t)
	return &proof{
		header: map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": jwkOf(t, keyA.Public())},
		claims: map[string]any{"jti": "jti-1", "htm": "GET", "htu": testURL, "iat": clock.Unix(), "ath": TokenHash(testToken)},
		method: jwt.SigningMethodES256,
		key:    keyA,
	}
}

func (p *proof) sign(t testing.TB) string {
	t.Helper()
	tok := jwt.NewWithClaims(p.method, jwt.MapClaims(p.claims))
	tok.Header = p.header
	s, err := tok.SignedString(p.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawJWS signs header and payload JSON as given, for cases that JSON
// maps cannot express.
func rawJWS(t testing.TB, header, payload string, key crypto.Signer, m jwt.SigningMethod) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	in := enc([]byte(header)) + "." + enc([]byte(payload))
	sig, err := m.Sign(in, key)
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + enc(sig)
}

func goodRequest() Request {
	return Request{Method: "GET", URL: testURL, AccessToken: testToken}
}

func newVerifier(t testing.TB, edit func(*Config)) *Verifier {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Now = func() time.Time { return clock }
	if edit != nil {
		edit(&cfg)
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyAccepts(t *testing.T) {
	keys(t)
	jktA, _ := Thumbprint(keyA.Public())
	cases := []struct {
		name  string
		edit  func(*proof)
		req   func(*Request)
		nonce bool
	}{
		{name: "ES256"},
		{name: "bound to its key", req: func(r *Request) { r.JKT = jktA }},
		{name: "PS256", edit: func(p *proof) {
			p.header["alg"], p.header["jwk"], p.method, p.key = "PS256", jwkOf(t, keyRSA.Public()), pssExact(jwt.SigningMethodPS256), keyRSA
		}},
		{name: "RS256", edit: func(p *proof) {
			p.header["alg"], p.header["jwk"], p.method, p.key = "RS256", jwkOf(t, keyRSA.Public()), jwt.SigningMethodRS256, keyRSA
		}},
		{name: "EdDSA", edit: func(p *proof) {
			p.header["alg"], p.header["jwk"], p.method, p.key = "EdDSA", jwkOf(t, keyEd.Public()), jwt.SigningMethodEdDSA, keyEd
		}},
		{name: "ES384", edit: func(p *proof) {
			p.header["alg"], p.header["jwk"], p.method, p.key = "ES384", jwkOf(t, keyP384.Public()), jwt.SigningMethodES384, keyP384
		}},
		{name: "typ in another case", edit: func(p *proof) { p.header["typ"] = "DPoP+JWT" }},
		{name: "htu with query and fragment", edit: func(p *proof) { p.claims["htu"] = testURL + "?a=1#f" }},
		{name: "request with a query", req: func(r *Request) { r.URL = testURL + "?page=2" }},
		{name: "htu with default port and upper-case host", edit: func(p *proof) { p.claims["htu"] = "https://API.Example.COM:443/books" }},
		{name: "htu with dot segments and encoded unreserved", edit: func(p *proof) { p.claims["htu"] = "https://api.example.com/x/../%62ooks" }},
		{name: "iat at the oldest", edit: func(p *proof) { p.claims["iat"] = clock.Add(-DefaultMaxAge).Unix() }},
		{name: "iat at the furthest ahead", edit: func(p *proof) { p.claims["iat"] = clock.Add(DefaultMaxFuture).Unix() }},
		{name: "no ath at a token endpoint", edit: func(p *proof) { delete(p.claims, "ath") }, req: func(r *Request) { r.AccessToken = "" }},
		{name: "current nonce", nonce: true, edit: func(p *proof) { p.claims["nonce"] = testNonce.Current() }},
		{name: "previous period's nonce", nonce: true, edit: func(p *proof) {
			old, _ := NewNonces([]byte(strings.Repeat("s", 32)), time.Minute, func() time.Time { return clock.Add(-time.Minute) })
			p.claims["nonce"] = old.Current()
		}},
		{name: "unknown extra claim", edit: func(p *proof) { p.claims["extra"] = true }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newVerifier(t, func(cfg *Config) {
				if c.nonce {
					cfg.Nonces = testNonce
				}
			})
			p := goodProof(t)
			if c.edit != nil {
				c.edit(p)
			}
			req := goodRequest()
			if c.req != nil {
				c.req(&req)
			}
			got, err := v.Verify(context.Background(), p.sign(t), req)
			if err != nil {
				t.Fatalf("Verify(%s) = %v, want accepted", c.name, err)
			}
			want, _ := Thumbprint(p.key.Public())
			if got.JKT != want || got.JTI != "jti-1" {
				t.Errorf("Verify(%s) = jkt %q jti %q, want %q, jti-1", c.name, got.JKT, got.JTI, want)
			}
		})
	}
}

// pssExact signs RSA-PSS with the salt as long as the hash.
func pssExact(m *jwt.SigningMethodRSAPSS) jwt.SigningMethod { return jose.Method(m.Alg()) }

// TestVerifyRefuses is the attack table: one case for each check of RFC
// 9449 §4.3 (and the binding checks of §7.1), each a good proof with one
// thing wrong. Every case must be refused with the error the RFC gives.
func TestVerifyRefuses(t *testing.T) {
	keys(t)
	jktB, _ := Thumbprint(keyB.Public())
	privJWK := func(k crypto.PrivateKey, upper bool) map[string]any {
		pk, err := jwk.FromRaw(k)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(pk)
		var m map[string]any
		json.Unmarshal(b, &m)
		if upper {
			m["D"] = m["d"]
			delete(m, "d")
		}
		return m
	}
	rsaE3 := jwkOf(t, &rsa.PublicKey{N: keyRSA.N, E: 3})
	cases := []struct {
		name string
		edit func(*proof)
		raw  func() string // the proof, when a map cannot say it
		req  func(*Request)
		cfg  func(*Config)
		want error
		msg  string // what the error must say, where another check would also refuse the case
	}{
		// Step 1: exactly one proof.
		{name: "no proof", raw: func() string { return "" }, want: ErrInvalidProof},
		{name: "two proofs", raw: func() string { p := goodProof(t).sign(t); return p + "," + p }, want: ErrInvalidProof, msg: "more than one DPoP header"},
		{name: "over the size limit", edit: func(p *proof) { p.claims["pad"] = strings.Repeat("x", MaxProofBytes) }, want: ErrInvalidProof},
		// Step 2: a well-formed JWT.
		{name: "not a JWT", raw: func() string { return "not-a-jwt" }, want: ErrInvalidProof},
		{name: "JWE shape", raw: func() string { return "a.b.c.d.e" }, want: ErrInvalidProof},
		{name: "iat as a string", edit: func(p *proof) { p.claims["iat"] = "1800000000" }, want: ErrInvalidProof},
		// Step 4: typ.
		{name: "no typ", edit: func(p *proof) { delete(p.header, "typ") }, want: ErrInvalidProof},
		{name: "typ JWT", edit: func(p *proof) { p.header["typ"] = "JWT" }, want: ErrInvalidProof},
		{name: "typ at+jwt", edit: func(p *proof) { p.header["typ"] = "at+jwt" }, want: ErrInvalidProof},
		{name: "crit header", edit: func(p *proof) { p.header["crit"] = []string{"exp"} }, want: ErrInvalidProof},
		// Step 5: an asymmetric algorithm from the allowlist.
		{name: "alg none", raw: func() string {
			p := goodProof(t)
			p.header["alg"] = "none"
			tok := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(p.claims))
			tok.Header = p.header
			s, _ := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		}, want: ErrInvalidProof},
		{name: "alg HS256 keyed with the jwk", raw: func() string {
			p := goodProof(t)
			p.header["alg"] = "HS256"
			b, _ := json.Marshal(p.header["jwk"])
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(p.claims))
			tok.Header = p.header
			s, _ := tok.SignedString(b)
			return s
		}, want: ErrInvalidProof},
		{name: "alg outside the allowlist", cfg: func(c *Config) { c.Algorithms = []string{"EdDSA"} }, want: ErrInvalidProof},
		// Step 6: a public key in the header.
		{name: "no jwk", edit: func(p *proof) { delete(p.header, "jwk") }, want: ErrInvalidProof},
		{name: "jwk not an object", edit: func(p *proof) { p.header["jwk"] = "key" }, want: ErrInvalidProof},
		{name: "private EC key in the header", edit: func(p *proof) { p.header["jwk"] = privJWK(keyA, false) }, want: ErrInvalidProof, msg: "private key material"},
		{name: "private member in upper case", edit: func(p *proof) { p.header["jwk"] = privJWK(keyA, true) }, want: ErrInvalidProof, msg: "private key material"},
		{name: "private RSA key in the header", edit: func(p *proof) {
			p.header["alg"], p.header["jwk"], p.method, p.key = "RS256", privJWK(keyRSA, false), jwt.SigningMethodRS256, keyRSA
		}, want: ErrInvalidProof},
		{name: "symmetric jwk", edit: func(p *proof) {
			p.header["jwk"] = map[string]any{"kty": "oct", "k": "c2VjcmV0"}
		}, want: ErrInvalidProof},
		{name: "RSA under 2048 bits", edit: func(p *proof) {
			p.header["alg"], p.header["jwk"], p.method, p.key = "RS256", jwkOf(t, keyRSA1k.Public()), jwt.SigningMethodRS256, keyRSA1k
		}, want: ErrInvalidProof},
		{name: "RSA exponent 3", edit: func(p *proof) {
			p.header["alg"], p.header["jwk"], p.method, p.key = "RS256", rsaE3, jwt.SigningMethodRS256, keyRSA
		}, want: ErrInvalidProof},
		{name: "alg for another curve", edit: func(p *proof) {
			p.header["jwk"], p.method, p.key = jwkOf(t, keyP384.Public()), jwt.SigningMethodES384, keyP384
		}, want: ErrInvalidProof},
		{name: "RSA alg with an EC key", edit: func(p *proof) { p.header["alg"], p.method, p.key = "RS256", jwt.SigningMethodRS256, keyRSA }, want: ErrInvalidProof},
		{name: "ES256 alg with an RSA key", edit: func(p *proof) {
			p.header["jwk"] = jwkOf(t, keyRSA.Public())
		}, want: ErrInvalidProof, msg: "does not fit"},
		{name: "ES256 alg with an Ed25519 key", edit: func(p *proof) {
			p.header["jwk"] = jwkOf(t, keyEd.Public())
		}, want: ErrInvalidProof, msg: "does not fit"},
		{name: "EdDSA alg with an EC key", edit: func(p *proof) { p.header["alg"], p.method, p.key = "EdDSA", jwt.SigningMethodEdDSA, keyEd }, want: ErrInvalidProof},
		// Step 7: the signature, by the header's key.
		{name: "signed by another key", edit: func(p *proof) { p.key = keyB }, want: ErrInvalidProof},
		{name: "payload changed after signing", raw: func() string {
			s := goodProof(t).sign(t)
			parts := strings.Split(s, ".")
			c := map[string]any{"jti": "jti-1", "htm": "POST", "htu": testURL, "iat": clock.Unix(), "ath": TokenHash(testToken)}
			b, _ := json.Marshal(c)
			parts[1] = base64.RawURLEncoding.EncodeToString(b)
			return strings.Join(parts, ".")
		}, req: func(r *Request) { r.Method = "POST" }, want: ErrInvalidProof},
		{name: "PSS with a salt other than the hash length", raw: func() string {
			h := map[string]any{"typ": "dpop+jwt", "alg": "PS256", "jwk": jwkOf(t, keyRSA.Public())}
			hb, _ := json.Marshal(h)
			cb, _ := json.Marshal(goodProof(t).claims)
			auto := &jwt.SigningMethodRSAPSS{SigningMethodRSA: jwt.SigningMethodPS256.SigningMethodRSA, Options: &rsa.PSSOptions{SaltLength: 20}}
			return rawJWS(t, string(hb), string(cb), keyRSA, auto)
		}, want: ErrInvalidProof},
		// Step 5 again: the claims a proof must carry.
		{name: "no jti", edit: func(p *proof) { delete(p.claims, "jti") }, want: ErrInvalidProof},
		{name: "no htm", edit: func(p *proof) { delete(p.claims, "htm") }, want: ErrInvalidProof},
		{name: "no htu", edit: func(p *proof) { delete(p.claims, "htu") }, want: ErrInvalidProof},
		{name: "no iat", edit: func(p *proof) { delete(p.claims, "iat") }, want: ErrInvalidProof},
		{name: "jti over 256 bytes", edit: func(p *proof) { p.claims["jti"] = strings.Repeat("j", 257) }, want: ErrInvalidProof},
		// Step 8: htm.
		{name: "htm of another method", edit: func(p *proof) { p.claims["htm"] = "POST" }, want: ErrInvalidProof},
		{name: "htm in lower case", edit: func(p *proof) { p.claims["htm"] = "get" }, want: ErrInvalidProof},
		// Step 9: htu.
		{name: "htu of another path", edit: func(p *proof) { p.claims["htu"] = "https://api.example.com/users" }, want: ErrInvalidProof},
		{name: "htu of another host", edit: func(p *proof) { p.claims["htu"] = "https://evil.example.com/books" }, want: ErrInvalidProof},
		{name: "htu of another scheme", edit: func(p *proof) { p.claims["htu"] = "http://api.example.com/books" }, want: ErrInvalidProof},
		{name: "htu of another port", edit: func(p *proof) { p.claims["htu"] = "https://api.example.com:8443/books" }, want: ErrInvalidProof},
		{name: "htu with a trailing slash", edit: func(p *proof) { p.claims["htu"] = testURL + "/" }, want: ErrInvalidProof},
		{name: "htu with an encoded slash", edit: func(p *proof) { p.claims["htu"] = "https://api.example.com/%2Fbooks" }, want: ErrInvalidProof},
		{name: "htu relative", edit: func(p *proof) { p.claims["htu"] = "/books" }, want: ErrInvalidProof},
		{name: "htu with user info", edit: func(p *proof) { p.claims["htu"] = "https://user@api.example.com/books" }, want: ErrInvalidProof},
		// Step 10: the server's nonce.
		{name: "no nonce when nonces are on", cfg: func(c *Config) { c.Nonces = testNonce }, want: ErrUseNonce},
		{name: "forged nonce", cfg: func(c *Config) { c.Nonces = testNonce }, edit: func(p *proof) {
			other, _ := NewNonces([]byte(strings.Repeat("o", 32)), time.Minute, func() time.Time { return clock })
			p.claims["nonce"] = other.Current()
		}, want: ErrUseNonce},
		{name: "nonce two periods old", cfg: func(c *Config) { c.Nonces = testNonce }, edit: func(p *proof) {
			old, _ := NewNonces([]byte(strings.Repeat("s", 32)), time.Minute, func() time.Time { return clock.Add(-2 * time.Minute) })
			p.claims["nonce"] = old.Current()
		}, want: ErrUseNonce},
		// Step 11: iat within the window.
		{name: "iat too old", edit: func(p *proof) { p.claims["iat"] = clock.Add(-DefaultMaxAge - time.Second).Unix() }, want: ErrInvalidProof},
		{name: "iat too far ahead", edit: func(p *proof) { p.claims["iat"] = clock.Add(DefaultMaxFuture + time.Second).Unix() }, want: ErrInvalidProof},
		// Step 12: ath.
		{name: "no ath with an access token", edit: func(p *proof) { delete(p.claims, "ath") }, want: ErrTokenHash},
		{name: "ath of another token", edit: func(p *proof) { p.claims["ath"] = TokenHash("another.access.token") }, want: ErrTokenHash},
		{name: "ath not base64url of the hash", edit: func(p *proof) {
			h := sha256.Sum256([]byte(testToken))
			p.claims["ath"] = base64.StdEncoding.EncodeToString(h[:])
		}, want: ErrTokenHash},
		{name: "ath at a token endpoint", req: func(r *Request) { r.AccessToken = "" }, want: ErrInvalidProof},
		// §7.1: the key the token is bound to.
		{name: "key is not the token's", req: func(r *Request) { r.JKT = jktB }, want: ErrKeyMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newVerifier(t, c.cfg)
			var s string
			if c.raw != nil {
				s = c.raw()
			} else {
				p := goodProof(t)
				if c.edit != nil {
					c.edit(p)
				}
				s = p.sign(t)
			}
			req := goodRequest()
			if c.req != nil {
				c.req(&req)
			}
			_, err := v.Verify(context.Background(), s, req)
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify(%s) = %v, want %v", c.name, err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("Verify(%s) = %v, want it to say %q", c.name, err, c.msg)
			}
		})
	}
}

// TestReplay: a proof is accepted once; a refused proof does not use up
// its jti; the same jti under another key is another proof.
func TestReplay(t *testing.T) {
	v := newVerifier(t, nil)
	ctx := context.Background()
	p := goodProof(t)
	first := p.sign(t)
	if _, err := v.Verify(ctx, first, goodRequest()); err != nil {
		t.Fatalf("Verify(first use) = %v, want accepted", err)
	}
	if _, err := v.Verify(ctx, first, goodRequest()); !errors.Is(err, ErrReplayed) {
		t.Fatalf("Verify(replay) = %v, want %v", err, ErrReplayed)
	}

	bad := goodProof(t)
	bad.claims["jti"], bad.claims["htm"] = "jti-2", "POST"
	if _, err := v.Verify(ctx, bad.sign(t), goodRequest()); err == nil || errors.Is(err, ErrReplayed) {
		t.Fatalf("Verify(wrong method) = %v, want a refusal that is not a replay", err)
	}
	good := goodProof(t)
	good.claims["jti"] = "jti-2"
	if _, err := v.Verify(ctx, good.sign(t), goodRequest()); err != nil {
		t.Fatalf("Verify(jti of a refused proof) = %v, want accepted", err)
	}

	other := goodProof(t)
	other.header["jwk"], other.key = jwkOf(t, keyB.Public()), keyB
	if _, err := v.Verify(ctx, other.sign(t), goodRequest()); err != nil {
		t.Fatalf("Verify(same jti, another key) = %v, want accepted", err)
	}
}

func TestReplayStoreDown(t *testing.T) {
	v := newVerifier(t, func(c *Config) { c.Replay = failingStore{} })
	_, err := v.Verify(context.Background(), goodProof(t).sign(t), goodRequest())
	if !errors.Is(err, ErrReplayStore) || errors.Is(err, ErrInvalidProof) {
		t.Fatalf("Verify(store down) = %v, want %v and not %v", err, ErrReplayStore, ErrInvalidProof)
	}
}

type failingStore struct{}

func (failingStore) Claim(context.Context, [32]byte, time.Time) (bool, error) {
	return false, errors.New("connection refused")
}

func TestMemoryReplay(t *testing.T) {
	ctx := context.Background()
	key := func(i int) [32]byte {
		var k [32]byte
		big.NewInt(int64(i)).FillBytes(k[:])
		return sha256.Sum256(k[:])
	}
	t.Run("expired entries are forgotten", func(t *testing.T) {
		m := NewMemoryReplay(1 << 10)
		if ok, _ := m.Claim(ctx, key(1), time.Now().Add(-time.Second)); !ok {
			t.Fatal("Claim(new) = false, want true")
		}
		if ok, _ := m.Claim(ctx, key(1), time.Now().Add(time.Minute)); !ok {
			t.Fatal("Claim(expired key) = false, want true")
		}
		if ok, _ := m.Claim(ctx, key(1), time.Now().Add(time.Minute)); ok {
			t.Fatal("Claim(live key) = true, want false")
		}
	})
	t.Run("full store refuses rather than forgets", func(t *testing.T) {
		m := NewMemoryReplay(replayShards) // one entry a shard
		var full error
		for i := 0; i < 4*replayShards && full == nil; i++ {
			_, full = m.Claim(ctx, key(i), time.Now().Add(time.Minute))
		}
		if !errors.Is(full, ErrReplayFull) {
			t.Fatalf("Claim(past capacity) = %v, want %v", full, ErrReplayFull)
		}
		if n := m.Len(); n > replayShards {
			t.Fatalf("Len() = %d, want at most %d", n, replayShards)
		}
	})
	t.Run("racing claims: exactly one wins", func(t *testing.T) {
		m := NewMemoryReplay(1 << 10)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if ok, _ := m.Claim(ctx, key(7), time.Now().Add(time.Minute)); ok {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("16 racing Claims won %d times, want 1", wins.Load())
		}
	})
}

func TestNormalizeURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"https://api.example.com/books", "https://api.example.com/books"},
		{"HTTPS://API.EXAMPLE.COM/books", "https://api.example.com/books"},
		{"https://api.example.com:443/books", "https://api.example.com/books"},
		{"http://api.example.com:80/books", "http://api.example.com/books"},
		{"http://api.example.com:443/books", "http://api.example.com:443/books"},
		{"https://api.example.com", "https://api.example.com/"},
		{"https://api.example.com/books?x=1#y", "https://api.example.com/books"},
		{"https://api.example.com/a/./b/../c", "https://api.example.com/a/c"},
		{"https://api.example.com/a/b/.", "https://api.example.com/a/b/"},
		{"https://api.example.com/%7euser/%2f", "https://api.example.com/~user/%2F"},
		{"https://api.example.com/Books", "https://api.example.com/Books"},
		{"https://[::1]:8080/x", "https://[::1]:8080/x"},
	}
	for _, c := range cases {
		got, err := NormalizeURL(c.in)
		if err != nil || got != c.want {
			t.Errorf("NormalizeURL(%q) = %q, %v, want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "/books", "ftp://x/y", "https://", "https://u:p@x/y", "mailto:a@b"} {
		if got, err := NormalizeURL(bad); err == nil {
			t.Errorf("NormalizeURL(%q) = %q, want an error", bad, got)
		}
	}
}

func TestNonces(t *testing.T) {
	now := clock
	n, err := NewNonces([]byte(strings.Repeat("s", 32)), time.Minute, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	cur := n.Current()
	replica, _ := NewNonces([]byte(strings.Repeat("s", 32)), time.Minute, func() time.Time { return now })
	if !replica.Valid(cur) {
		t.Error("a replica with the same secret refuses the current nonce")
	}
	now = now.Add(time.Minute)
	if !n.Valid(cur) || n.Current() == cur {
		t.Errorf("one period on: Valid(old) = %v, Current changed = %v, want true, true", n.Valid(cur), n.Current() != cur)
	}
	now = now.Add(time.Minute)
	if n.Valid(cur) {
		t.Error("two periods on: the old nonce is still valid")
	}
	for _, bad := range []string{"", "x", base64.RawURLEncoding.EncodeToString(make([]byte, 24))} {
		if n.Valid(bad) {
			t.Errorf("Valid(%q) = true, want false", bad)
		}
	}
	if _, err := NewNonces([]byte("short"), time.Minute, nil); err == nil {
		t.Error("NewNonces(short secret) = nil error, want one")
	}
}

func TestNewVerifierRefuses(t *testing.T) {
	for name, edit := range map[string]func(*Config){
		"no algorithms":   func(c *Config) { c.Algorithms = nil },
		"HS256":           func(c *Config) { c.Algorithms = []string{"HS256"} },
		"none":            func(c *Config) { c.Algorithms = []string{"none"} },
		"zero max age":    func(c *Config) { c.MaxAge = 0 },
		"negative future": func(c *Config) { c.MaxFuture = -time.Second },
		"no replay store": func(c *Config) { c.Replay = nil },
	} {
		cfg := DefaultConfig()
		edit(&cfg)
		if _, err := NewVerifier(cfg); err == nil {
			t.Errorf("NewVerifier(%s) = nil error, want one", name)
		}
	}
}

// TestSigner: the client side makes proofs the verifier accepts, with
// every key type it supports.
func TestSigner(t *testing.T) {
	keys(t)
	for _, k := range []crypto.Signer{keyA, keyP384, keyRSA, keyEd} {
		s, err := NewSigner(k)
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.Proof("POST", "https://issuer.example.com/token", ProofOptions{Nonce: testNonce.Current()})
		if err != nil {
			t.Fatal(err)
		}
		v := newVerifier(t, func(c *Config) { c.Nonces = testNonce; c.Now = time.Now })
		got, err := v.Verify(context.Background(), p, Request{Method: "POST", URL: "https://issuer.example.com/token", JKT: s.JKT()})
		if err != nil || got.JKT != s.JKT() {
			t.Fatalf("Verify(%s proof) = %v, %v, want accepted with jkt %s", s.Alg(), got, err, s.JKT())
		}
	}
}

// TestReadNonceSecret: the issuer and authz read the chart's one secret
// file alike: a trailing newline is not part of it, and under 32 bytes
// is refused.
func TestReadNonceSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := strings.Repeat("k", 32)
	if got, err := ReadNonceSecret(write("ok", key+"\r\n")); err != nil || string(got) != key {
		t.Errorf("ReadNonceSecret(32 bytes and a newline) = %q, %v, want the 32 bytes", got, err)
	}
	if _, err := ReadNonceSecret(write("short", strings.Repeat("k", 31)+"\n")); err == nil || !strings.Contains(err.Error(), "at least 32 bytes") {
		t.Errorf("ReadNonceSecret(31 bytes) = %v, want an error about its length", err)
	}
	if _, err := ReadNonceSecret(dir + "/missing"); err == nil {
		t.Error("ReadNonceSecret(missing file) = nil error, want one")
	}
}
