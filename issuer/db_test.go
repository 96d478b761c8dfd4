package issuer

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/tollgate-dev/tollgate/internal/store"
)

// openStore opens a migrated issuer database of the dialect.
func openStore(t *testing.T, dsn string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), dsn, Migrations())
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestUserStore(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			db := openStore(t, d.dsn(t))
			us := users{db}
			created := time.Date(2030, 1, 2, 3, 4, 5, 678_000_000, time.UTC)
			u := user{publicID: uuid.NewString(), name: "Alain", passwordHash: "h1", created: created}
			if err := us.create(ctx, &u); err != nil {
				t.Fatalf("create: %v", err)
			}
			if u.id == 0 {
				t.Error("create did not set the id")
			}
			got, err := us.byName(ctx, "aLaIn")
			if err != nil {
				t.Fatalf("byName: %v", err)
			}
			if diff := cmp.Diff(u, got, cmp.AllowUnexported(user{})); diff != "" {
				t.Errorf("byName (-want +got):\n%s", diff)
			}
			if _, err := us.byName(ctx, "nobody"); err != errNotFound {
				t.Errorf("byName(nobody) = %v, want errNotFound", err)
			}
			if ok, err := us.exists(ctx, "ALAIN"); !ok || err != nil {
				t.Errorf("exists(ALAIN) = %v, %v; want true", ok, err)
			}
			// replaceHash is a compare-and-swap.
			if ok, err := us.replaceHash(ctx, u.id, "stale", "h2"); ok || err != nil {
				t.Errorf("replaceHash(stale old hash) = %v, %v; want false", ok, err)
			}
			if ok, err := us.replaceHash(ctx, u.id, "h1", "h2"); !ok || err != nil {
				t.Errorf("replaceHash(h1 -> h2) = %v, %v; want true", ok, err)
			}
			// setPassword creates, then resets without a second row.
			if err := us.setPassword(ctx, "root", uuid.NewString(), "r1", created); err != nil {
				t.Fatal(err)
			}
			first, _ := us.byName(ctx, "root")
			if err := us.setPassword(ctx, "ROOT", uuid.NewString(), "r2", created.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			second, _ := us.byName(ctx, "root")
			if second.passwordHash != "r2" || second.publicID != first.publicID || !second.created.Equal(first.created) || second.name != "root" {
				t.Errorf("after reset: %+v, want the same user %+v with hash r2", second, first)
			}
			list, err := us.list(ctx, "", 10)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, u := range list {
				names = append(names, u.name)
				if u.passwordHash != "" {
					t.Errorf("list returned a hash for %s", u.name)
				}
			}
			if diff := cmp.Diff([]string{"Alain", "root"}, names); diff != "" {
				t.Errorf("list (-want +got):\n%s", diff)
			}
		})
	}
}

func TestKeyStore(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			ks := keyRows{openStore(t, d.dsn(t))}
			seen := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			row := keyRow{kid: "k1", alg: "ES256", publicJWK: `{"kty":"EC"}`, firstSeen: seen}
			if err := ks.add(ctx, row); err != nil {
				t.Fatal(err)
			}
			// A second sighting (another replica, a restart) keeps the first time.
			later := row
			later.firstSeen = seen.Add(time.Hour)
			if err := ks.add(ctx, later); err != nil {
				t.Fatal(err)
			}
			until := seen.Add(45 * time.Minute)
			if err := ks.extendSignedUntil(ctx, "k1", until); err != nil {
				t.Fatal(err)
			}
			if err := ks.extendSignedUntil(ctx, "k1", until.Add(-time.Minute)); err != nil { // never lowers
				t.Fatal(err)
			}
			rows, err := ks.all(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := []keyRow{{kid: "k1", alg: "ES256", publicJWK: `{"kty":"EC"}`, firstSeen: seen, signedUntil: until}}
			if diff := cmp.Diff(want, rows, cmp.AllowUnexported(keyRow{})); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
			if err := ks.remove(ctx, "k1"); err != nil {
				t.Fatal(err)
			}
			if rows, _ := ks.all(ctx); len(rows) != 0 {
				t.Errorf("rows after remove = %v, want none", rows)
			}
		})
	}
}
