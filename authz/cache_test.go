package authz

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"
)

// cacheIssuer is an issuer whose key source holds keys, for cache tests.
func cacheIssuer(keys *keySet) *trustedIssuer {
	src := &keySource{}
	src.current.Store(keys)
	ti := &trustedIssuer{name: "t", src: src}
	ti.live.Store(true)
	return ti
}

func hashOf(s string) *[sha256.Size]byte {
	h := sha256.Sum256([]byte(s))
	return &h
}

func TestTokenCacheLRU(t *testing.T) {
	k := &verifyKey{kid: "k"}
	ti := cacheIssuer(&keySet{keys: map[string]*verifyKey{"k": k}})
	now := time.Now()
	exp := now.Add(time.Hour)
	c := newTokenCache(3)
	for _, tok := range []string{"a", "b", "c"} {
		c.put(hashOf(tok), &identity{sub: tok, issuer: ti}, k, exp)
	}
	if _, ok := c.get(hashOf("a"), now); !ok { // a is now the most recent
		t.Fatal("get(a) missed right after put")
	}
	c.put(hashOf("d"), &identity{sub: "d", issuer: ti}, k, exp) // evicts b, the least recent
	for tok, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if _, ok := c.get(hashOf(tok), now); ok != want {
			t.Errorf("after eviction get(%s) hit = %v, want %v", tok, ok, want)
		}
	}
	if n := c.len(); n != 3 {
		t.Errorf("len = %d, want 3", n)
	}
}

func TestTokenCacheBound(t *testing.T) {
	k := &verifyKey{kid: "k"}
	ti := cacheIssuer(&keySet{keys: map[string]*verifyKey{"k": k}})
	c := newTokenCache(DefaultCacheSize)
	for i := range 3 * DefaultCacheSize {
		c.put(hashOf(fmt.Sprint(i)), &identity{issuer: ti}, k, time.Now().Add(time.Hour))
	}
	if n := c.len(); n > DefaultCacheSize+cacheShards {
		t.Errorf("len after %d puts = %d, want at most %d", 3*DefaultCacheSize, n, DefaultCacheSize+cacheShards)
	}
}

func TestTokenCacheExpiryAndKeys(t *testing.T) {
	k := &verifyKey{kid: "k"}
	keys := &keySet{keys: map[string]*verifyKey{"k": k}}
	ti := cacheIssuer(keys)
	now := time.Now()
	c := newTokenCache(10)
	c.put(hashOf("t"), &identity{issuer: ti}, k, now.Add(time.Minute))
	if _, ok := c.get(hashOf("t"), now.Add(59*time.Second)); !ok {
		t.Errorf("get before exp missed")
	}
	if _, ok := c.get(hashOf("t"), now.Add(time.Minute)); ok {
		t.Errorf("get at exp hit; an entry must not outlive its token")
	}
	if c.len() != 0 {
		t.Errorf("expired entry was not dropped")
	}

	c.put(hashOf("t"), &identity{issuer: ti}, k, now.Add(time.Minute))
	ti.src.current.Store(&keySet{keys: map[string]*verifyKey{"k": {kid: "k"}}}) // same kid, new key
	if _, ok := c.get(hashOf("t"), now); ok {
		t.Errorf("get hit though the entry's key was replaced")
	}
	ti.src.current.Store(keys)
	c.put(hashOf("t"), &identity{issuer: ti}, k, now.Add(time.Minute))
	c.put(hashOf("u"), &identity{issuer: ti}, &verifyKey{kid: "other"}, now.Add(time.Minute))
	if n := c.purge(ti.src, keys); n != 1 {
		t.Errorf("purge dropped %d entries, want 1", n)
	}
	if _, ok := c.get(hashOf("t"), now); !ok {
		t.Errorf("purge dropped an entry whose key is still trusted")
	}
}

func TestTokenCacheConcurrent(t *testing.T) {
	k := &verifyKey{kid: "k"}
	keys := &keySet{keys: map[string]*verifyKey{"k": k}}
	ti := cacheIssuer(keys)
	c := newTokenCache(2000)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				h := hashOf(fmt.Sprint(g, i%50))
				if _, ok := c.get(h, time.Now()); !ok {
					c.put(h, &identity{issuer: ti}, k, time.Now().Add(time.Minute))
				}
				if i%100 == 0 {
					c.purge(ti.src, keys)
				}
			}
		})
	}
	wg.Wait()
	if n := c.len(); n != 8*50 {
		t.Errorf("len = %d, want %d", n, 8*50)
	}
}

// TestCachedTokenExpires: a token verified once is not accepted from the
// cache after its exp.
func TestCachedTokenExpires(t *testing.T) {
	e := newTestEnv(t, Config{CacheSize: 10, Leeway: time.Second})
	e.waitReady()
	c := claimsFor("u", "user")
	c["exp"] = time.Now().Add(time.Minute).Unix()
	req := envoyRequest("GET", "/books", bearer(e.key.sign(t, c, nil)), nil)
	ctx := context.Background()
	for _, step := range []struct {
		at     time.Duration
		reason string
	}{
		{0, "verified"},
		{30 * time.Second, "cached"},
		{2 * time.Minute, "expired"},
	} {
		base := time.Now()
		e.srv.now = func() time.Time { return base.Add(step.at) }
		e.srv.Check(ctx, req)
		if r := e.logs.lastCheck(t)["reason"]; r != step.reason {
			t.Errorf("Check(token with exp in 1m) at +%v: reason %v, want %s", step.at, r, step.reason)
		}
	}
}

func TestCacheDisabled(t *testing.T) {
	e := newTestEnv(t, Config{CacheSize: 0})
	e.waitReady()
	req := envoyRequest("GET", "/books", bearer(e.key.sign(t, claimsFor("u", "user"), nil)), nil)
	for range 2 {
		e.check(req)
		if r := e.logs.lastCheck(t)["reason"]; r != "verified" {
			t.Errorf("Check with the cache off: reason %v, want verified every time", r)
		}
	}
}
