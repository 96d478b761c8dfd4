package authz

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// liveRevocations is the list size the performance figures are for.
const liveRevocations = 100_000

// bigFeed is a feed server holding n revoked jtis (UUIDs, as the issuer
// makes them) and n/10 revoked subjects.
func bigFeed(tb testing.TB, n int) *feedServer {
	f := newFeedServer(tb)
	exp := time.Now().Add(time.Hour).Unix()
	for i := range n {
		f.version++
		f.tokens = append(f.tokens, feedEntry{f.version, uuid.NewString(), exp, 0})
		if i%10 == 0 {
			f.subjects = append(f.subjects, feedEntry{f.version, uuid.NewString(), time.Now().Unix(), exp})
		}
	}
	return f
}

// revocationBenchServer is benchServer following feed.
func revocationBenchServer(b *testing.B, feed *feedServer, keys ...*testKey) *Server {
	b.Helper()
	jw := newJWKSServer(b, keys...)
	srv, err := New(context.Background(), testConfig(Config{
		Issuer: testIssuer, JWKSURL: jw.jwksURL(), CacheSize: DefaultCacheSize,
		MinRefresh: time.Hour, MaxRefresh: time.Hour, RefetchInterval: time.Hour,
		RevocationsURL: feed.URL, RevocationsInterval: time.Hour, RevocationsMaxAge: time.Hour, RevocationsStale: StaleServe,
	}), slog.New(slog.NewJSONHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	waitFor(b, "ready", func() bool { return srv.Ready(context.Background()) == nil })
	waitFor(b, "revocations loaded", func() bool { _, ok := srv.revocations.age(); return ok })
	return srv
}

// BenchmarkCheckRevocations sets the cached Check path beside the same
// path with 100,000 live revocations loaded (go test -bench
// CheckRevocations ./authz/): the deny list is looked up on every check,
// after the cache.
func BenchmarkCheckRevocations(b *testing.B) {
	es := newTestKey(b, "ES256", "main")
	req := envoyRequest("GET", "/books", bearer(es.sign(b, claimsFor("u-1", "user"), nil)), nil)
	b.Run("cached/no-feed", func(b *testing.B) {
		benchCheck(b, benchServer(b, DefaultCacheSize, es), req, true)
	})
	b.Run("cached/100k-revocations", func(b *testing.B) {
		srv := revocationBenchServer(b, bigFeed(b, liveRevocations), es)
		if n := len(srv.revocations.set().tokens); n != liveRevocations {
			b.Fatalf("%d revocations loaded, want %d", n, liveRevocations)
		}
		benchCheck(b, srv, req, true)
	})
}

// TestRevocationListMemory measures the heap a deny list of 100,000
// revoked tokens (and 10,000 revoked subjects) takes, as a full feed
// answer leaves it, and holds it under 30 MB.
func TestRevocationListMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 100,000-entry list")
	}
	feed := bigFeed(t, liveRevocations)
	r := newRevocations(testConfig(Config{Issuer: testIssuer, RevocationsURL: feed.URL, HTTPClient: feed.Client()}), slog.New(slog.DiscardHandler), newMetrics(prometheus.NewRegistry(), func() int { return 0 }, func() (float64, int, int) { return 0, 0, 0 }), time.Now)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r.fetch(context.Background())
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := len(r.set().tokens); n != liveRevocations {
		t.Fatalf("%d revocations loaded, want %d", n, liveRevocations)
	}
	mb := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	t.Logf("deny list of %d tokens and %d subjects: %.1f MB of heap", len(r.set().tokens), len(r.set().subjects), mb)
	if mb > 30 {
		t.Errorf("deny list of %d revocations takes %.1f MB, want under 30 MB", liveRevocations, mb)
	}
	runtime.KeepAlive(r)
}

// BenchmarkRevokedLookup is the deny-list lookup alone, the whole of what
// revocations add to a cached check: one jti lookup and one subject
// lookup in a list of 100,000 tokens and 10,000 subjects.
func BenchmarkRevokedLookup(b *testing.B) {
	feed := bigFeed(b, liveRevocations)
	r := newRevocations(testConfig(Config{Issuer: testIssuer, RevocationsURL: feed.URL, HTTPClient: feed.Client()}), slog.New(slog.DiscardHandler), newMetrics(prometheus.NewRegistry(), func() int { return 0 }, func() (float64, int, int) { return 0, 0, 0 }), time.Now)
	r.fetch(context.Background())
	id := &identity{sub: uuid.NewString(), jti: uuid.NewString(), iat: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if r.set().revoked(testIssuer, id) {
			b.Fatal("revoked")
		}
	}
}
