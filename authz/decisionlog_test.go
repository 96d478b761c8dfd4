package authz

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// blockingHandler blocks every Handle until release is closed.
type blockingHandler struct {
	release chan struct{}
	slog.Handler
}

func (h blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	<-h.release
	return nil
}
func (h blockingHandler) WithAttrs(as []slog.Attr) slog.Handler { return h }

// TestDecisionLogSampling pins what is logged: every denial always, and
// one allow in LogAllowSample (none at 0), with the buffer on or off.
func TestDecisionLogSampling(t *testing.T) {
	key := newTestKey(t, "ES256", "main")
	cases := []struct {
		name             string
		buffer, sample   int
		allows, denies   int
		wantLogged       int
		wantAllowsLogged int
	}{
		{"sync, every allow", 0, 1, 6, 2, 8, 6},
		{"async, every allow", 64, 1, 6, 2, 8, 6},
		{"async, one allow in 3", 64, 3, 6, 2, 4, 2},
		{"sync, no allows", 0, 0, 6, 2, 2, 0},
		{"async, no allows, denials still logged", 64, 0, 6, 4, 4, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, Config{LogBuffer: tc.buffer}, key)
			e.srv.cfg.LogAllowSample = tc.sample // testConfig would turn a 0 into 1
			e.waitReady()
			tok := key.sign(t, claimsFor("user-1"), nil)
			for range tc.allows {
				e.check(envoyRequest("GET", "/books", bearer(tok), nil))
			}
			for range tc.denies {
				e.check(envoyRequest("GET", "/books", nil, nil))
			}
			e.srv.Close() // writes what is buffered
			got, allows := 0, 0
			for _, c := range e.logs.checks() {
				got++
				if c["decision"] == "allow" {
					allows++
				}
			}
			if got != tc.wantLogged || allows != tc.wantAllowsLogged {
				t.Errorf("decision log(%s) = %d lines, %d allows; want %d, %d", tc.name, got, allows, tc.wantLogged, tc.wantAllowsLogged)
			}
		})
	}
}

// TestDecisionLogNeverBlocks pins that a stuck log writer never holds
// up a check: lines beyond the buffer are dropped and counted.
func TestDecisionLogNeverBlocks(t *testing.T) {
	key := newTestKey(t, "ES256", "main")
	jw := newJWKSServer(t, key)
	release := make(chan struct{})
	reg := prometheus.NewRegistry()
	srv, err := New(context.Background(), testConfig(Config{
		Issuer: testIssuer, JWKSURL: jw.jwksURL(), LogBuffer: 4, LogAllowSample: 1, CacheSize: 10,
	}), slog.New(blockingHandler{release, slog.NewJSONHandler(io.Discard, nil)}), reg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ready", func() bool { return srv.Ready(context.Background()) == nil })
	req := envoyRequest("GET", "/books", bearer(key.sign(t, claimsFor("user-1"), nil)), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			srv.Check(context.Background(), req)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("200 checks against a stuck log writer did not finish in 10s; a check must never wait for its log line")
	}
	if got := counterValue(t, reg, "tollgate_authz_decision_logs_dropped_total", "", ""); got < 190 {
		t.Errorf("tollgate_authz_decision_logs_dropped_total = %v after 200 checks into a 4-line buffer, want >= 190", got)
	}
	close(release)
	srv.Close()
}

// BenchmarkDecisionLog puts the decision log's cost side by side: off
// (level warn), written in the check (sync), buffered (async), and
// buffered with one allow in 100 logged, each to a real file so the
// write is a real system call. Cached allows, in parallel.
func BenchmarkDecisionLog(b *testing.B) {
	key := newTestKey(b, "ES256", "main")
	for _, bc := range []struct {
		name           string
		level          slog.Level
		buffer, sample int
	}{
		{"off", slog.LevelWarn, 0, 1},
		{"sync", slog.LevelInfo, 0, 1},
		{"async", slog.LevelInfo, DefaultLogBuffer, 1},
		{"async-sample-100", slog.LevelInfo, DefaultLogBuffer, 100},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			jw := newJWKSServer(b, key)
			srv, err := New(context.Background(), testConfig(Config{
				Issuer: testIssuer, JWKSURL: jw.jwksURL(), CacheSize: DefaultCacheSize,
				LogBuffer: bc.buffer, LogAllowSample: bc.sample,
			}), slog.New(slog.NewJSONHandler(&lockedWriter{w: f}, &slog.HandlerOptions{Level: bc.level})), prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			waitFor(b, "ready", func() bool { return srv.Ready(context.Background()) == nil })
			req := envoyRequest("GET", "/books", bearer(key.sign(b, claimsFor("u-1", "user"), nil)), nil)
			ctx := context.Background()
			srv.Check(ctx, req)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					srv.Check(ctx, req)
				}
			})
		})
	}
}

// lockedWriter is an os.File behind a mutex, as os.Stderr is behind
// slog's handler lock.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
