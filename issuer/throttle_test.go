package issuer

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func failN(th *throttle, n int, account, addr string, at time.Time) {
	for range n {
		th.failure(account, addr, at)
	}
}

func TestThrottlePairBackoff(t *testing.T) {
	th := newThrottle(DefaultThrottle())
	for i := 1; i <= 4; i++ {
		th.failure("alain", "192.0.2.1", t0)
		if w := th.wait("alain", "192.0.2.1", t0); w != 0 {
			t.Fatalf("wait after %d failures = %s, want 0 (limit 5)", i, w)
		}
	}
	now := t0
	for i, want := range []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900} {
		th.failure("alain", "192.0.2.1", now)
		if w := th.wait("alain", "192.0.2.1", now); w != want*time.Second {
			t.Fatalf("wait after %d failures = %s, want %s", 5+i, w, want*time.Second)
		}
		now = now.Add(want * time.Second)
		if w := th.wait("alain", "192.0.2.1", now); w != 0 {
			t.Fatalf("wait once the block ran out = %s, want 0", w)
		}
	}
	// The pair's block does not touch the same account elsewhere.
	if w := th.wait("alain", "198.51.100.7", now.Add(-time.Second)); w != 0 {
		t.Errorf("wait(same account, other address) = %s, want 0", w)
	}
}

// TestThrottleNoLongLockout: an attacker spreading guesses over many
// addresses slows the account's owner down by at most AccountMaxDelay,
// and not at all from an address they logged in from before.
func TestThrottleNoLongLockout(t *testing.T) {
	th := newThrottle(DefaultThrottle())
	th.success("alain", "203.0.113.5", t0) // the owner's usual address
	now := t0.Add(time.Hour)
	for i := range 5000 {
		th.failure("alain", fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), now)
		now = now.Add(10 * time.Millisecond)
	}
	if w := th.wait("alain", "198.51.100.9", now); w == 0 || w > time.Minute {
		t.Errorf("owner from a new address waits %s, want between 0 and 1m (AccountMaxDelay)", w)
	}
	if w := th.wait("alain", "203.0.113.5", now); w != 0 {
		t.Errorf("owner from their usual address waits %s, want 0", w)
	}
	// The attack did slow the account down for everyone else.
	if w := th.wait("alain", "10.200.0.1", now); w == 0 {
		t.Error("account limit did not engage after 5000 failures")
	}
}

func TestThrottleAddressLimit(t *testing.T) {
	th := newThrottle(throttleWith(func(c *Throttle) { c.AddressLimit = 10 }))
	for i := range 10 {
		th.failure(fmt.Sprintf("user%d", i), "192.0.2.1", t0)
	}
	if w := th.wait("fresh.account", "192.0.2.1", t0); w != time.Second {
		t.Errorf("wait for a new account after 10 failures from one address = %s, want 1s", w)
	}
	if w := th.wait("fresh.account", "192.0.2.2", t0); w != 0 {
		t.Errorf("wait from another address = %s, want 0", w)
	}
	// Invalid names count against the address too.
	th2 := newThrottle(throttleWith(func(c *Throttle) { c.AddressLimit = 3 }))
	failN(th2, 3, "", "192.0.2.1", t0)
	if w := th2.wait("", "192.0.2.1", t0); w == 0 {
		t.Error("failures with unusable names did not count against the address")
	}
	// A successful login into one's own account does not reset it.
	th.success("mine", "192.0.2.1", t0)
	if w := th.wait("fresh.account", "192.0.2.1", t0); w == 0 {
		t.Error("address limit was reset by a success on another account")
	}
}

func TestThrottleSuccessAndForget(t *testing.T) {
	th := newThrottle(DefaultThrottle())
	failN(th, 4, "alain", "192.0.2.1", t0)
	th.success("alain", "192.0.2.1", t0)
	th.failure("alain", "192.0.2.1", t0)
	if w := th.wait("alain", "192.0.2.1", t0); w != 0 {
		t.Errorf("wait after success then 1 failure = %s, want 0 (count cleared)", w)
	}
	th2 := newThrottle(DefaultThrottle())
	failN(th2, 4, "bob", "192.0.2.1", t0)
	th2.failure("bob", "192.0.2.1", t0.Add(time.Hour)) // quiet for Forget
	if w := th2.wait("bob", "192.0.2.1", t0.Add(time.Hour)); w != 0 {
		t.Errorf("wait after an hour of quiet and 1 failure = %s, want 0 (count forgotten)", w)
	}
}

func TestThrottleBounded(t *testing.T) {
	th := newThrottle(throttleWith(func(c *Throttle) { c.MaxEntries = 100 }))
	for i := range 1000 {
		th.failure(fmt.Sprintf("u%d", i), fmt.Sprintf("192.0.2.%d", i%250), t0)
		th.success(fmt.Sprintf("v%d", i), "192.0.2.1", t0)
	}
	for name, n := range map[string]int{"pairs": len(th.pairs.m), "accounts": len(th.accounts.m), "addrs": len(th.addrs.m), "known": len(th.known)} {
		if n > 100 {
			t.Errorf("%s table has %d entries, want at most 100", name, n)
		}
	}
}

// TestLoginThrottled: over HTTP, repeated failures get 429 with
// Retry-After before any hash is computed, even with the right password,
// and the block lifts when Retry-After has passed.
func TestLoginThrottled(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.Throttle.PairLimit = 3 })
	env.mustRegister(t, "alain", goodPassword)
	attacker := "192.0.2.66:4321"
	try := func(password, remote string) response {
		return env.do(t, request{method: "POST", path: "/login", user: "alain", pass: password, remote: remote})
	}
	for i := range 3 {
		if res := try("wrong-guess", attacker); res.status != http.StatusUnauthorized {
			t.Fatalf("guess %d = %d, want 401", i+1, res.status)
		}
	}
	before := env.hashes.n.Load()
	res := try(goodPassword, attacker)
	if res.status != http.StatusTooManyRequests {
		t.Fatalf("login after 3 failures = %d %s, want 429", res.status, res.body)
	}
	if n := env.hashes.n.Load() - before; n != 0 {
		t.Errorf("throttled login ran %d hashes, want 0", n)
	}
	secs, err := strconv.Atoi(res.header.Get("Retry-After"))
	if err != nil || secs < 1 {
		t.Fatalf("Retry-After = %q, want a positive number of seconds", res.header.Get("Retry-After"))
	}
	if res.message(t) == "" {
		t.Error("429 has no JSON message")
	}
	// Another client is not affected.
	if res := try(goodPassword, "198.51.100.1:1"); res.status != http.StatusOK {
		t.Errorf("login from another address = %d, want 200", res.status)
	}
	// Retrying while blocked does not extend the block.
	try("wrong-guess", attacker)
	env.clock.Advance(time.Duration(secs) * time.Second)
	if res := try(goodPassword, attacker); res.status != http.StatusOK {
		t.Errorf("login after Retry-After = %d %s, want 200", res.status, res.body)
	}
}

// TestLoginThrottleBehindProxy: behind a trusted proxy clients are told
// apart by the X-Forwarded-For entry the proxy appended; entries the
// client sent, and the header from anyone else, are ignored, so a client
// cannot escape its throttle by inventing addresses.
func TestLoginThrottleBehindProxy(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.Throttle.PairLimit = 2 })
	env.mustRegister(t, "alain", goodPassword)
	login := func(remote, xff string) int {
		rq := request{method: "POST", path: "/login", user: "alain", pass: "wrong-guess", remote: remote}
		if xff != "" {
			rq.headers = map[string]string{"X-Forwarded-For": xff}
		}
		return env.do(t, rq).status
	}
	// Through the loopback gateway: client 192.0.2.1 is blocked, 192.0.2.2 not.
	login("127.0.0.1:5000", "192.0.2.1")
	login("127.0.0.1:5000", "192.0.2.1")
	if got := login("127.0.0.1:5000", "192.0.2.1"); got != 429 {
		t.Errorf("third failure via proxy for 192.0.2.1 = %d, want 429", got)
	}
	if got := login("127.0.0.1:5000", "192.0.2.2"); got != 401 {
		t.Errorf("first failure via proxy for 192.0.2.2 = %d, want 401", got)
	}
	// Through the gateway from an address in a trusted range (a private
	// network, here loopback), inventing an entry each time: the gateway
	// appended 127.0.0.7, and that is the client.
	login("127.0.0.1:5000", "198.51.100.1, 127.0.0.7")
	login("127.0.0.1:5000", "198.51.100.2, 127.0.0.7")
	if got := login("127.0.0.1:5000", "198.51.100.3, 127.0.0.7"); got != 429 {
		t.Errorf("third failure via proxy for 127.0.0.7 with a new forged entry = %d, want 429", got)
	}
	// Directly, with an invented X-Forwarded-For each time.
	login("203.0.113.9:1", "10.0.0.1")
	login("203.0.113.9:1", "10.0.0.2")
	if got := login("203.0.113.9:1", "10.0.0.3"); got != 429 {
		t.Errorf("third failure from an untrusted peer with a new X-Forwarded-For = %d, want 429", got)
	}
}

// throttleWith returns DefaultThrottle changed by set.
func throttleWith(set func(*Throttle)) Throttle {
	c := DefaultThrottle()
	set(&c)
	return c
}
