package books

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
)

// TestConcurrentCreatesAndDeletes races creators against deleters, with
// several deleters per book: no create may be lost, and each book must
// be deleted exactly once (one 204, every other attempt a 404).
func TestConcurrentCreatesAndDeletes(t *testing.T) {
	const (
		users           = 4
		creators        = 8
		perCreator      = 15
		doomed          = 40
		deletersPerBook = 3
	)
	user := func(i int) string { return "user-" + strconv.Itoa(i%users) }
	forEachDialect(t, func(t *testing.T, ts *testService) {
		// Books that will be deleted while others are being created.
		var victims []Book
		for i := range doomed {
			b := ts.createNamed(t, user(i), fmt.Sprintf("doomed %d", i))
			b.OwnerID = user(i)
			victims = append(victims, b)
		}

		start := make(chan struct{})
		var wg sync.WaitGroup

		var mu sync.Mutex
		created := map[string][]int64{} // user -> ids
		for c := range creators {
			wg.Go(func() {
				<-start
				for i := range perCreator {
					u := user(c)
					r := request{method: "POST", path: "/books", user: u, body: fmt.Sprintf(`{"name":"c%d-%d"}`, c, i)}
					resp := ts.do(t, r)
					if resp.status != http.StatusCreated {
						t.Errorf("concurrent %v = %d %s, want 201", r, resp.status, resp.body)
						continue
					}
					b := decode[Book](t, resp)
					mu.Lock()
					created[u] = append(created[u], b.ID)
					mu.Unlock()
				}
			})
		}

		deleted := make([][]int, len(victims)) // per victim: statuses seen
		for v, b := range victims {
			for range deletersPerBook {
				wg.Go(func() {
					<-start
					r := request{method: "DELETE", path: "/books/" + strconv.FormatInt(b.ID, 10), user: b.OwnerID}
					resp := ts.do(t, r)
					mu.Lock()
					deleted[v] = append(deleted[v], resp.status)
					mu.Unlock()
				})
			}
		}
		close(start)
		wg.Wait()

		for v, statuses := range deleted {
			slices.Sort(statuses)
			want := []int{204}
			for range deletersPerBook - 1 {
				want = append(want, 404)
			}
			if !slices.Equal(statuses, want) {
				t.Errorf("racing DELETEs of book %d answered %v, want exactly one 204 and the rest 404: %v", victims[v].ID, statuses, want)
			}
		}

		total := 0
		seen := map[int64]bool{}
		for u := range users {
			name := user(u)
			want := created[name]
			slices.Sort(want)
			var got []int64
			for _, b := range ts.listAll(t, name, "", "", 7) {
				got = append(got, b.ID)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s lists ids %v, want exactly the %d created: %v", name, got, len(want), want)
			}
			for _, id := range want {
				if seen[id] {
					t.Errorf("id %d was handed out twice", id)
				}
				seen[id] = true
			}
			total += len(want)
		}
		if total != creators*perCreator {
			t.Errorf("%d creates succeeded, want %d", total, creators*perCreator)
		}
		if n := ts.count(t); n != creators*perCreator {
			t.Errorf("database holds %d books, want %d", n, creators*perCreator)
		}
	})
}

// TestConcurrentPatchesOfDifferentFields checks that PATCHes racing on
// one book never undo each other: each writes only its own field.
func TestConcurrentPatchesOfDifferentFields(t *testing.T) {
	const rounds = 20
	forEachDialect(t, func(t *testing.T, ts *testService) {
		b := ts.create(t, "alice", `{"name":"n","author":"a0","publisher":"p0","book_prize":0}`)
		path := "/books/" + strconv.FormatInt(b.ID, 10)
		var wg sync.WaitGroup
		start := make(chan struct{})
		// Each field has its own writer, writing increasing values; the
		// last value each writer wrote must be the one that stays.
		for _, field := range []string{"author", "publisher", "book_prize"} {
			wg.Go(func() {
				<-start
				for i := 1; i <= rounds; i++ {
					v := strconv.Quote(field[:1] + strconv.Itoa(i))
					if field == "book_prize" {
						v = strconv.Itoa(i)
					}
					r := request{method: "PATCH", path: path, user: "alice", body: `{"` + field + `":` + v + `}`}
					if resp := ts.do(t, r); resp.status != http.StatusOK {
						t.Errorf("concurrent %v = %d %s, want 200", r, resp.status, resp.body)
					}
				}
			})
		}
		close(start)
		wg.Wait()
		got := decode[Book](t, ts.must(t, request{method: "GET", path: path, user: "alice"}, http.StatusOK))
		wantAuthor, wantPublisher := "a"+strconv.Itoa(rounds), "p"+strconv.Itoa(rounds)
		if got.Author != wantAuthor || got.Publisher != wantPublisher || got.BookPrize != rounds {
			t.Errorf("after racing PATCHes book = %q, %q, %d; want %q, %q, %d (no lost update)",
				got.Author, got.Publisher, got.BookPrize, wantAuthor, wantPublisher, rounds)
		}
	})
}
