// Package store opens the SQL database a service keeps its data in:
// SQLite (a file, pure-Go driver, WAL) by default, PostgreSQL when given a
// postgres:// URL, with the service's embedded migrations applied at
// open.
//
// Queries are written once with PostgreSQL's $1 placeholders and bound
// parameters; Rebind adapts them for SQLite. Nothing here ever builds SQL
// from client input.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
)

// Dialect names the SQL dialect of a DB.
type Dialect string

// The dialects a DB can speak.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is an open database with its dialect.
type DB struct {
	*sql.DB
	Dialect Dialect
}

// IsPostgres reports whether dsn names a PostgreSQL database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open opens dsn (a postgres:// URL, or a SQLite file path, whose
// directory is created) and applies the migrations in migrations: the
// files sqlite/NNN_name.sql or postgres/NNN_name.sql, in order, each once,
// each in its own transaction.
func Open(ctx context.Context, dsn string, migrations fs.FS) (*DB, error) {
	db, err := open(dsn)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s database: %w", db.Dialect, err)
	}
	if migrations != nil {
		if err := db.migrate(ctx, migrations); err != nil {
			db.Close()
			return nil, err
		}
	}
	return db, nil
}

func open(dsn string) (*DB, error) {
	if IsPostgres(dsn) {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		db.SetMaxOpenConns(20)
		db.SetMaxIdleConns(10)
		db.SetConnMaxIdleTime(5 * time.Minute)
		return &DB{DB: db, Dialect: Postgres}, nil
	}
	if dsn == "" {
		return nil, errors.New("open sqlite: empty database path")
	}
	if dir := filepath.Dir(dsn); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open sqlite: create %s: %w", dir, err)
		}
	}
	// WAL lets readers run beside the writer; synchronous(FULL) makes a
	// commit durable once it returns, even across a power loss; an
	// immediate transaction lock avoids upgrade deadlocks between writers.
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+dsn+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", dsn, err)
	}
	db.SetMaxOpenConns(8)
	return &DB{DB: db, Dialect: SQLite}, nil
}

var placeholder = regexp.MustCompile(`\$(\d+)`)

// Rebind rewrites a query written with $1, $2 ... for db's dialect.
func (db *DB) Rebind(query string) string {
	if db.Dialect == Postgres {
		return query
	}
	return placeholder.ReplaceAllString(query, "?$1")
}

// migrationLockID is the PostgreSQL advisory lock that serialises
// migrations when several replicas start at once.
const migrationLockID = 7_468_413_321

func (db *DB) migrate(ctx context.Context, migrations fs.FS) error {
	dir := string(db.Dialect)
	entries, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return fmt.Errorf("read %s migrations: %w", dir, err)
	}
	type step struct {
		version int
		name    string
	}
	var steps []step
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return fmt.Errorf("migration %s: name must start with a number and an underscore", e.Name())
		}
		steps = append(steps, step{v, e.Name()})
	}
	slices.SortFunc(steps, func(a, b step) int { return a.version - b.version })

	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close()
	if db.Dialect == Postgres {
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLockID); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLockID)
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	for _, s := range steps {
		var n int
		if err := conn.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = $1`), s.version).Scan(&n); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if n > 0 {
			continue
		}
		body, err := fs.ReadFile(migrations, dir+"/"+s.name)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", s.name, err)
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s: %w", s.name, err)
		}
		if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`),
			s.version, s.name, time.Now().UTC().Format(time.RFC3339)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s: record: %w", s.name, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate %s: commit: %w", s.name, err)
		}
	}
	return nil
}

// Ping is a readiness check for the database.
func (db *DB) Ping(ctx context.Context) error { return db.PingContext(ctx) }
