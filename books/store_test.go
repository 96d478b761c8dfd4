package books

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/internal/store"
)

// TestStoreKeepsOwnersApart calls the store directly: even a handler
// that forgot a check could not reach another owner's book through it.
func TestStoreKeepsOwnersApart(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		ctx := context.Background()
		st := ts.books
		f := fields{Name: "n", Author: "a", Publisher: "p", BookPrize: 3}
		b, err := st.create(ctx, "alice", f)
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		name := "changed"
		for _, tc := range []struct {
			op  string
			err error
		}{
			{"get", func() error { _, err := st.get(ctx, "bob", b.ID); return err }()},
			{"replace", func() error { _, err := st.replace(ctx, "bob", b.ID, f); return err }()},
			{"update", func() error { _, err := st.update(ctx, "bob", b.ID, patch{Name: &name}); return err }()},
			{"empty update", func() error { _, err := st.update(ctx, "bob", b.ID, patch{}); return err }()},
			{"delete", st.delete(ctx, "bob", b.ID)},
		} {
			if !errors.Is(tc.err, errNotFound) {
				t.Errorf("%s(bob, alice's book) = %v, want errNotFound", tc.op, tc.err)
			}
		}
		got, err := st.get(ctx, "alice", b.ID)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if diff := cmp.Diff(b, got); diff != "" {
			t.Errorf("alice's book changed (-before +after):\n%s", diff)
		}
		if books, err := st.list(ctx, listQuery{owner: "bob", limit: 10}); err != nil || len(books) != 0 {
			t.Errorf("list(bob) = %v, %v; want no books", books, err)
		}
	})
}

// TestStoreTimestampsRoundTrip checks that times read back exactly as
// written, to the microsecond, in UTC, on both databases.
func TestStoreTimestampsRoundTrip(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		ctx := context.Background()
		st := ts.books.(*sqlStore)
		at := time.Date(2031, 12, 31, 23, 59, 58, 999999999, time.FixedZone("X", 5*3600))
		st.now = func() time.Time { return at }
		b, err := st.create(ctx, "alice", fields{Name: "n"})
		if err != nil {
			t.Fatal(err)
		}
		want := at.UTC().Truncate(time.Microsecond)
		got, err := st.get(ctx, "alice", b.ID)
		if err != nil {
			t.Fatal(err)
		}
		for name, v := range map[string]time.Time{"created_at": b.CreatedAt, "updated_at": b.UpdatedAt, "stored created_at": got.CreatedAt} {
			if !v.Equal(want) || v.Location() != time.UTC {
				t.Errorf("%s = %v, want %v in UTC", name, v, want)
			}
		}
		if ts.db.Dialect == store.SQLite {
			// Stored as text SQLite's own date functions understand.
			var unix int64
			if err := ts.db.QueryRowContext(ctx, `SELECT unixepoch(created_at) FROM books WHERE id = ?`, b.ID).Scan(&unix); err != nil {
				t.Fatalf("unixepoch(created_at): %v", err)
			}
			if unix != want.Unix() {
				t.Errorf("SQLite reads created_at as %d, want %d", unix, want.Unix())
			}
		}
	})
}

// TestCursorsWorkAcrossReplicas opens two services on one database, as
// two replicas behind a load balancer: a cursor from one works on the
// other, and a service on another database refuses it.
func TestCursorsWorkAcrossReplicas(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			dsn := d.dsn(t)
			a := newTestService(t, dsn)
			b := newTestService(t, dsn)
			for range 3 {
				a.createNamed(t, "alice", "x")
			}
			l := decode[List](t, a.must(t, request{method: "GET", path: "/books?limit=1", user: "alice"}, http.StatusOK))
			next := decode[List](t, b.must(t, request{method: "GET", path: "/books?limit=1&cursor=" + l.NextCursor, user: "alice"}, http.StatusOK))
			if len(next.Books) != 1 || next.Books[0].ID <= l.Books[0].ID {
				t.Errorf("replica's second page = %+v, want the book after %d", next.Books, l.Books[0].ID)
			}
			other := newTestService(t, d.dsn(t))
			other.createNamed(t, "alice", "x")
			other.must(t, request{method: "GET", path: "/books?limit=1&cursor=" + l.NextCursor, user: "alice"}, http.StatusBadRequest)
		})
	}
}

func TestSecretIsCreatedOnce(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		ctx := context.Background()
		first, err := secret(ctx, ts.db, "test", 32)
		if err != nil {
			t.Fatal(err)
		}
		again, err := secret(ctx, ts.db, "test", 32)
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(first, again) || len(first) != 32 {
			t.Errorf("secret twice = %x then %x; want the same 32 bytes", first, again)
		}
		other, err := secret(ctx, ts.db, "other", 32)
		if err != nil {
			t.Fatal(err)
		}
		if cmp.Equal(first, other) {
			t.Error("two secrets have the same value")
		}
	})
}

func TestCursorCodec(t *testing.T) {
	c := cursorCodec{key: []byte("0123456789abcdef0123456789abcdef")}
	for _, after := range []int64{0, 1, 127, 128, 1 << 40, 1<<63 - 1} {
		s := c.encode("user\x00alice", after)
		if len(s) > maxCursorLen {
			t.Errorf("encode(%d) = %q, longer than %d", after, s, maxCursorLen)
		}
		got, err := c.decode("user\x00alice", s)
		if err != nil || got != after {
			t.Errorf("decode(encode(%d)) = %d, %v; want %d", after, got, err, after)
		}
		if _, err := c.decode("user\x00bob", s); !errors.Is(err, errBadCursor) {
			t.Errorf("decode(alice's cursor for %d) as bob = %v, want errBadCursor", after, err)
		}
		other := cursorCodec{key: []byte("another key, as on another database")}
		if _, err := other.decode("user\x00alice", s); !errors.Is(err, errBadCursor) {
			t.Errorf("decode with another key = %v, want errBadCursor", err)
		}
	}
}
