package issuer

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tollgate-dev/tollgate/internal/store"
)

//go:embed migrations
var migrationsFS embed.FS

// Migrations returns the issuer's schema migrations, in the layout
// store.Open expects.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

var (
	errNotFound  = errors.New("not found")
	errNameTaken = errors.New("name is taken")
)

// pgUniqueViolation is PostgreSQL's SQLSTATE for a unique constraint
// violation.
const pgUniqueViolation = "23505"

// isUniqueViolation reports whether err is a unique constraint violation
// in either dialect: the race-safe way to learn that a name is taken.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == pgUniqueViolation
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		return sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// user is one account row.
type user struct {
	id           int64
	publicID     string
	name         string
	passwordHash string
	created      time.Time
}

// users is the account table. Every statement uses bound parameters.
type users struct{ db *store.DB }

func unixMS(t time.Time) int64      { return t.UnixMilli() }
func fromUnixMS(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// create inserts u and sets its id; a taken name (in any letter case)
// is errNameTaken. The single INSERT is the whole write, so a failure
// can never leave half a user behind.
func (s users) create(ctx context.Context, u *user) error {
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`
		INSERT INTO users (public_id, name, name_key, password_hash, created_unix_ms)
		VALUES ($1, $2, $3, $4, $5) RETURNING id`),
		u.publicID, u.name, nameKey(u.name), u.passwordHash, unixMS(u.created)).Scan(&u.id)
	if isUniqueViolation(err) {
		return errNameTaken
	}
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	return nil
}

// byName returns the user whose name matches name without regard to
// case, or errNotFound.
func (s users) byName(ctx context.Context, name string) (user, error) {
	var u user
	var created int64
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`
		SELECT id, public_id, name, password_hash, created_unix_ms FROM users WHERE name_key = $1`),
		nameKey(name)).Scan(&u.id, &u.publicID, &u.name, &u.passwordHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return user{}, errNotFound
	}
	if err != nil {
		return user{}, fmt.Errorf("look up user: %w", err)
	}
	u.created = fromUnixMS(created)
	return u, nil
}

// byPublicID returns the user whose public id is id, or errNotFound.
func (s users) byPublicID(ctx context.Context, id string) (user, error) {
	var u user
	var created int64
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`
		SELECT id, public_id, name, password_hash, created_unix_ms FROM users WHERE public_id = $1`),
		id).Scan(&u.id, &u.publicID, &u.name, &u.passwordHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return user{}, errNotFound
	}
	if err != nil {
		return user{}, fmt.Errorf("look up user: %w", err)
	}
	u.created = fromUnixMS(created)
	return u, nil
}

// exists reports whether a user with name (in any letter case) exists.
func (s users) exists(ctx context.Context, name string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT COUNT(*) FROM users WHERE name_key = $1`), nameKey(name)).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("look up user: %w", err)
	}
	return n > 0, nil
}

// replaceHash sets user id's password hash to newHash if it is still
// oldHash, so a rehash at login never overwrites a concurrent password
// reset. It reports whether the row changed.
func (s users) replaceHash(ctx context.Context, id int64, oldHash, newHash string) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`
		UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3`),
		newHash, id, oldHash)
	if err != nil {
		return false, fmt.Errorf("update password hash: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("update password hash: %w", err)
	}
	return n == 1, nil
}

// setPassword creates the user name with the given hash, or replaces the
// hash of the existing user with that name; it is how the configured
// admin comes to exist.
func (s users) setPassword(ctx context.Context, name, publicID, hash string, now time.Time) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`
		INSERT INTO users (public_id, name, name_key, password_hash, created_unix_ms)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (name_key) DO UPDATE SET password_hash = excluded.password_hash`),
		publicID, name, nameKey(name), hash, unixMS(now))
	if err != nil {
		return fmt.Errorf("set password of %q: %w", name, err)
	}
	return nil
}

// list returns up to limit users whose lower-cased name sorts after
// after, in name order.
func (s users) list(ctx context.Context, after string, limit int) ([]user, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`
		SELECT id, public_id, name, created_unix_ms FROM users
		WHERE name_key > $1 ORDER BY name_key LIMIT $2`), nameKey(after), limit)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []user
	for rows.Next() {
		var u user
		var created int64
		if err := rows.Scan(&u.id, &u.publicID, &u.name, &created); err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		u.created = fromUnixMS(created)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// keyRow is one row of signing_keys.
type keyRow struct {
	kid         string
	alg         string
	publicJWK   string
	firstSeen   time.Time
	signedUntil time.Time // zero: never signed
}

// keyRows is the signing key table, shared by every replica.
type keyRows struct{ db *store.DB }

// add records a key the first time any replica sees it; a key already
// known keeps its first-seen time, which is what its activation counts
// from.
func (s keyRows) add(ctx context.Context, r keyRow) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`
		INSERT INTO signing_keys (kid, alg, public_jwk, first_seen_unix_ms)
		VALUES ($1, $2, $3, $4) ON CONFLICT (kid) DO NOTHING`),
		r.kid, r.alg, r.publicJWK, unixMS(r.firstSeen))
	if err != nil {
		return fmt.Errorf("record key %s: %w", r.kid, err)
	}
	return nil
}

// all returns every known key.
func (s keyRows) all(ctx context.Context) ([]keyRow, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT kid, alg, public_jwk, first_seen_unix_ms, signed_until_unix_ms FROM signing_keys ORDER BY kid`)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	var out []keyRow
	for rows.Next() {
		var r keyRow
		var first int64
		var until sql.NullInt64
		if err := rows.Scan(&r.kid, &r.alg, &r.publicJWK, &first, &until); err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		r.firstSeen = fromUnixMS(first)
		if until.Valid {
			r.signedUntil = fromUnixMS(until.Int64)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return out, nil
}

// extendSignedUntil raises the key's signed-until time to t, never
// lowering what another replica recorded.
func (s keyRows) extendSignedUntil(ctx context.Context, kid string, t time.Time) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`
		UPDATE signing_keys SET signed_until_unix_ms = $1
		WHERE kid = $2 AND (signed_until_unix_ms IS NULL OR signed_until_unix_ms < $1)`),
		unixMS(t), kid)
	if err != nil {
		return fmt.Errorf("record use of key %s: %w", kid, err)
	}
	return nil
}

// remove forgets a retired key.
func (s keyRows) remove(ctx context.Context, kid string) error {
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(`DELETE FROM signing_keys WHERE kid = $1`), kid); err != nil {
		return fmt.Errorf("forget key %s: %w", kid, err)
	}
	return nil
}
