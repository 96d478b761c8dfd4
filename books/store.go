package books

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/tollgate-dev/tollgate/internal/store"
)

//go:embed migrations
var migrationFiles embed.FS

// migrations holds sqlite/NNN_*.sql and postgres/NNN_*.sql for store.Open.
var migrations, _ = fs.Sub(migrationFiles, "migrations")

// errNotFound means no book with that id belongs to that owner. It is
// deliberately the same error whether the book is missing or someone
// else's.
var errNotFound = errors.New("book not found")

// listQuery selects one page of books in id order.
type listQuery struct {
	owner string // "" lists every owner's books (admin)
	after int64  // only ids greater than this
	limit int    // at most this many
}

// bookStore is what the handlers need from storage. Every method that
// takes an owner touches only that owner's books.
type bookStore interface {
	create(ctx context.Context, owner string, f fields) (Book, error)
	get(ctx context.Context, owner string, id int64) (Book, error)
	list(ctx context.Context, q listQuery) ([]Book, error)
	replace(ctx context.Context, owner string, id int64, f fields) (Book, error)
	update(ctx context.Context, owner string, id int64, p patch) (Book, error)
	delete(ctx context.Context, owner string, id int64) error
}

// sqlStore keeps books in SQLite or PostgreSQL. Every write is a single
// statement, so a request either changes a book completely or not at all,
// and concurrent PATCHes never lose each other's fields.
type sqlStore struct {
	db  *store.DB
	now func() time.Time
}

func newSQLStore(db *store.DB) *sqlStore {
	return &sqlStore{db: db, now: time.Now}
}

// sqliteTime is how SQLite stores times: text its date functions read,
// fixed-width so that text order is time order (times are always UTC).
const sqliteTime = "2006-01-02 15:04:05.000000-07:00"

// timestamp returns the current time as a query argument: UTC, to the
// microsecond (PostgreSQL's precision), so a book reads back exactly as
// it was written on either database.
func (s *sqlStore) timestamp() any {
	t := s.now().UTC().Truncate(time.Microsecond)
	if s.db.Dialect == store.SQLite {
		return t.Format(sqliteTime)
	}
	return t
}

const bookColumns = `id, owner_id, name, author, publisher, book_prize, created_at, updated_at`

type scanner interface{ Scan(dest ...any) error }

func scanBook(row scanner) (Book, error) {
	var b Book
	err := row.Scan(&b.ID, &b.OwnerID, &b.Name, &b.Author, &b.Publisher, &b.BookPrize, &b.CreatedAt, &b.UpdatedAt)
	if err != nil {
		return Book{}, err
	}
	b.CreatedAt = b.CreatedAt.UTC()
	b.UpdatedAt = b.UpdatedAt.UTC()
	return b, nil
}

// one runs a statement returning at most one book; no row is errNotFound.
func (s *sqlStore) one(ctx context.Context, op, query string, args ...any) (Book, error) {
	b, err := scanBook(s.db.QueryRowContext(ctx, s.db.Rebind(query), args...))
	if errors.Is(err, sql.ErrNoRows) {
		return Book{}, errNotFound
	}
	if err != nil {
		return Book{}, fmt.Errorf("%s book: %w", op, err)
	}
	return b, nil
}

func (s *sqlStore) create(ctx context.Context, owner string, f fields) (Book, error) {
	now := s.timestamp()
	return s.one(ctx, "create", `INSERT INTO books (owner_id, name, author, publisher, book_prize, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $6)
		RETURNING `+bookColumns,
		owner, f.Name, f.Author, f.Publisher, f.BookPrize, now)
}

func (s *sqlStore) get(ctx context.Context, owner string, id int64) (Book, error) {
	return s.one(ctx, "get", `SELECT `+bookColumns+` FROM books WHERE id = $1 AND owner_id = $2`, id, owner)
}

func (s *sqlStore) list(ctx context.Context, q listQuery) ([]Book, error) {
	var (
		rows *sql.Rows
		err  error
	)
	if q.owner == "" {
		rows, err = s.db.QueryContext(ctx, s.db.Rebind(`SELECT `+bookColumns+` FROM books
			WHERE id > $1 ORDER BY id LIMIT $2`), q.after, q.limit)
	} else {
		rows, err = s.db.QueryContext(ctx, s.db.Rebind(`SELECT `+bookColumns+` FROM books
			WHERE owner_id = $1 AND id > $2 ORDER BY id LIMIT $3`), q.owner, q.after, q.limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list books: %w", err)
	}
	defer rows.Close()
	books := []Book{}
	for rows.Next() {
		b, err := scanBook(rows)
		if err != nil {
			return nil, fmt.Errorf("list books: %w", err)
		}
		books = append(books, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list books: %w", err)
	}
	return books, nil
}

func (s *sqlStore) replace(ctx context.Context, owner string, id int64, f fields) (Book, error) {
	return s.one(ctx, "replace", `UPDATE books
		SET name = $3, author = $4, publisher = $5, book_prize = $6, updated_at = $7
		WHERE id = $1 AND owner_id = $2
		RETURNING `+bookColumns,
		id, owner, f.Name, f.Author, f.Publisher, f.BookPrize, s.timestamp())
}

// update applies p in one statement: a nil field keeps the stored value
// (COALESCE), so two concurrent PATCHes of different fields both land.
func (s *sqlStore) update(ctx context.Context, owner string, id int64, p patch) (Book, error) {
	if p.empty() {
		return s.get(ctx, owner, id)
	}
	return s.one(ctx, "update", `UPDATE books
		SET name = COALESCE($3, name), author = COALESCE($4, author),
			publisher = COALESCE($5, publisher), book_prize = COALESCE($6, book_prize),
			updated_at = $7
		WHERE id = $1 AND owner_id = $2
		RETURNING `+bookColumns,
		id, owner, p.Name, p.Author, p.Publisher, p.BookPrize, s.timestamp())
}

func (s *sqlStore) delete(ctx context.Context, owner string, id int64) error {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`DELETE FROM books WHERE id = $1 AND owner_id = $2`), id, owner)
	if err != nil {
		return fmt.Errorf("delete book: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("delete book: %w", err)
	}
	if n == 0 {
		return errNotFound
	}
	return nil
}

// secret returns the service-wide secret called name, creating it from
// size random bytes on first use. Replicas racing to create it all end
// up with the one that was stored first.
func secret(ctx context.Context, db *store.DB, name string, size int) ([]byte, error) {
	fresh := make([]byte, size)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO books_secrets (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO NOTHING`), name, hex.EncodeToString(fresh)); err != nil {
		return nil, fmt.Errorf("secret %s: store: %w", name, err)
	}
	var stored string
	if err := db.QueryRowContext(ctx, db.Rebind(`SELECT value FROM books_secrets WHERE name = $1`), name).Scan(&stored); err != nil {
		return nil, fmt.Errorf("secret %s: load: %w", name, err)
	}
	key, err := hex.DecodeString(stored)
	if err != nil || len(key) < size {
		return nil, fmt.Errorf("secret %s: stored value is not %d hex-encoded bytes", name, size)
	}
	return key, nil
}
