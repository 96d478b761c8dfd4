package authz

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/dpop"
)

// benchServer is a ready Server for keys, logging each decision as JSON
// to io.Discard, so the log line's cost is in the figures.
func benchServer(b *testing.B, cacheSize int, keys ...*testKey) *Server {
	b.Helper()
	jw := newJWKSServer(b, keys...)
	srv, err := New(context.Background(), testConfig(Config{
		Issuer: testIssuer, JWKSURL: jw.jwksURL(), CacheSize: cacheSize,
		MinRefresh: time.Hour, MaxRefresh: time.Hour, RefetchInterval: time.Hour,
	}), slog.New(slog.NewJSONHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	waitFor(b, "ready", func() bool { return srv.Ready(context.Background()) == nil })
	return srv
}

func benchCheck(b *testing.B, srv *Server, req *authv3.CheckRequest, wantOK bool) {
	b.Helper()
	ctx := context.Background()
	resp, _ := srv.Check(ctx, req)
	if (resp.GetOkResponse() != nil) != wantOK {
		b.Fatalf("Check = %v, want OK %v", resp, wantOK)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		srv.Check(ctx, req)
	}
}

// BenchmarkCheck measures one Check decision in process (no gRPC): the
// cached path, full verification per algorithm with the cache off, and
// denials.
func BenchmarkCheck(b *testing.B) {
	es := newTestKey(b, "ES256", "main")
	b.Run("cached", func(b *testing.B) {
		srv := benchServer(b, DefaultCacheSize, es)
		benchCheck(b, srv, envoyRequest("GET", "/books", bearer(es.sign(b, claimsFor("u-1", "user"), nil)), nil), true)
	})
	b.Run("cached/10-issuers-cel", func(b *testing.B) {
		// Ten trusted issuers, and a route whose policy is a CEL
		// expression: routing by iss and the expression are all the
		// cached path adds.
		jw := newJWKSServer(b, es)
		issuers := []IssuerConfig{}
		for i := range 10 {
			iss := fmt.Sprintf("https://issuer-%d.test", i)
			if i == 9 {
				iss = testIssuer
			}
			issuers = append(issuers, IssuerConfig{Name: fmt.Sprint("i", i), Issuer: iss, JWKSURL: jw.jwksURL(), Audiences: []string{testAudience}})
		}
		srv, err := New(context.Background(), testConfig(Config{
			Issuers: issuers, CacheSize: DefaultCacheSize, MinRefresh: time.Hour, MaxRefresh: time.Hour, RefetchInterval: time.Hour,
			Routes: []RouteConfig{{Match: RouteMatch{PathPrefix: "/books"}, PolicyConfig: PolicyConfig{CEL: "'user' in roles || request.method == 'GET'"}}},
		}), slog.New(slog.NewJSONHandler(io.Discard, nil)), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { srv.Close() })
		waitFor(b, "ready", func() bool { return srv.Ready(context.Background()) == nil })
		benchCheck(b, srv, envoyRequest("POST", "/books", bearer(es.sign(b, claimsFor("u-1", "user"), nil)), nil), true)
	})
	b.Run("cached-parallel", func(b *testing.B) {
		srv := benchServer(b, DefaultCacheSize, es)
		req := envoyRequest("GET", "/books", bearer(es.sign(b, claimsFor("u-1", "user"), nil)), nil)
		ctx := context.Background()
		srv.Check(ctx, req)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				srv.Check(ctx, req)
			}
		})
	})
	b.Run("cached/dpop", func(b *testing.B) {
		// A bound token from the cache, and a fresh proof per check,
		// signed ahead of the timer: one ES256 verify per check.
		srv := benchServer(b, DefaultCacheSize, es)
		key := dpopKey(b)
		tok := es.sign(b, boundClaims(key, "u-1", "user"), nil)
		reqs := make([]*authv3.CheckRequest, b.N+1)
		for i := range reqs {
			reqs[i] = envoyRequest("GET", "/books", dpopHeaders(tok, proof(b, key, "GET", "http://books.example/books", tok, dpop.ProofOptions{})), nil)
		}
		ctx := context.Background()
		if resp, _ := srv.Check(ctx, reqs[b.N]); resp.GetOkResponse() == nil {
			b.Fatalf("Check = %v, want OK", resp)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			srv.Check(ctx, reqs[i])
		}
	})
	for _, alg := range []string{"ES256", "RS256", "EdDSA"} {
		b.Run("uncached/"+alg, func(b *testing.B) {
			k := newTestKey(b, alg, "main")
			srv := benchServer(b, 0, k)
			benchCheck(b, srv, envoyRequest("GET", "/books", bearer(k.sign(b, claimsFor("u-1", "user"), nil)), nil), true)
		})
	}
	b.Run("deny/no_token", func(b *testing.B) {
		srv := benchServer(b, DefaultCacheSize, es)
		benchCheck(b, srv, envoyRequest("GET", "/books", nil, nil), false)
	})
	b.Run("deny/malformed", func(b *testing.B) {
		srv := benchServer(b, DefaultCacheSize, es)
		benchCheck(b, srv, envoyRequest("GET", "/books", bearer("not.a-token"), nil), false)
	})
	b.Run("deny/bad_signature", func(b *testing.B) {
		srv := benchServer(b, DefaultCacheSize, es)
		tok := es.sign(b, claimsFor("u-1", "user"), nil)
		other := es.sign(b, claimsFor("u-2", "user"), nil)
		h, p, _ := parts(tok)
		_, _, s := parts(other)
		benchCheck(b, srv, envoyRequest("GET", "/books", bearer(h+"."+p+"."+s), nil), false)
	})
	b.Run("deny/missing_role", func(b *testing.B) {
		srv := benchServer(b, DefaultCacheSize, es)
		benchCheck(b, srv, envoyRequest("GET", "/users", bearer(es.sign(b, claimsFor("u-1", "user"), nil)), map[string]string{"require": "admin"}), false)
	})
}
