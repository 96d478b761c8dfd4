package dpop

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tollgate-dev/tollgate/internal/store"
)

// SQLReplay is a ReplayStore in PostgreSQL, shared by every replica that
// uses the same database, so a proof accepted by one is refused by all.
// Each Claim is one INSERT; expired rows are deleted in the background.
type SQLReplay struct {
	db *store.DB
}

// replayLockID serialises the table's creation among replicas that start
// at once.
const replayLockID = 7_468_413_322

// OpenSQLReplay connects to dsn (a postgres:// URL), creates the table if
// it is missing, and deletes expired rows every sweep until ctx ends.
func OpenSQLReplay(ctx context.Context, dsn string, sweep time.Duration) (*SQLReplay, error) {
	if !store.IsPostgres(dsn) {
		return nil, errors.New("dpop: the shared replay store needs a postgres:// URL")
	}
	db, err := store.Open(ctx, dsn, nil)
	if err != nil {
		return nil, fmt.Errorf("dpop replay store: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err == nil {
		_, err = tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, replayLockID)
		if err == nil {
			_, err = tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS tollgate_dpop_proofs (
				key BYTEA PRIMARY KEY,
				expires_at TIMESTAMPTZ NOT NULL)`)
		}
		if err == nil {
			_, err = tx.ExecContext(ctx, `CREATE INDEX IF NOT EXISTS tollgate_dpop_proofs_expires ON tollgate_dpop_proofs (expires_at)`)
		}
		if err == nil {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("dpop replay store: create table: %w", err)
	}
	r := &SQLReplay{db: db}
	go r.sweep(ctx, sweep)
	return r, nil
}

// Claim implements ReplayStore: the row is inserted, or an expired row
// with the same key is taken over; a live row makes it a replay.
func (r *SQLReplay) Claim(ctx context.Context, key [32]byte, until time.Time) (bool, error) {
	res, err := r.db.ExecContext(ctx, `INSERT INTO tollgate_dpop_proofs (key, expires_at) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
		WHERE tollgate_dpop_proofs.expires_at <= now()`, key[:], until)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Ping reports whether the database answers, for readiness.
func (r *SQLReplay) Ping(ctx context.Context) error { return r.db.PingContext(ctx) }

func (r *SQLReplay) sweep(ctx context.Context, every time.Duration) {
	defer r.db.Close()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.db.ExecContext(ctx, `DELETE FROM tollgate_dpop_proofs WHERE expires_at <= now()`)
		}
	}
}
