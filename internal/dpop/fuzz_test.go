package dpop

import (
	"context"
	"testing"
)

// FuzzVerify: no proof, however malformed, panics the verifier or is
// accepted for a request it was not made for.
func FuzzVerify(f *testing.F) {
	good := goodProof(f).sign(f)
	f.Add(good)
	f.Add(good + "," + good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	v := newVerifier(f, nil)
	f.Fuzz(func(t *testing.T, proof string) {
		req := goodRequest()
		req.Method = "DELETE" // no seed is for DELETE
		if _, err := v.Verify(context.Background(), proof, req); err == nil {
			t.Fatalf("Verify(%q) for DELETE accepted a proof the fuzzer made", proof)
		}
	})
}

// FuzzNormalizeURL: normalising is idempotent, so two spellings that
// normalise alike compare alike however often they are normalised.
func FuzzNormalizeURL(f *testing.F) {
	for _, s := range []string{"https://a.example/b", "HTTP://A:80/./x/../%7e%2f", "https://[::1]:443/", "http://x/a/b/..", "https://x/%2e%2E/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := NormalizeURL(raw)
		if err != nil {
			return
		}
		again, err := NormalizeURL(n)
		if err != nil || again != n {
			t.Fatalf("NormalizeURL(%q) = %q, and again %q, %v", raw, n, again, err)
		}
	})
}
