package dpop

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/pgtest"
)

// TestSQLReplay: two replicas on one PostgreSQL database refuse each
// other's proofs, exactly one of racing replicas accepts a proof, and an
// expired entry no longer counts.
func TestSQLReplay(t *testing.T) {
	dsn := pgtest.URL(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a, err := OpenSQLReplay(ctx, dsn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenSQLReplay(ctx, dsn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	va := newVerifier(t, func(c *Config) { c.Replay = a })
	vb := newVerifier(t, func(c *Config) { c.Replay = b })
	p := goodProof(t).sign(t)
	if _, err := va.Verify(ctx, p, goodRequest()); err != nil {
		t.Fatalf("replica A: Verify(first use) = %v, want accepted", err)
	}
	if _, err := vb.Verify(ctx, p, goodRequest()); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replica B: Verify(proof A accepted) = %v, want %v", err, ErrReplayed)
	}

	key := sha256.Sum256([]byte("race"))
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			ok, err := s.Claim(ctx, key, time.Now().Add(time.Minute))
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("16 racing Claims on two replicas won %d times, want 1", wins.Load())
	}

	old := sha256.Sum256([]byte("expired"))
	if ok, err := a.Claim(ctx, old, time.Now().Add(-time.Second)); !ok || err != nil {
		t.Fatalf("Claim(new) = %v, %v, want true", ok, err)
	}
	if ok, err := b.Claim(ctx, old, time.Now().Add(time.Minute)); !ok || err != nil {
		t.Fatalf("Claim(expired key) = %v, %v, want true", ok, err)
	}
	if ok, err := a.Claim(ctx, old, time.Now().Add(time.Minute)); ok || err != nil {
		t.Fatalf("Claim(live key) = %v, %v, want false", ok, err)
	}
	if _, err := OpenSQLReplay(ctx, "/tmp/replay.db", time.Hour); err == nil {
		t.Error("OpenSQLReplay(SQLite path) = nil error, want one")
	}
}
