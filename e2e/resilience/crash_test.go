package resilience

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver, for the integrity check

	"github.com/tollgate-dev/tollgate/internal/pgtest"
)

// TestCrashDurability kills the issuer and books with SIGKILL, both at
// once, in the middle of a stream of registrations, book creations and
// deletions through the gateway, several times, restarting them each
// time. Afterwards every write that got a 2xx must be there (a created
// book with exactly what was sent, a deleted one gone), a write that got
// an error must be there whole or not at all, and the databases must
// open cleanly (restart, and SQLite's integrity check).
func TestCrashDurability(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		crashDurability(t, "SQLite", Config{Bin: tollgateBin(t), Dir: t.TempDir()})
	})
	t.Run("postgres", func(t *testing.T) {
		crashDurability(t, "PostgreSQL", Config{Bin: tollgateBin(t), Dir: t.TempDir(), IssuerDB: pgtest.URL(t), BooksDB: pgtest.URL(t)})
	})
}

// write is one write the load sent, and what came back.
type write struct {
	kind   string // "register", "create", "delete"
	user   *User
	book   BookInput
	id     int64 // the created book's id, or the deleted one's
	status int   // 0: no answer
}

func (w *write) acked() bool     { return w.status >= 200 && w.status < 300 }
func (w *write) ambiguous() bool { return w.status == 0 || w.status >= 500 }

func crashDurability(t *testing.T, db string, cfg Config) {
	cfg.TokenTTL = 30 * time.Minute
	s := StartStack(t, cfg)
	keys := &Keys{Bound: s.RefreshBound(), Leeway: s.Config.Leeway}
	pop := newPopulation(t, s, 3, keys)
	ctx := context.Background()
	crashes := pick(2, 10)

	var mu sync.Mutex
	var writes []*write
	var live []*write // acknowledged creates not yet chosen for deletion
	seq := 0
	record := func(w *write) func(Result) {
		return func(r Result) {
			mu.Lock()
			defer mu.Unlock()
			w.status = r.Status
			if w.kind == "create" && w.acked() {
				var b struct {
					ID int64 `json:"id"`
				}
				if err := json.Unmarshal(r.Body, &b); err != nil || b.ID == 0 {
					t.Errorf("POST /books = %d with body %q: no id", r.Status, r.Body)
				}
				w.id = b.ID
				live = append(live, w)
			}
			writes = append(writes, w)
		}
	}
	d := &Driver{
		Workers:     pick(4, 8),
		MaxRequests: pick(300000, 3000000),
		Duration:    pick(90*time.Second, 10*time.Minute),
		Next: func(int) *Request {
			mu.Lock()
			defer mu.Unlock()
			seq++
			n := rand.IntN(100)
			switch {
			case n < 20:
				u := NewUser(fmt.Sprintf("crash%d", seq))
				w := &write{kind: "register", user: u}
				req, _ := http.NewRequest(http.MethodPost, s.URL+"/register", jsonBody(map[string]string{"name": u.Name, "password": u.Password}))
				req.Header.Set("Content-Type", "application/json")
				return &Request{Kind: "register", HTTP: req, Done: record(w)}
			case n < 35 && len(live) > 0:
				i := rand.IntN(len(live))
				c := live[i]
				live = append(live[:i], live[i+1:]...)
				w := &write{kind: "delete", user: c.user, id: c.id}
				req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("%s/books/%d", s.URL, c.id), nil)
				tok := pop.tokenOf(c.user)
				req.Header.Set("Authorization", "Bearer "+tok.Raw)
				return &Request{Kind: "delete", HTTP: req, Done: record(w), Expect: func(sent, done time.Time) Expect { return keys.Expect(tok, sent, done) }}
			default:
				u := pop.victim()
				tok := pop.tokenOf(u)
				w := &write{kind: "create", user: u, book: NewBookInput(seq)}
				req, _ := http.NewRequest(http.MethodPost, s.URL+"/books", jsonBody(w.book))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+tok.Raw)
				return &Request{Kind: "create", HTTP: req, Done: record(w), Expect: func(sent, done time.Time) Expect { return keys.Expect(tok, sent, done) }}
			}
		},
	}
	use := sampleUsage(t, s)
	d.SetPhase("load")
	d.Start(ctx)
	var recovery time.Duration
	for i := range crashes {
		sleep(ctx, pick(time.Duration(500+rand.IntN(1500)), time.Duration(1000+rand.IntN(4000)))*time.Millisecond)
		var wg sync.WaitGroup
		for _, p := range []*Proc{s.Issuer, s.Books} {
			wg.Go(func() {
				if err := p.Kill(); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		d.SetPhase("down")
		sleep(ctx, 200*time.Millisecond)
		start := time.Now()
		for _, p := range []*Proc{s.Issuer, s.Books} {
			wg.Go(func() {
				if err := p.Start(ctx); err != nil {
					t.Errorf("restart %d: %v", i+1, err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			d.Stop()
			return
		}
		recovery = max(recovery, time.Since(start))
		d.SetPhase("load")
	}
	sleep(ctx, time.Second)
	tally := d.Stop()
	t.Logf("tally:\n%s", tally)

	mu.Lock()
	defer mu.Unlock()
	lost, half := verifyWrites(t, s, writes)
	counts := map[string]map[string]int{}
	for _, w := range writes {
		if counts[w.kind] == nil {
			counts[w.kind] = map[string]int{}
		}
		switch {
		case w.acked():
			counts[w.kind]["acked"]++
		case w.ambiguous():
			counts[w.kind]["error"]++
		default:
			counts[w.kind]["refused"]++
		}
	}
	t.Logf("%d crashes; writes %v; %d lost, %d half done; restart to ready %v", crashes, counts, lost, half, recovery.Round(time.Millisecond))
	if lost != 0 || half != 0 {
		t.Errorf("%d acknowledged writes lost and %d writes half done, want none", lost, half)
	}
	for _, kind := range []string{"register", "create", "delete"} {
		if counts[kind]["acked"] == 0 {
			t.Errorf("no %s was acknowledged; the scenario did not write", kind)
		}
	}
	if counts["create"]["error"]+counts["register"]["error"] == 0 {
		t.Errorf("no write failed; the crashes did not hit the stream")
	}
	if n := tally.Wrong(Filter{}); n != 0 {
		t.Errorf("%d wrong decisions, want 0", n)
	}
	use.check(t)
	noCrashes(t, s)

	// The databases open cleanly after a last graceful stop, too.
	for _, p := range []*Proc{s.Issuer, s.Books} {
		if err := p.Term(); err != nil {
			t.Error(err)
		}
	}
	if cfg.IssuerDB == "" {
		for _, f := range []string{"issuer.db", "books.db"} {
			if err := integrityCheck(filepath.Join(s.Config.Dir, f)); err != nil {
				t.Error(err)
			}
		}
	}
	report.Add(Row{
		Scenario:   fmt.Sprintf("Crash durability on %s (%d × kill -9 of issuer and books mid-write)", db, crashes),
		Workers:    d.Workers,
		Rate:       tally.Rate(),
		Duration:   tally.Elapsed,
		Requests:   tally.Requests(Filter{}),
		Wrong:      tally.Wrong(Filter{}),
		LostWrites: lost + half,
		Recovery:   recovery,
		Command:    command("TestCrashDurability/" + map[string]string{"SQLite": "sqlite", "PostgreSQL": "postgres"}[db]),
		Failed:     t.Failed(),
	})
}

// verifyWrites compares what the issuer and books hold with the writes
// sent: it returns the acknowledged writes that are missing (or, for a
// deletion, undone) and the writes found half done.
func verifyWrites(t *testing.T, s *Stack, writes []*write) (lost, half int) {
	t.Helper()
	ctx := context.Background()
	users, err := NewAPIClient("http://" + s.IssuerAddr).ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	userByName := map[string]ListedUser{}
	for _, u := range users {
		userByName[u.Name] = u
	}
	all, err := NewAPIClient("http://" + s.BooksAddr).ListAllBooks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type stored struct {
		BookInput
		id    int64
		owner string
	}
	bookByName := map[string]stored{}
	for _, b := range all {
		bookByName[b.Name] = stored{BookInput{b.Name, b.Author, b.Publisher, b.BookPrize}, b.ID, b.OwnerID}
	}
	deleted := map[int64]*write{}
	for _, w := range writes {
		if w.kind == "delete" {
			deleted[w.id] = w
		}
	}
	issuerDirect := NewAPIClient("http://" + s.IssuerAddr)
	for _, w := range writes {
		switch w.kind {
		case "register":
			got, present := userByName[w.user.Name]
			switch {
			case w.acked() && !present:
				t.Errorf("registration of %s got %d but the user is gone", w.user.Name, w.status)
				lost++
			case !w.acked() && !w.ambiguous() && present:
				t.Errorf("registration of %s was refused with %d but the user exists", w.user.Name, w.status)
				half++
			case present:
				// Whole: the password works and the id is the one listed.
				tok, err := issuerDirect.Login(ctx, w.user)
				if err != nil || tok.Sub != got.ID {
					t.Errorf("user %s (registration answered %d) is listed but cannot log in: %v", w.user.Name, w.status, err)
					half++
				}
			}
		case "create":
			got, present := bookByName[w.book.Name]
			var del *write
			if w.acked() {
				del = deleted[w.id]
			}
			switch {
			case !w.acked() && !w.ambiguous():
				if present {
					t.Errorf("book %q was refused with %d but exists", w.book.Name, w.status)
					half++
				}
			case w.acked() && del == nil && !present:
				t.Errorf("book %q got %d (id %d) but is gone", w.book.Name, w.status, w.id)
				lost++
			case w.acked() && del != nil && del.status == http.StatusNotFound:
				t.Errorf("book %q got %d (id %d) but its deletion found nothing", w.book.Name, w.status, w.id)
				lost++
			case w.acked() && del != nil && del.acked() && present:
				t.Errorf("book %d was deleted (%d) but is back", w.id, del.status)
				lost++
			}
			// Otherwise (an error on the creation or the deletion) the
			// book may or may not be there, but only whole.
			if present {
				if got.BookInput != w.book || got.owner != w.user.ID || (w.acked() && got.id != w.id) {
					t.Errorf("book %q is stored as %+v (id %d, owner %s), want %+v (id %d, owner %s)", w.book.Name, got.BookInput, got.id, got.owner, w.book, w.id, w.user.ID)
					half++
				}
				delete(bookByName, w.book.Name)
			}
		}
	}
	for name, b := range bookByName {
		t.Errorf("book %q (id %d) exists but was never written", name, b.id)
		half++
	}
	return lost, half
}

// integrityCheck runs SQLite's integrity check on the database at path.
func integrityCheck(path string) error {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return err
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil {
		return fmt.Errorf("integrity check of %s: %w", path, err)
	}
	if res != "ok" {
		return fmt.Errorf("integrity check of %s: %s", path, res)
	}
	return nil
}
