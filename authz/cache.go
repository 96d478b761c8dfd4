package authz

import (
	"crypto/sha256"
	"sync"
	"time"
)

// cacheShards is the number of independently locked parts of a large
// cache, so concurrent checks rarely wait for each other.
const cacheShards = 16

// tokenCache remembers tokens that verified, keyed by the SHA-256 of the
// token (the token itself is never stored), so a client that sends the
// same token again costs a hash and a map lookup instead of a signature
// verification. It is bounded (least recently used entries go first), an
// entry never outlives its token's exp, and an entry is only valid while
// its issuer is configured as it was (trustedIssuer.live) and the key
// that verified it is still in that issuer's current key set.
type tokenCache struct {
	shards   []cacheShard
	perShard int
}

type cacheShard struct {
	mu         sync.Mutex
	m          map[[sha256.Size]byte]*cacheEntry
	head, tail *cacheEntry // most and least recently used
}

type cacheEntry struct {
	hash       [sha256.Size]byte
	id         *identity
	key        *verifyKey
	exp        int64 // unix nanoseconds; the entry is dead from then on
	prev, next *cacheEntry
}

// newTokenCache returns a cache of about size entries (rounded up to a
// multiple of the shard count), or nil when size is 0.
func newTokenCache(size int) *tokenCache {
	if size <= 0 {
		return nil
	}
	n := 1
	if size >= 64*cacheShards {
		n = cacheShards
	}
	c := &tokenCache{shards: make([]cacheShard, n), perShard: (size + n - 1) / n}
	for i := range c.shards {
		c.shards[i].m = make(map[[sha256.Size]byte]*cacheEntry)
	}
	return c
}

func (c *tokenCache) shard(h *[sha256.Size]byte) *cacheShard {
	return &c.shards[int(h[0])%len(c.shards)]
}

// get returns the identity cached for h if the entry is alive at now, its
// issuer is live and its key is still in the issuer's key set; a dead
// entry is dropped.
func (c *tokenCache) get(h *[sha256.Size]byte, now time.Time) (*identity, bool) {
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[*h]
	if e == nil {
		return nil, false
	}
	if now.UnixNano() >= e.exp || !e.valid() {
		s.remove(e)
		return nil, false
	}
	s.toFront(e)
	return e.id, true
}

// put caches id for h until exp, evicting the least recently used entry
// when the shard is full.
func (c *tokenCache) put(h *[sha256.Size]byte, id *identity, key *verifyKey, exp time.Time) {
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[*h]; e != nil {
		e.id, e.key, e.exp = id, key, exp.UnixNano()
		s.toFront(e)
		return
	}
	e := &cacheEntry{hash: *h, id: id, key: key, exp: exp.UnixNano()}
	s.m[*h] = e
	s.pushFront(e)
	for len(s.m) > c.perShard {
		s.remove(s.tail)
	}
}

// valid reports whether e's issuer is live and still holds its key.
func (e *cacheEntry) valid() bool {
	ti := e.id.issuer
	return ti.live.Load() && ti.src.keys().holds(e.key)
}

// purge drops every entry verified by src's keys whose key is not in
// keys, leaving other issuers' entries alone. Lookups already ignore
// such entries; purging frees them at once.
func (c *tokenCache) purge(src *keySource, keys *keySet) int {
	return c.drop(func(e *cacheEntry) bool { return e.id.issuer.src == src && !keys.holds(e.key) })
}

// purgeDead drops every entry whose issuer a reload replaced.
func (c *tokenCache) purgeDead() int {
	return c.drop(func(e *cacheEntry) bool { return !e.id.issuer.live.Load() })
}

func (c *tokenCache) drop(dead func(*cacheEntry) bool) int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for _, e := range s.m {
			if dead(e) {
				s.remove(e)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// len returns the number of entries, dead or alive.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (s *cacheShard) pushFront(e *cacheEntry) {
	e.prev, e.next = nil, s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}

func (s *cacheShard) unlink(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (s *cacheShard) toFront(e *cacheEntry) {
	if s.head == e {
		return
	}
	s.unlink(e)
	s.pushFront(e)
}

func (s *cacheShard) remove(e *cacheEntry) {
	s.unlink(e)
	delete(s.m, e.hash)
}
