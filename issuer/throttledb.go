package issuer

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate-dev/tollgate/internal/store"
)

// loginThrottle is what a login asks of the throttle. Errors are the
// store's; a throttle that cannot answer refuses the login (503), it
// never lets an unthrottled guess through.
type loginThrottle interface {
	wait(ctx context.Context, account, addr string, now time.Time) (time.Duration, error)
	failure(ctx context.Context, account, addr string, now time.Time) error
	success(ctx context.Context, account, addr string, now time.Time) error
	prune(ctx context.Context, now time.Time) error
}

// memThrottle is the in-memory throttle, for a SQLite database: a
// SQLite file belongs to one issuer process, so its counts are exact.
type memThrottle struct{ *throttle }

func (m memThrottle) wait(_ context.Context, account, addr string, now time.Time) (time.Duration, error) {
	return m.throttle.wait(account, addr, now), nil
}

func (m memThrottle) failure(_ context.Context, account, addr string, now time.Time) error {
	m.throttle.failure(account, addr, now)
	return nil
}

func (m memThrottle) success(_ context.Context, account, addr string, now time.Time) error {
	m.throttle.success(account, addr, now)
	return nil
}

func (m memThrottle) prune(context.Context, time.Time) error { return nil }

// sharedThrottle keeps the same counts as throttle, with the same
// limits and backoffs, in the database every replica on one PostgreSQL
// shares, so N replicas allow what one does, not N times as many
// guesses. Each count moves by one atomic upsert, so concurrent
// failures on different replicas are all counted.
type sharedThrottle struct {
	db  *store.DB
	cfg Throttle
}

// Kinds of counter, as login_failures stores them.
const (
	kindPair    = "pair"
	kindAccount = "account"
	kindAddr    = "addr"
)

// sharedPairKey is pairKey for the database: PostgreSQL text cannot hold
// NUL, and names and address keys never contain a space.
func sharedPairKey(account, addr string) string { return account + " " + addr }

func (s sharedThrottle) wait(ctx context.Context, account, addr string, now time.Time) (time.Duration, error) {
	pair := sharedPairKey(account, addr)
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`
		SELECT kind, until_unix_ms FROM login_failures
		WHERE (kind = 'pair' AND key = $1) OR (kind = 'account' AND key = $2) OR (kind = 'addr' AND key = $3)`),
		pair, account, addr)
	if err != nil {
		return 0, fmt.Errorf("read login throttle: %w", err)
	}
	defer rows.Close()
	waits := map[string]time.Duration{}
	for rows.Next() {
		var kind string
		var until int64
		if err := rows.Scan(&kind, &until); err != nil {
			return 0, fmt.Errorf("read login throttle: %w", err)
		}
		if d := fromUnixMS(until).Sub(now); d > 0 {
			waits[kind] = d
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read login throttle: %w", err)
	}
	if account == "" {
		return waits[kindAddr], nil
	}
	w := waits[kindPair]
	var at int64
	err = s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT at_unix_ms FROM login_known WHERE pair = $1`), pair).Scan(&at)
	if err == nil && now.Sub(fromUnixMS(at)) < s.cfg.Remember {
		return w, nil
	}
	return max(w, waits[kindAccount], waits[kindAddr]), nil
}

func (s sharedThrottle) failure(ctx context.Context, account, addr string, now time.Time) error {
	type counter struct {
		kind, key string
		limit     int
		maxDelay  time.Duration
	}
	cs := []counter{{kindAddr, addr, s.cfg.AddressLimit, s.cfg.AddressMaxDelay}}
	if account != "" {
		cs = append(cs,
			counter{kindPair, sharedPairKey(account, addr), s.cfg.PairLimit, s.cfg.PairMaxDelay},
			counter{kindAccount, account, s.cfg.AccountLimit, s.cfg.AccountMaxDelay})
	}
	for _, c := range cs {
		var n int
		err := s.db.QueryRowContext(ctx, s.db.Rebind(`
			INSERT INTO login_failures (kind, key, n, last_unix_ms, until_unix_ms) VALUES ($1, $2, 1, $3, 0)
			ON CONFLICT (kind, key) DO UPDATE SET
				n = CASE WHEN $3 - login_failures.last_unix_ms >= $4 THEN 1 ELSE login_failures.n + 1 END,
				last_unix_ms = $3
			RETURNING n`), c.kind, c.key, unixMS(now), s.cfg.Forget.Milliseconds()).Scan(&n)
		if err != nil {
			return fmt.Errorf("count login failure: %w", err)
		}
		if n < c.limit {
			continue
		}
		d := s.cfg.BaseDelay << min(n-c.limit, 30)
		if d <= 0 || d > c.maxDelay {
			d = c.maxDelay
		}
		if _, err := s.db.ExecContext(ctx, s.db.Rebind(`
			UPDATE login_failures SET until_unix_ms = $1 WHERE kind = $2 AND key = $3 AND until_unix_ms < $1`),
			unixMS(now.Add(d)), c.kind, c.key); err != nil {
			return fmt.Errorf("block after login failures: %w", err)
		}
	}
	return nil
}

func (s sharedThrottle) success(ctx context.Context, account, addr string, now time.Time) error {
	pair := sharedPairKey(account, addr)
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(`
		DELETE FROM login_failures WHERE (kind = 'pair' AND key = $1) OR (kind = 'account' AND key = $2)`), pair, account); err != nil {
		return fmt.Errorf("clear login failures: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(`
		INSERT INTO login_known (pair, at_unix_ms) VALUES ($1, $2)
		ON CONFLICT (pair) DO UPDATE SET at_unix_ms = excluded.at_unix_ms`), pair, unixMS(now)); err != nil {
		return fmt.Errorf("remember login: %w", err)
	}
	return nil
}

// prune drops counters that block nothing and would be forgotten, and
// pairs not seen for Remember.
func (s sharedThrottle) prune(ctx context.Context, now time.Time) error {
	cut := unixMS(now)
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(`
		DELETE FROM login_failures WHERE until_unix_ms <= $1 AND last_unix_ms <= $2`), cut, cut-s.cfg.Forget.Milliseconds()); err != nil {
		return fmt.Errorf("prune login failures: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(`DELETE FROM login_known WHERE at_unix_ms <= $1`), cut-s.cfg.Remember.Milliseconds()); err != nil {
		return fmt.Errorf("prune known logins: %w", err)
	}
	return nil
}
