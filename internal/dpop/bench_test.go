package dpop

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// BenchmarkVerify is the cost a DPoP-bound request adds at authz: one
// proof, new each time, verified and recorded.
func BenchmarkVerify(b *testing.B) {
	keys(b)
	s, err := NewSigner(keyA)
	if err != nil {
		b.Fatal(err)
	}
	proofs := make([]string, b.N)
	for i := range proofs {
		proofs[i], _ = s.Proof("GET", testURL, ProofOptions{AccessToken: testToken, JTI: strconv.Itoa(i)})
	}
	v := newVerifier(b, func(c *Config) { c.Now = time.Now })
	req := goodRequest()
	req.JKT = s.JKT()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := v.Verify(ctx, proofs[i], req); err != nil {
			b.Fatal(err)
		}
	}
}
