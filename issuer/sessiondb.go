package issuer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tollgate-dev/tollgate/internal/store"
)

// Session store errors.
var (
	// errRefreshUnknown: no such refresh token (or it was pruned).
	errRefreshUnknown = errors.New("unknown refresh token")
	// errRefreshReused: the token was already used; its session is
	// revoked by the caller.
	errRefreshReused = errors.New("refresh token reused")
	// errSessionEnded: the session was revoked or outlived its idle or
	// absolute lifetime.
	errSessionEnded = errors.New("session ended")
	// errWrongClient: the token was issued to another client.
	errWrongClient = errors.New("refresh token was issued to another client")
)

// session is one sessions row.
type session struct {
	id       string
	subject  string
	clientID string
	created  time.Time
	lastUsed time.Time
	revoked  bool
	// jkt is the thumbprint of the DPoP key the session is bound to, or
	// "" for an unbound session.
	jkt string
}

// accessRow is an access token as the access_tokens table records it.
type accessRow struct {
	jti       string
	sessionID string // empty: issued without a session (refresh off)
	subject   string
	clientID  string
	exp       time.Time
}

// sessions is the session, refresh token and revocation tables, shared
// by every replica. Every write that belongs together is one
// transaction, so a failure never leaves half a session.
type sessions struct{ db *store.DB }

func nullMS(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: unixMS(t), Valid: true}
}

func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}

// inTx runs f in a transaction, committing when it returns nil.
func (s sessions) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (s sessions) insertAccess(ctx context.Context, tx *sql.Tx, a accessRow) error {
	_, err := tx.ExecContext(ctx, s.db.Rebind(`
		INSERT INTO access_tokens (jti, session_id, subject, client_id, exp_unix_ms) VALUES ($1, $2, $3, $4, $5)`),
		a.jti, nullString(a.sessionID), a.subject, a.clientID, unixMS(a.exp))
	if err != nil {
		return fmt.Errorf("record access token: %w", err)
	}
	return nil
}

func (s sessions) insertRefresh(ctx context.Context, tx *sql.Tx, hash, sessionID string, now time.Time) error {
	_, err := tx.ExecContext(ctx, s.db.Rebind(`
		INSERT INTO refresh_tokens (hash, session_id, created_unix_ms) VALUES ($1, $2, $3)`),
		hash, sessionID, unixMS(now))
	if err != nil {
		return fmt.Errorf("record refresh token: %w", err)
	}
	return nil
}

// recordAccess records an access token issued without a session.
func (s sessions) recordAccess(ctx context.Context, a accessRow) error {
	return s.inTx(ctx, func(tx *sql.Tx) error { return s.insertAccess(ctx, tx, a) })
}

// create stores a new session with its first refresh token (by hash)
// and access token, all or nothing.
func (s sessions) create(ctx context.Context, ss session, refreshHash string, a accessRow) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.db.Rebind(`
			INSERT INTO sessions (id, subject, client_id, created_unix_ms, last_used_unix_ms, jkt) VALUES ($1, $2, $3, $4, $4, $5)`),
			ss.id, ss.subject, ss.clientID, unixMS(ss.created), nullString(ss.jkt))
		if err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		if err := s.insertRefresh(ctx, tx, refreshHash, ss.id, ss.created); err != nil {
			return err
		}
		return s.insertAccess(ctx, tx, a)
	})
}

// rotation is one refresh: the token presented and what replaces it.
type rotation struct {
	oldHash  string
	clientID string
	now      time.Time
	idle     time.Duration
	absolute time.Duration
	// newHash and access are the replacement refresh token (by hash)
	// and the new access token, made before the transaction: nothing
	// in it may use another connection, or concurrent refreshes holding
	// every pooled connection in a waiting transaction would starve it.
	newHash string
	access  accessRow
	// jkt is the thumbprint of the refresh's DPoP proof key, "" without
	// a proof; an unbound session becomes bound to it.
	jkt string
}

// rotate consumes the refresh token r.oldHash and stores its
// replacement, in one transaction: of concurrent rotations of one token
// exactly one commits. A token already used is errRefreshReused (with
// the session id, for the caller to revoke), an unknown one
// errRefreshUnknown; a token of an ended session errSessionEnded; one
// presented by another client errWrongClient, and is not consumed. An
// unbound session refreshed with a proof (r.jkt) is bound to its key from
// then on; the caller has checked the proof of a bound one against its
// key, and a binding never changes once set.
func (s sessions) rotate(ctx context.Context, r rotation) (sessionID string, err error) {
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var (
			ss      session
			used    sql.NullInt64
			revoked sql.NullInt64
			jkt     sql.NullString
			created int64
			last    int64
		)
		err := tx.QueryRowContext(ctx, s.db.Rebind(`
			SELECT s.id, s.subject, s.client_id, s.created_unix_ms, s.last_used_unix_ms, s.revoked_unix_ms, r.used_unix_ms, s.jkt
			FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.hash = $1`),
			r.oldHash).Scan(&ss.id, &ss.subject, &ss.clientID, &created, &last, &revoked, &used, &jkt)
		if errors.Is(err, sql.ErrNoRows) {
			return errRefreshUnknown
		}
		if err != nil {
			return fmt.Errorf("look up refresh token: %w", err)
		}
		sessionID = ss.id
		ss.created, ss.lastUsed, ss.revoked, ss.jkt = fromUnixMS(created), fromUnixMS(last), revoked.Valid, jkt.String
		switch {
		case ss.clientID != r.clientID:
			return errWrongClient
		case ss.revoked:
			return errSessionEnded
		case used.Valid:
			return errRefreshReused
		case !r.now.Before(ss.lastUsed.Add(r.idle)), !r.now.Before(ss.created.Add(r.absolute)):
			return errSessionEnded
		}
		res, err := tx.ExecContext(ctx, s.db.Rebind(`
			UPDATE refresh_tokens SET used_unix_ms = $1 WHERE hash = $2 AND used_unix_ms IS NULL`),
			unixMS(r.now), r.oldHash)
		if err != nil {
			return fmt.Errorf("consume refresh token: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("consume refresh token: %w", err)
		} else if n != 1 {
			// Another refresh consumed it between the read and the
			// write: the same token used twice.
			return errRefreshReused
		}
		if ss.subject != r.access.subject {
			return errRefreshUnknown
		}
		a := r.access
		a.sessionID, a.clientID = ss.id, ss.clientID
		if err := s.insertRefresh(ctx, tx, r.newHash, ss.id, r.now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE sessions SET last_used_unix_ms = $1, jkt = COALESCE(jkt, $3) WHERE id = $2`),
			unixMS(r.now), ss.id, nullString(r.jkt)); err != nil {
			return fmt.Errorf("touch session: %w", err)
		}
		return s.insertAccess(ctx, tx, a)
	})
	return sessionID, err
}

// bumpVersion takes the next revocation version inside tx. The row lock
// it takes is held to commit, so versions are handed out in commit
// order.
func (s sessions) bumpVersion(ctx context.Context, tx *sql.Tx) (int64, error) {
	var v int64
	err := tx.QueryRowContext(ctx, `UPDATE revocation_version SET version = version + 1 WHERE id = 1 RETURNING version`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("next revocation version: %w", err)
	}
	return v, nil
}

// revokeSession ends session id: its refresh tokens stop working and
// every access token it issued that has not expired is revoked. It
// reports whether the session was still active.
func (s sessions) revokeSession(ctx context.Context, id string, now time.Time) (bool, error) {
	var active bool
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.Rebind(`
			UPDATE sessions SET revoked_unix_ms = $1 WHERE id = $2 AND revoked_unix_ms IS NULL`), unixMS(now), id)
		if err != nil {
			return fmt.Errorf("revoke session: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("revoke session: %w", err)
		}
		active = n == 1
		v, err := s.bumpVersion(ctx, tx)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`
			INSERT INTO revoked_tokens (jti, exp_unix_ms, version)
			SELECT jti, exp_unix_ms, $1 FROM access_tokens WHERE session_id = $2 AND exp_unix_ms > $3
			ON CONFLICT (jti) DO NOTHING`), v, id, unixMS(now)); err != nil {
			return fmt.Errorf("revoke session's access tokens: %w", err)
		}
		return nil
	})
	return active, err
}

// revokeAccess revokes one access token by jti until exp.
func (s sessions) revokeAccess(ctx context.Context, jti string, exp time.Time) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		v, err := s.bumpVersion(ctx, tx)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`
			INSERT INTO revoked_tokens (jti, exp_unix_ms, version) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING`),
			jti, unixMS(exp), v); err != nil {
			return fmt.Errorf("revoke access token: %w", err)
		}
		return nil
	})
}

// revokeSubject refuses every token of subject issued before notBefore
// (kept until until, when all of them have expired) and ends all of the
// subject's sessions. A later not-before is never lowered.
func (s sessions) revokeSubject(ctx context.Context, subject string, notBefore, until, now time.Time) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		v, err := s.bumpVersion(ctx, tx)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`
			INSERT INTO revoked_subjects (subject, not_before_unix_ms, until_unix_ms, version) VALUES ($1, $2, $3, $4)
			ON CONFLICT (subject) DO UPDATE SET
				not_before_unix_ms = CASE WHEN excluded.not_before_unix_ms > revoked_subjects.not_before_unix_ms
					THEN excluded.not_before_unix_ms ELSE revoked_subjects.not_before_unix_ms END,
				until_unix_ms = CASE WHEN excluded.until_unix_ms > revoked_subjects.until_unix_ms
					THEN excluded.until_unix_ms ELSE revoked_subjects.until_unix_ms END,
				version = excluded.version`),
			subject, unixMS(notBefore), unixMS(until), v); err != nil {
			return fmt.Errorf("revoke subject: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`
			UPDATE sessions SET revoked_unix_ms = $1 WHERE subject = $2 AND revoked_unix_ms IS NULL`),
			unixMS(now), subject); err != nil {
			return fmt.Errorf("revoke subject's sessions: %w", err)
		}
		return nil
	})
}

// notBefore returns subject's not-before time, zero when it has none.
func (s sessions) notBefore(ctx context.Context, subject string) (time.Time, error) {
	var ms int64
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT not_before_unix_ms FROM revoked_subjects WHERE subject = $1`), subject).Scan(&ms)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("look up not-before: %w", err)
	}
	return fromUnixMS(ms), nil
}

// accessByJTI returns the recorded access token jti, or errNotFound.
func (s sessions) accessByJTI(ctx context.Context, jti string) (accessRow, error) {
	var (
		a   accessRow
		sid sql.NullString
		exp int64
	)
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`
		SELECT jti, session_id, subject, client_id, exp_unix_ms FROM access_tokens WHERE jti = $1`), jti).
		Scan(&a.jti, &sid, &a.subject, &a.clientID, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return accessRow{}, errNotFound
	}
	if err != nil {
		return accessRow{}, fmt.Errorf("look up access token: %w", err)
	}
	a.sessionID, a.exp = sid.String, fromUnixMS(exp)
	return a, nil
}

// refreshSession returns the session of refresh token hash (its id,
// client, subject and DPoP binding), or errNotFound.
func (s sessions) refreshSession(ctx context.Context, hash string) (session, error) {
	var (
		ss  session
		jkt sql.NullString
	)
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`
		SELECT s.id, s.client_id, s.subject, s.jkt FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.hash = $1`), hash).
		Scan(&ss.id, &ss.clientID, &ss.subject, &jkt)
	if errors.Is(err, sql.ErrNoRows) {
		return session{}, errNotFound
	}
	if err != nil {
		return session{}, fmt.Errorf("look up refresh token: %w", err)
	}
	ss.jkt = jkt.String
	return ss, nil
}

// revokedToken and revokedSubject are feed entries.
type revokedToken struct {
	JTI string `json:"jti"`
	Exp int64  `json:"exp"`
}

type revokedSubject struct {
	Sub       string `json:"sub"`
	NotBefore int64  `json:"not_before"`
	Until     int64  `json:"until"`
}

// feed returns the current revocation version and the live entries
// with a version above since (all of them when full), up to that
// version. Entries at or below the version read are committed, since
// versions follow commit order.
func (s sessions) feed(ctx context.Context, since int64, full bool, now time.Time) (version int64, toks []revokedToken, subs []revokedSubject, err error) {
	if err := s.db.QueryRowContext(ctx, `SELECT version FROM revocation_version WHERE id = 1`).Scan(&version); err != nil {
		return 0, nil, nil, fmt.Errorf("read revocation version: %w", err)
	}
	if full {
		since = 0
	}
	if since >= version {
		return version, nil, nil, nil
	}
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`
		SELECT jti, exp_unix_ms FROM revoked_tokens WHERE version > $1 AND version <= $2 AND exp_unix_ms > $3`),
		since, version, unixMS(now))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read revoked tokens: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t revokedToken
		var exp int64
		if err := rows.Scan(&t.JTI, &exp); err != nil {
			return 0, nil, nil, fmt.Errorf("read revoked tokens: %w", err)
		}
		t.Exp = (exp + 999) / 1000
		toks = append(toks, t)
	}
	if err := rows.Err(); err != nil {
		return 0, nil, nil, fmt.Errorf("read revoked tokens: %w", err)
	}
	srows, err := s.db.QueryContext(ctx, s.db.Rebind(`
		SELECT subject, not_before_unix_ms, until_unix_ms FROM revoked_subjects WHERE version > $1 AND version <= $2 AND until_unix_ms > $3`),
		since, version, unixMS(now))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read revoked subjects: %w", err)
	}
	defer srows.Close()
	for srows.Next() {
		var r revokedSubject
		var nb, until int64
		if err := srows.Scan(&r.Sub, &nb, &until); err != nil {
			return 0, nil, nil, fmt.Errorf("read revoked subjects: %w", err)
		}
		r.NotBefore, r.Until = nb/1000, (until+999)/1000
		subs = append(subs, r)
	}
	if err := srows.Err(); err != nil {
		return 0, nil, nil, fmt.Errorf("read revoked subjects: %w", err)
	}
	return version, toks, subs, nil
}

// prune deletes what can no longer matter at now: expired access token
// records and revocations, refresh tokens and sessions past their
// absolute lifetime.
func (s sessions) prune(ctx context.Context, now time.Time, absolute time.Duration) error {
	cut := unixMS(now)
	for _, q := range []struct {
		sql string
		arg int64
	}{
		{`DELETE FROM revoked_tokens WHERE exp_unix_ms <= $1`, cut - time.Hour.Milliseconds()},
		{`DELETE FROM revoked_subjects WHERE until_unix_ms <= $1`, cut - time.Hour.Milliseconds()},
		{`DELETE FROM access_tokens WHERE exp_unix_ms <= $1`, cut - time.Hour.Milliseconds()},
		{`DELETE FROM sessions WHERE created_unix_ms <= $1`, cut - absolute.Milliseconds() - time.Hour.Milliseconds()},
	} {
		if _, err := s.db.ExecContext(ctx, s.db.Rebind(q.sql), q.arg); err != nil {
			return fmt.Errorf("prune sessions: %w", err)
		}
	}
	return nil
}
