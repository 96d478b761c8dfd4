package dpop

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ReplayStore remembers the proofs a server has accepted.
type ReplayStore interface {
	// Claim records key until until and reports whether it was new: true
	// exactly once for a key, however many callers race, until it
	// expires.
	Claim(ctx context.Context, key [32]byte, until time.Time) (bool, error)
}

// DefaultReplayCapacity bounds the in-memory store: at 10,000 proofs a
// second and a 65-second window it holds 650,000, about 50 MB.
const DefaultReplayCapacity = 1 << 20

// ErrReplayFull means the in-memory store holds its capacity of unexpired
// proofs: the server refuses new ones rather than forget a live one.
var ErrReplayFull = errors.New("replay store is full")

const replayShards = 32

// MemoryReplay is a bounded in-memory ReplayStore for one process. Each
// shard keeps its entries in arrival order; as every entry's expiry is
// arrival plus the same window, the oldest expire first and are dropped
// from the front on each Claim.
type MemoryReplay struct {
	shards [replayShards]replayShard
	max    int // per shard
}

type replayShard struct {
	mu    sync.Mutex
	seen  map[[16]byte]int64 // key -> expiry, unix nanoseconds
	order []replayEntry      // arrival order
	head  int
}

type replayEntry struct {
	key   [16]byte
	until int64
}

// NewMemoryReplay returns a store for at most capacity live proofs.
func NewMemoryReplay(capacity int) *MemoryReplay {
	m := &MemoryReplay{max: max(1, capacity/replayShards)}
	for i := range m.shards {
		m.shards[i].seen = map[[16]byte]int64{}
	}
	return m
}

// Claim implements ReplayStore.
func (m *MemoryReplay) Claim(_ context.Context, key [32]byte, until time.Time) (bool, error) {
	var k [16]byte
	copy(k[:], key[:16])
	s := &m.shards[key[16]%replayShards]
	now := time.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.head < len(s.order) && s.order[s.head].until <= now {
		e := s.order[s.head]
		if s.seen[e.key] == e.until {
			delete(s.seen, e.key)
		}
		s.head++
	}
	if s.head > len(s.order)/2 && s.head > 64 {
		s.order = append(s.order[:0], s.order[s.head:]...)
		s.head = 0
	}
	if exp, ok := s.seen[k]; ok && exp > now {
		return false, nil
	}
	if len(s.seen) >= m.max {
		return false, ErrReplayFull
	}
	u := until.UnixNano()
	s.seen[k] = u
	s.order = append(s.order, replayEntry{k, u})
	return true, nil
}

// Len is the number of proofs remembered, for tests and metrics.
func (m *MemoryReplay) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.seen)
		s.mu.Unlock()
	}
	return n
}
