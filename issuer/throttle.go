package issuer

import (
	"fmt"
	"sync"
	"time"
)

// Throttle sets how repeated login failures are slowed down. The zero
// value of each field means its default.
//
// Failures are counted three ways, and a login attempt waits for the
// longest block that applies to it:
//
//   - per (account, client address) pair: the tight limit that stops one
//     guesser; its backoff grows to PairMaxDelay but blocks only that
//     address for that account, so it cannot lock anyone else out;
//   - per account, from all addresses: a looser limit against guessing
//     spread over many addresses, whose backoff is capped low
//     (AccountMaxDelay), so a third party can at worst slow a victim
//     down, never lock them out for long;
//   - per client address, across accounts: against one address trying
//     many accounts (IPv6 clients are counted per /64).
//
// An (account, address) pair that logged in successfully within
// Remember is exempt from the account and address limits: a user logging
// in from where they usually do is unaffected by an attack on their
// account from elsewhere, or by a noisy neighbour behind the same NAT.
// Success clears the pair's and the account's failures, never the
// address's, so an attacker cannot reset their address's count by
// logging into an account of their own.
//
// Counts live in memory, per replica, bounded by MaxEntries per table;
// a blocked attempt does not extend its block.
type Throttle struct {
	// PairLimit is the number of failures per (account, address) before
	// backoff starts (default 5).
	PairLimit int
	// AccountLimit is the number of failures per account, from any
	// address, before backoff starts (default 20).
	AccountLimit int
	// AddressLimit is the number of failures per client address, for any
	// account, before backoff starts (default 100).
	AddressLimit int
	// BaseDelay is the first backoff; each further failure doubles it
	// (default 1s).
	BaseDelay time.Duration
	// PairMaxDelay caps the per-pair backoff (default 15m).
	PairMaxDelay time.Duration
	// AccountMaxDelay caps the per-account backoff (default 1m); it is
	// the longest a third party can keep an account's owner waiting.
	AccountMaxDelay time.Duration
	// AddressMaxDelay caps the per-address backoff (default 15m).
	AddressMaxDelay time.Duration
	// Forget is the quiet period after which a count starts again from
	// zero (default 1h).
	Forget time.Duration
	// Remember is how long a successful (account, address) pair stays
	// exempt from the account and address limits (default 720h).
	Remember time.Duration
	// MaxEntries bounds each table (default 100000).
	MaxEntries int
}

// DefaultThrottle returns the throttle limits DefaultConfig has.
func DefaultThrottle() Throttle {
	return Throttle{
		PairLimit:       5,
		AccountLimit:    20,
		AddressLimit:    100,
		MaxEntries:      100_000,
		BaseDelay:       time.Second,
		PairMaxDelay:    15 * time.Minute,
		AccountMaxDelay: time.Minute,
		AddressMaxDelay: 15 * time.Minute,
		Forget:          time.Hour,
		Remember:        30 * 24 * time.Hour,
	}
}

// validate refuses limits that would turn throttling off or into a
// lockout: every count and duration must be positive.
func (c Throttle) validate() error {
	for name, v := range map[string]int{"pair limit": c.PairLimit, "account limit": c.AccountLimit, "address limit": c.AddressLimit, "max entries": c.MaxEntries} {
		if v <= 0 {
			return fmt.Errorf("throttle %s must be positive, not %d", name, v)
		}
	}
	for name, v := range map[string]time.Duration{"base delay": c.BaseDelay, "pair max delay": c.PairMaxDelay, "account max delay": c.AccountMaxDelay, "address max delay": c.AddressMaxDelay, "forget": c.Forget, "remember": c.Remember} {
		if v <= 0 {
			return fmt.Errorf("throttle %s must be positive, not %v", name, v)
		}
	}
	return nil
}

// failures is one throttling counter.
type failures struct {
	n     int
	last  time.Time // latest failure
	until time.Time // blocked before this
}

// table is a bounded map of counters with one limit and cap.
type table struct {
	m        map[string]*failures
	limit    int
	maxDelay time.Duration
}

// throttle implements Throttle. Keys: an account is its lower-cased name
// (whether or not it exists, so throttling reveals nothing), an address
// is addrKey's form.
type throttle struct {
	cfg       Throttle
	mu        sync.Mutex
	pairs     table
	accounts  table
	addrs     table
	known     map[string]time.Time // pair -> latest success
	lastSweep time.Time
}

func newThrottle(c Throttle) *throttle {
	return &throttle{
		cfg:      c,
		pairs:    table{m: map[string]*failures{}, limit: c.PairLimit, maxDelay: c.PairMaxDelay},
		accounts: table{m: map[string]*failures{}, limit: c.AccountLimit, maxDelay: c.AccountMaxDelay},
		addrs:    table{m: map[string]*failures{}, limit: c.AddressLimit, maxDelay: c.AddressMaxDelay},
		known:    map[string]time.Time{},
	}
}

func pairKey(account, addr string) string { return account + "\x00" + addr }

// wait returns how long a login for account (a name key, or "" when the
// name cannot be an account) from addr must wait; 0 means it may go on.
func (t *throttle) wait(account, addr string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var w time.Duration
	if account != "" {
		pair := pairKey(account, addr)
		w = t.pairs.wait(pair, now)
		if t.isKnown(pair, now) {
			return w
		}
		w = max(w, t.accounts.wait(account, now))
	}
	return max(w, t.addrs.wait(addr, now))
}

// failure records a failed login.
func (t *throttle) failure(account, addr string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	if account != "" {
		t.pairs.fail(pairKey(account, addr), now, t.cfg)
		t.accounts.fail(account, now, t.cfg)
	}
	t.addrs.fail(addr, now, t.cfg)
}

// success records a successful login: the pair and account counts
// clear, and the pair is remembered.
func (t *throttle) success(account, addr string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pair := pairKey(account, addr)
	delete(t.pairs.m, pair)
	delete(t.accounts.m, account)
	if _, ok := t.known[pair]; !ok && len(t.known) >= t.cfg.MaxEntries {
		t.sweep(now)
		evictOne(t.known, func(time.Time) bool { return true })
	}
	t.known[pair] = now
}

func (t *throttle) isKnown(pair string, now time.Time) bool {
	at, ok := t.known[pair]
	return ok && now.Sub(at) < t.cfg.Remember
}

func (tb *table) wait(key string, now time.Time) time.Duration {
	f := tb.m[key]
	if f == nil || !now.Before(f.until) {
		return 0
	}
	return f.until.Sub(now)
}

func (tb *table) fail(key string, now time.Time, c Throttle) {
	f := tb.m[key]
	if f == nil {
		if len(tb.m) >= c.MaxEntries {
			// Prefer dropping a counter that blocks nothing now.
			if !evictOne(tb.m, func(f *failures) bool { return !now.Before(f.until) }) {
				evictOne(tb.m, func(*failures) bool { return true })
			}
		}
		f = &failures{}
		tb.m[key] = f
	}
	if now.Sub(f.last) >= c.Forget {
		f.n = 0
	}
	f.n++
	f.last = now
	if f.n >= tb.limit {
		d := c.BaseDelay << min(f.n-tb.limit, 30)
		if d <= 0 || d > tb.maxDelay {
			d = tb.maxDelay
		}
		f.until = now.Add(d)
	}
}

// sweep drops counters that block nothing and would be forgotten anyway,
// at most once a minute.
func (t *throttle) sweep(now time.Time) {
	if now.Sub(t.lastSweep) < time.Minute {
		return
	}
	t.lastSweep = now
	for _, tb := range []*table{&t.pairs, &t.accounts, &t.addrs} {
		for k, f := range tb.m {
			if !now.Before(f.until) && now.Sub(f.last) >= t.cfg.Forget {
				delete(tb.m, k)
			}
		}
	}
	for k, at := range t.known {
		if now.Sub(at) >= t.cfg.Remember {
			delete(t.known, k)
		}
	}
}

// evictOne deletes one entry of m for which ok holds (map order makes
// the choice arbitrary) and reports whether it found one.
func evictOne[V any](m map[string]V, ok func(V) bool) bool {
	for k, v := range m {
		if ok(v) {
			delete(m, k)
			return true
		}
	}
	return false
}
