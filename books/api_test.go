package books

import (
	"bytes"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fakeClock makes the store's timestamps predictable: each call returns
// a time one second after the previous one.
func (ts *testService) fakeClock(t *testing.T) {
	t.Helper()
	var mu sync.Mutex
	now := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	ts.books.(*sqlStore).now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	}
}

var ignoreServerFields = cmpopts.IgnoreFields(Book{}, "ID", "CreatedAt", "UpdatedAt")

func TestCreate(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		for _, tc := range []struct {
			name        string
			path        string
			body        string
			contentType string
			want        Book
		}{
			{"tutorial book1.json on POST /book", "/book", readFile(t, "book1.json"), "",
				Book{Name: "The Hobbit", Author: "J. R. R. Tolkien", Publisher: "George Allen & Unwin", BookPrize: 12}},
			{"tutorial book2.json on POST /books", "/books", readFile(t, "book2.json"), "",
				Book{Name: "Dune", Author: "Frank Herbert", Publisher: "Chilton Books", BookPrize: 20}},
			{"lower-case keys", "/books", `{"name":"n","author":"a","publisher":"p","book_prize":3}`, "",
				Book{Name: "n", Author: "a", Publisher: "p", BookPrize: 3}},
			{"upper-case keys", "/books", `{"NAME":"n","AUTHOR":"a","PUBLISHER":"p","BOOK_PRIZE":3}`, "",
				Book{Name: "n", Author: "a", Publisher: "p", BookPrize: 3}},
			{"name only gets defaults", "/books", `{"name":"Only a name"}`, "",
				Book{Name: "Only a name"}},
			{"nulls get defaults", "/books", `{"name":"n","author":null,"publisher":null,"book_prize":null}`, "",
				Book{Name: "n"}},
			{"white space trimmed", "/books", `{"name":"  Emma \t","author":" Jane Austen\n"}`, "",
				Book{Name: "Emma", Author: "Jane Austen"}},
			{"longest name in multi-byte characters", "/books", `{"name":"` + strings.Repeat("é", MaxNameLen) + `"}`, "",
				Book{Name: strings.Repeat("é", MaxNameLen)}},
			{"longest author and publisher", "/books",
				`{"name":"n","author":"` + strings.Repeat("a", MaxTextLen) + `","publisher":"` + strings.Repeat("p", MaxTextLen) + `"}`, "",
				Book{Name: "n", Author: strings.Repeat("a", MaxTextLen), Publisher: strings.Repeat("p", MaxTextLen)}},
			{"largest prize", "/books", `{"name":"n","book_prize":1000000000}`, "",
				Book{Name: "n", BookPrize: MaxBookPrize}},
			{"zero prize", "/books", `{"name":"n","book_prize":0}`, "", Book{Name: "n"}},
			{"json with charset", "/books", `{"name":"n"}`, "application/json; charset=utf-8", Book{Name: "n"}},
			{"no content type", "/books", `{"name":"n"}`, noContentType, Book{Name: "n"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := request{method: "POST", path: tc.path, user: "alice", body: tc.body, contentType: tc.contentType}
				resp := ts.do(t, r)
				if resp.status != http.StatusCreated {
					t.Fatalf("%v = %d %s, want 201", r, resp.status, resp.body)
				}
				got := decode[Book](t, resp)
				if diff := cmp.Diff(tc.want, got, ignoreServerFields); diff != "" {
					t.Errorf("%v: created book mismatch (-want +got):\n%s", r, diff)
				}
				if got.ID <= 0 || got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) {
					t.Errorf("%v: id %d, created_at %v, updated_at %v; want a positive id and equal, set timestamps", r, got.ID, got.CreatedAt, got.UpdatedAt)
				}
				if since := time.Since(got.CreatedAt); since < -time.Minute || since > time.Minute {
					t.Errorf("%v: created_at %v is not now", r, got.CreatedAt)
				}
				loc := resp.header.Get("Location")
				if want := "/books/" + strconv.FormatInt(got.ID, 10); loc != want {
					t.Errorf("%v: Location = %q, want %q", r, loc, want)
				}
				again := decode[Book](t, ts.must(t, request{method: "GET", path: loc, user: "alice"}, http.StatusOK))
				if diff := cmp.Diff(got, again); diff != "" {
					t.Errorf("GET %s differs from what POST returned (-post +get):\n%s", loc, diff)
				}
			})
		}
	})
}

func TestSameNameForTwoUsersAndTwice(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		a1 := ts.createNamed(t, "alice", "Emma")
		a2 := ts.createNamed(t, "alice", "Emma")
		b1 := ts.createNamed(t, "bob", "Emma")
		if a1.ID == a2.ID || a1.ID == b1.ID || a2.ID == b1.ID {
			t.Fatalf("ids %d, %d, %d are not distinct", a1.ID, a2.ID, b1.ID)
		}
		if got := ts.listAll(t, "alice", "", "", 10); len(got) != 2 {
			t.Errorf("alice has %d books, want 2", len(got))
		}
		if got := ts.listAll(t, "bob", "", "", 10); len(got) != 1 {
			t.Errorf("bob has %d books, want 1", len(got))
		}
	})
}

// badBodies are bodies refused by POST, PUT and PATCH alike, with the
// status and a part of the message each must get.
var badBodies = []struct {
	name, body, contentType string
	status                  int
	msg                     string
}{
	{"malformed JSON", `{"name": "x",`, "", 400, "not valid JSON"},
	{"empty body", ``, "application/json", 400, "body is empty"},
	{"white space only", "  \n", "", 400, "body is empty"},
	{"array", `[{"name":"x"}]`, "", 400, "must be a JSON object"},
	{"string", `"x"`, "", 400, "must be a JSON object"},
	{"null", `null`, "", 400, "must be a JSON object"},
	{"trailing data", `{"name":"x"} {}`, "", 400, "data after the JSON object"},
	{"unknown field", `{"name":"x","isbn":"123"}`, "", 400, `unknown field(s) "isbn"`},
	{"unknown field user_id", `{"name":"x","user_id":"bob"}`, "", 400, `unknown field(s) "user_id"`},
	{"id in body", `{"name":"x","id":7}`, "", 400, `unknown field(s) "id"`},
	{"duplicate field", `{"name":"x","name":"y"}`, "", 400, `"name" is given more than once`},
	{"duplicate field in other case", `{"name":"x","Author":"a","AUTHOR":"b"}`, "", 400, `"author" is given more than once`},
	{"name a number", `{"name":5}`, "", 400, `"name" must be a string, not a number`},
	{"author an object", `{"name":"x","author":{}}`, "", 400, `"author" must be a string, not an object`},
	{"publisher a bool", `{"name":"x","publisher":true}`, "", 400, `"publisher" must be a string, not true or false`},
	{"name an array", `{"name":["x"]}`, "", 400, `"name" must be a string, not an array`},
	{"prize a string", `{"name":"x","book_prize":"12"}`, "", 400, `"book_prize" must be a whole number, not a string`},
	{"prize a fraction", `{"name":"x","book_prize":12.5}`, "", 400, `"book_prize" must be a whole number, not 12.5`},
	{"prize with .0", `{"name":"x","book_prize":12.0}`, "", 400, `"book_prize" must be a whole number, not 12.0`},
	{"prize with exponent", `{"name":"x","book_prize":1e3}`, "", 400, `"book_prize" must be a whole number, not 1e3`},
	{"prize negative", `{"name":"x","book_prize":-1}`, "", 400, `"book_prize" must be between 0 and 1000000000`},
	{"prize too large", `{"name":"x","book_prize":1000000001}`, "", 400, `"book_prize" must be between 0 and 1000000000`},
	{"prize beyond int64", `{"name":"x","book_prize":99999999999999999999}`, "", 400, `"book_prize" must be between 0 and 1000000000`},
	{"prize far below int64", `{"name":"x","book_prize":-99999999999999999999}`, "", 400, `"book_prize" must be between 0 and 1000000000`},
	{"prize an array", `{"name":"x","book_prize":[1]}`, "", 400, `"book_prize" must be a whole number, not an array`},
	{"name empty", `{"name":""}`, "", 400, `"name" must not be empty`},
	{"name only spaces", `{"name":"   "}`, "", 400, `"name" must not be empty`},
	{"name null", `{"name":null}`, "", 400, `"name" is required`},
	{"name too long", `{"name":"` + strings.Repeat("x", MaxNameLen+1) + `"}`, "", 400, `"name" is 201 characters long; at most 200`},
	{"author too long", `{"name":"x","author":"` + strings.Repeat("é", MaxTextLen+1) + `"}`, "", 400, `"author" is 201 characters long`},
	{"publisher too long", `{"name":"x","publisher":"` + strings.Repeat("p", MaxTextLen+1) + `"}`, "", 400, `"publisher" is 201 characters long`},
	{"NUL in name", `{"name":"a\u0000b"}`, "", 400, `"name" must not contain control characters`},
	{"newline inside author", `{"name":"x","author":"a\nb"}`, "", 400, `"author" must not contain control characters`},
	{"escape in publisher", `{"name":"x","publisher":"a\u001bb"}`, "", 400, `"publisher" must not contain control characters`},
	{"invalid UTF-8", "{\"name\":\"\xff\xfe\"}", "", 400, "not valid UTF-8"},
	{"deeply nested", `{"name":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`, "", 400, `"name" must be a string, not an array`},
	{"too large", `{"name":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}`, "", 413, "larger than 16384 bytes"},
	{"text/plain", `{"name":"x"}`, "text/plain", 415, "Content-Type must be application/json"},
	{"form (curl -d without -H)", `{"name":"x"}`, "application/x-www-form-urlencoded", 415, "Content-Type must be application/json"},
	{"malformed content type", `{"name":"x"}`, "application/json; =", 415, "Content-Type must be application/json"},
	{"JSON Patch", `[{"op":"replace","path":"/name","value":"x"}]`, "application/json-patch+json", 415, "JSON Patch is not supported"},
}

func TestBadInputChangesNothing(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		orig := ts.create(t, "alice", readFile(t, "book1.json"))
		path := "/books/" + strconv.FormatInt(orig.ID, 10)
		type badCase struct {
			name, body, contentType string
			status                  int
			msg                     string
		}
		cases := map[string][]badCase{}
		for _, m := range []string{"POST /book", "POST /books", "PUT " + path, "PATCH " + path} {
			for _, b := range badBodies {
				cases[m] = append(cases[m], badCase(b))
			}
		}
		for _, m := range []string{"POST /book", "POST /books", "PUT " + path} {
			cases[m] = append(cases[m],
				badCase{"no name", `{"author":"a","publisher":"p","book_prize":1}`, "", 400, `"name" is required`},
				badCase{"empty object", `{}`, "", 400, `"name" is required`},
			)
		}
		for route, cs := range cases {
			method, target, _ := strings.Cut(route, " ")
			for _, tc := range cs {
				t.Run(route+"/"+tc.name, func(t *testing.T) {
					r := request{method: method, path: target, user: "alice", body: tc.body, contentType: tc.contentType}
					resp := ts.do(t, r)
					if resp.status != tc.status {
						t.Fatalf("%v (%s) = %d %s, want %d", r, tc.name, resp.status, resp.body, tc.status)
					}
					if msg := message(t, resp); !strings.Contains(msg, tc.msg) {
						t.Errorf("%v (%s) message = %q, want it to contain %q", r, tc.name, msg, tc.msg)
					}
				})
			}
		}
		if n := ts.count(t); n != 1 {
			t.Errorf("after only bad requests there are %d books, want the 1 created first", n)
		}
		got := decode[Book](t, ts.must(t, request{method: "GET", path: path, user: "alice"}, http.StatusOK))
		if diff := cmp.Diff(orig, got); diff != "" {
			t.Errorf("bad requests changed the book (-before +after):\n%s", diff)
		}
	})
}

func TestBodyLimitIsConfigurable(t *testing.T) {
	ts := newTestServiceConfig(t, func() Config { c := dbConfig(dialects[0].dsn(t)); c.MaxBodyBytes = 64; return c }())
	small := `{"name":"` + strings.Repeat("x", 40) + `"}`
	ts.must(t, request{method: "POST", path: "/books", user: "alice", body: small}, http.StatusCreated)
	big := `{"name":"` + strings.Repeat("x", 60) + `"}`
	resp := ts.must(t, request{method: "POST", path: "/books", user: "alice", body: big}, http.StatusRequestEntityTooLarge)
	if msg := message(t, resp); !strings.Contains(msg, "larger than 64 bytes") {
		t.Errorf("413 message = %q, want it to name the 64-byte limit", msg)
	}
	if n := ts.count(t); n != 1 {
		t.Errorf("books = %d, want 1", n)
	}
}

// allRoutes are every books route, with a path to a book when it takes one.
func allRoutes(id int64) []request {
	p := "/books/" + strconv.FormatInt(id, 10)
	return []request{
		{method: "POST", path: "/book", body: `{"name":"x"}`},
		{method: "POST", path: "/books", body: `{"name":"x"}`},
		{method: "GET", path: "/books"},
		{method: "GET", path: "/books?all=true", roles: "admin"},
		{method: "GET", path: p},
		{method: "PUT", path: p, body: `{"name":"x"}`},
		{method: "PATCH", path: p, body: `{"name":"x"}`},
		{method: "DELETE", path: p},
	}
}

func TestIdentityRequired(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		orig := ts.create(t, "alice", readFile(t, "book1.json"))
		for _, id := range []struct {
			name   string
			header http.Header
		}{
			{"no identity headers", nil},
			{"roles but no user", http.Header{"X-User-Roles": {"admin"}}},
			{"empty x-user-id", http.Header{"X-User-Id": {""}}},
			{"two x-user-id values", http.Header{"X-User-Id": {"alice", "bob"}}},
			{"x-user-id too long", http.Header{"X-User-Id": {strings.Repeat("a", maxUserIDLen+1)}}},
			{"x-user-id with a space", http.Header{"X-User-Id": {"alice smith"}}},
			{"x-user-id with a control character", http.Header{"X-User-Id": {"alice\x01"}}},
			{"x-user-id not ASCII", http.Header{"X-User-Id": {"alicé"}}},
		} {
			for _, r := range allRoutes(orig.ID) {
				r.roles = ""
				r.header = id.header
				t.Run(id.name+"/"+r.String(), func(t *testing.T) {
					resp := ts.do(t, r)
					if resp.status != http.StatusUnauthorized {
						t.Fatalf("%v (%s) = %d %s, want 401", r, id.name, resp.status, resp.body)
					}
					message(t, resp)
					if got := resp.header.Get("WWW-Authenticate"); got != `Bearer realm="tollgate"` {
						t.Errorf("%v (%s) WWW-Authenticate = %q, want a Bearer challenge", r, id.name, got)
					}
				})
			}
		}
		got := decode[Book](t, ts.must(t, request{method: "GET", path: "/books/" + strconv.FormatInt(orig.ID, 10), user: "alice"}, http.StatusOK))
		if diff := cmp.Diff(orig, got); diff != "" {
			t.Errorf("unauthenticated requests changed the book (-before +after):\n%s", diff)
		}
		if n := ts.count(t); n != 1 {
			t.Errorf("unauthenticated requests left %d books, want 1", n)
		}
		// The longest accepted identity.
		long := strings.Repeat("u", maxUserIDLen)
		ts.must(t, request{method: "GET", path: "/books", user: long}, http.StatusOK)
	})
}

// comparable404 is what must be identical between two 404s: the body
// and every header but the request id.
func comparable404(r response) string {
	h := r.header.Clone()
	h.Del("X-Request-Id")
	var buf bytes.Buffer
	h.Write(&buf)
	return fmt.Sprintf("%d\n%s\n%s", r.status, buf.String(), r.body)
}

func TestOtherUsersBooksAreInvisible(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		alices := ts.create(t, "alice", readFile(t, "book1.json"))
		bobs := ts.create(t, "bob", readFile(t, "book2.json"))
		deleted := ts.createNamed(t, "bob", "gone")
		ts.must(t, request{method: "DELETE", path: "/books/" + strconv.FormatInt(deleted.ID, 10), user: "bob"}, http.StatusNoContent)

		// The 404 bob gets for a book that never existed is the reference.
		ids := map[string]string{
			"alice's book":        strconv.FormatInt(alices.ID, 10),
			"a missing book":      "999999",
			"a deleted book":      strconv.FormatInt(deleted.ID, 10),
			"a non-numeric id":    "abc",
			"a zero id":           "0",
			"a negative id":       "-1",
			"a leading zero":      "0" + strconv.FormatInt(bobs.ID, 10),
			"a plus sign":         "+" + strconv.FormatInt(bobs.ID, 10),
			"a fraction":          strconv.FormatInt(bobs.ID, 10) + ".0",
			"an id beyond int64":  "9223372036854775808",
			"the largest int64":   "9223372036854775807",
			"an encoded id":       "%31",
			"a very long id":      strings.Repeat("9", 500),
			"white space around":  "%20" + strconv.FormatInt(bobs.ID, 10),
			"a hexadecimal id":    "0x1",
			"a path-like segment": "..%2Fusers",
		}
		for _, method := range []string{"GET", "PUT", "PATCH", "DELETE"} {
			body := ""
			if method == "PUT" || method == "PATCH" {
				body = `{"name":"stolen","author":"bob"}`
			}
			ref := ts.do(t, request{method: method, path: "/books/999998", user: "bob", body: body})
			if ref.status != http.StatusNotFound {
				t.Fatalf("%s /books/999998 = %d %s, want 404", method, ref.status, ref.body)
			}
			for name, id := range ids {
				t.Run(method+"/"+name, func(t *testing.T) {
					r := request{method: method, path: "/books/" + id, user: "bob", body: body}
					got := ts.do(t, r)
					if diff := cmp.Diff(comparable404(ref), comparable404(got)); diff != "" {
						t.Errorf("%v for %s differs from the 404 for a book that never existed (-missing +got):\n%s", r, name, diff)
					}
				})
			}
		}
		// An admin is refused the same way: the admin role only lists.
		r := request{method: "GET", path: "/books/" + strconv.FormatInt(alices.ID, 10), user: "root", roles: "admin"}
		ts.must(t, r, http.StatusNotFound)

		got := decode[Book](t, ts.must(t, request{method: "GET", path: "/books/" + strconv.FormatInt(alices.ID, 10), user: "alice"}, http.StatusOK))
		if diff := cmp.Diff(alices, got); diff != "" {
			t.Errorf("bob's requests changed alice's book (-before +after):\n%s", diff)
		}
		for _, b := range ts.listAll(t, "bob", "", "", 100) {
			if b.ID == alices.ID {
				t.Errorf("bob's listing shows alice's book %d", b.ID)
			}
		}
	})
}

func TestGet(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		b := ts.create(t, "alice", readFile(t, "book1.json"))
		for _, path := range []string{"/books/" + strconv.FormatInt(b.ID, 10)} {
			got := decode[Book](t, ts.must(t, request{method: "GET", path: path, user: "alice"}, http.StatusOK))
			if diff := cmp.Diff(b, got); diff != "" {
				t.Errorf("GET %s mismatch (-created +got):\n%s", path, diff)
			}
			ts.must(t, request{method: "HEAD", path: path, user: "alice"}, http.StatusOK)
		}
	})
}

func TestReplace(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		ts.fakeClock(t)
		for _, tc := range []struct {
			name string
			body string
			want Book
		}{
			{"every field", `{"name":"N","Author":"A","Publisher":"P","book_prize":7}`,
				Book{Name: "N", Author: "A", Publisher: "P", BookPrize: 7}},
			{"missing fields reset", `{"name":"N"}`, Book{Name: "N"}},
			{"null fields reset", `{"name":"N","author":null,"publisher":null,"book_prize":null}`, Book{Name: "N"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				orig := ts.create(t, "alice", readFile(t, "book1.json"))
				path := "/books/" + strconv.FormatInt(orig.ID, 10)
				got := decode[Book](t, ts.must(t, request{method: "PUT", path: path, user: "alice", body: tc.body}, http.StatusOK))
				tc.want.ID, tc.want.CreatedAt, tc.want.UpdatedAt = orig.ID, orig.CreatedAt, orig.CreatedAt.Add(time.Second)
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("PUT %s %s (-want +got):\n%s", path, tc.body, diff)
				}
				stored := decode[Book](t, ts.must(t, request{method: "GET", path: path, user: "alice"}, http.StatusOK))
				if diff := cmp.Diff(got, stored); diff != "" {
					t.Errorf("GET after PUT differs from the PUT response (-put +get):\n%s", diff)
				}
			})
		}
		ts.must(t, request{method: "PUT", path: "/books/999999", user: "alice", body: `{"name":"x"}`}, http.StatusNotFound)
	})
}

func TestPatch(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		ts.fakeClock(t)
		for _, tc := range []struct {
			name        string
			body        string
			contentType string
			want        func(b Book) Book
			bumped      bool // updated_at moves
		}{
			{"empty patch changes nothing", `{}`, "", func(b Book) Book { return b }, false},
			{"one field", `{"author":"Someone Else"}`, "", func(b Book) Book { b.Author = "Someone Else"; return b }, true},
			{"case-insensitive key", `{"Publisher":"Penguin"}`, "", func(b Book) Book { b.Publisher = "Penguin"; return b }, true},
			{"name trimmed", `{"name":"  New Name  "}`, "", func(b Book) Book { b.Name = "New Name"; return b }, true},
			{"null author resets it", `{"author":null}`, "", func(b Book) Book { b.Author = ""; return b }, true},
			{"null publisher resets it", `{"PUBLISHER":null}`, "", func(b Book) Book { b.Publisher = ""; return b }, true},
			{"null prize resets it", `{"book_prize":null}`, "", func(b Book) Book { b.BookPrize = 0; return b }, true},
			{"prize to zero", `{"book_prize":0}`, "", func(b Book) Book { b.BookPrize = 0; return b }, true},
			{"every field", `{"name":"n","author":"a","publisher":"p","book_prize":99}`, "",
				func(b Book) Book { b.Name, b.Author, b.Publisher, b.BookPrize = "n", "a", "p", 99; return b }, true},
			{"merge-patch content type", `{"book_prize":5}`, "application/merge-patch+json",
				func(b Book) Book { b.BookPrize = 5; return b }, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				orig := ts.create(t, "alice", readFile(t, "book1.json"))
				path := "/books/" + strconv.FormatInt(orig.ID, 10)
				r := request{method: "PATCH", path: path, user: "alice", body: tc.body, contentType: tc.contentType}
				got := decode[Book](t, ts.must(t, r, http.StatusOK))
				want := tc.want(orig)
				if tc.bumped {
					want.UpdatedAt = orig.CreatedAt.Add(time.Second)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%v %s (-want +got):\n%s", r, tc.body, diff)
				}
				stored := decode[Book](t, ts.must(t, request{method: "GET", path: path, user: "alice"}, http.StatusOK))
				if diff := cmp.Diff(got, stored); diff != "" {
					t.Errorf("GET after PATCH differs from the PATCH response (-patch +get):\n%s", diff)
				}
			})
		}
		for _, body := range []string{`{}`, `{"name":"x"}`} {
			ts.must(t, request{method: "PATCH", path: "/books/999999", user: "alice", body: body}, http.StatusNotFound)
		}
	})
}

func TestDelete(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		keep := ts.createNamed(t, "alice", "keep")
		b := ts.createNamed(t, "alice", "delete me")
		path := "/books/" + strconv.FormatInt(b.ID, 10)
		resp := ts.must(t, request{method: "DELETE", path: path, user: "alice"}, http.StatusNoContent)
		if len(resp.body) != 0 {
			t.Errorf("DELETE %s body = %q, want none", path, resp.body)
		}
		// The tutorial crashed on this second delete.
		resp = ts.must(t, request{method: "DELETE", path: path, user: "alice"}, http.StatusNotFound)
		if msg := message(t, resp); msg != "book not found" {
			t.Errorf("second DELETE message = %q, want %q", msg, "book not found")
		}
		ts.must(t, request{method: "GET", path: path, user: "alice"}, http.StatusNotFound)
		ts.must(t, request{method: "PATCH", path: path, user: "alice", body: `{"name":"back"}`}, http.StatusNotFound)
		ts.must(t, request{method: "PUT", path: path, user: "alice", body: `{"name":"back"}`}, http.StatusNotFound)
		got := ts.listAll(t, "alice", "", "", 10)
		if diff := cmp.Diff([]Book{keep}, got); diff != "" {
			t.Errorf("listing after delete (-want +got):\n%s", diff)
		}
		// Ids are never reused, so a stale id can never name a new book.
		next := ts.createNamed(t, "alice", "after")
		if next.ID <= b.ID {
			t.Errorf("new book got id %d, want more than the deleted %d", next.ID, b.ID)
		}
	})
}

func TestRoutingErrorsAreJSON(t *testing.T) {
	ts := newTestService(t, dialects[0].dsn(t))
	for _, tc := range []struct {
		r      request
		status int
		allow  string
	}{
		{request{method: "GET", path: "/nope", user: "alice"}, 404, ""},
		{request{method: "GET", path: "/", user: "alice"}, 404, ""},
		{request{method: "GET", path: "/books/1/extra", user: "alice"}, 404, ""},
		{request{method: "GET", path: "/users", user: "alice"}, 404, ""},
		{request{method: "PUT", path: "/books", user: "alice"}, 405, "GET, HEAD, POST"},
		{request{method: "DELETE", path: "/book", user: "alice"}, 405, "POST"},
		{request{method: "GET", path: "/book", user: "alice"}, 405, "POST"},
		{request{method: "POST", path: "/books/1", user: "alice"}, 405, "GET, HEAD, PUT, PATCH, DELETE"},
		{request{method: "POST", path: "/healthz"}, 405, "GET, HEAD"},
	} {
		t.Run(tc.r.String(), func(t *testing.T) {
			resp := ts.do(t, tc.r)
			if resp.status != tc.status {
				t.Fatalf("%v = %d %s, want %d", tc.r, resp.status, resp.body, tc.status)
			}
			message(t, resp)
			if got := resp.header.Get("Allow"); got != tc.allow {
				t.Errorf("%v Allow = %q, want %q", tc.r, got, tc.allow)
			}
		})
	}
}

func TestDatabaseFailureIsAnOpaque500(t *testing.T) {
	ts := newTestService(t, dialects[0].dsn(t))
	ts.createNamed(t, "alice", "x")
	ts.db.Close()
	for _, r := range allRoutes(1) {
		r.user = "alice"
		t.Run(r.String(), func(t *testing.T) {
			resp := ts.do(t, r)
			if resp.status != http.StatusInternalServerError {
				t.Fatalf("%v with the database closed = %d %s, want 500", r, resp.status, resp.body)
			}
			if msg := message(t, resp); msg != "internal error" {
				t.Errorf("%v message = %q, want %q and no detail", r, msg, "internal error")
			}
		})
	}
}

func TestHealthAndMetrics(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		ts.must(t, request{method: "GET", path: "/healthz"}, http.StatusOK)
		ts.must(t, request{method: "GET", path: "/readyz"}, http.StatusOK)
		ts.createNamed(t, "alice", "x")
		metrics := ts.must(t, request{method: "GET", path: "/metrics"}, http.StatusOK)
		for _, want := range []string{
			`tollgate_http_requests_total{code="201",method="POST",route="POST /books"} 1`,
			`go_sql_open_connections{db_name="books"}`,
		} {
			if !bytes.Contains(metrics.body, []byte(want)) {
				t.Errorf("GET /metrics lacks %s", want)
			}
		}
		if err := ts.Ready(t.Context()); err != nil {
			t.Errorf("Ready = %v, want nil", err)
		}
		ts.SetStopping()
		ts.must(t, request{method: "GET", path: "/readyz"}, http.StatusServiceUnavailable)
		ts.must(t, request{method: "GET", path: "/healthz"}, http.StatusOK)
		if err := ts.Ready(t.Context()); err == nil {
			t.Error("Ready after SetStopping = nil, want an error")
		}
	})
}

func TestNotReadyWithoutDatabase(t *testing.T) {
	ts := newTestService(t, dialects[0].dsn(t))
	ts.db.Close()
	if err := ts.Ready(t.Context()); err == nil {
		t.Error("Ready with the database closed = nil, want an error")
	}
	ts.must(t, request{method: "GET", path: "/readyz"}, http.StatusServiceUnavailable)
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no database", Config{}},
		{"negative body limit", func() Config { c := dbConfig(filepath.Join(t.TempDir(), "x.db")); c.MaxBodyBytes = -1; return c }()},
		{"unreachable postgres", dbConfig("postgres://nobody@127.0.0.1:1/none?connect_timeout=1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := New(t.Context(), tc.cfg, nil, nil); err == nil {
				s.Close()
				t.Errorf("New(%+v) = nil error, want one", tc.cfg)
			}
		})
	}
}
