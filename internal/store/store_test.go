package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/pgtest"
	"github.com/tollgate-dev/tollgate/internal/store"
)

func TestOpenMigratesOnceOnBothDialects(t *testing.T) {
	for _, tc := range []struct {
		name string
		dsn  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "sub", "x.db") }},
		{"postgres", func(t *testing.T) string { return pgtest.URL(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := tc.dsn(t)
			migrations := os.DirFS("testdata/migrations")
			for i := range 2 { // the second open must not re-run 001
				db, err := store.Open(ctx, dsn, migrations)
				if err != nil {
					t.Fatalf("Open #%d: %v", i, err)
				}
				if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO items (name) VALUES ($1)`), "n"+string(rune('a'+i))); err != nil {
					t.Fatalf("insert #%d: %v", i, err)
				}
				var n int
				if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil || n != 1 {
					t.Fatalf("schema_migrations rows = %d, %v; want 1", n, err)
				}
				var items int
				if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM items`).Scan(&items); err != nil || items != i+1 {
					t.Fatalf("items after open #%d = %d, %v; want %d (data kept across opens)", i, items, err, i+1)
				}
				db.Close()
			}
		})
	}
}

func TestRebind(t *testing.T) {
	sq := &store.DB{Dialect: store.SQLite}
	if got, want := sq.Rebind("a = $1 AND b = $12"), "a = ?1 AND b = ?12"; got != want {
		t.Errorf("sqlite Rebind = %q, want %q", got, want)
	}
	pg := &store.DB{Dialect: store.Postgres}
	if got, want := pg.Rebind("a = $1"), "a = $1"; got != want {
		t.Errorf("postgres Rebind = %q, want %q", got, want)
	}
}
