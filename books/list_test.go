package books

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestListPages(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		list := func(t *testing.T, query string) (List, response) {
			t.Helper()
			resp := ts.must(t, request{method: "GET", path: "/books" + query, user: "alice"}, http.StatusOK)
			return decode[List](t, resp), resp
		}

		// Empty: an empty array, not null, and no next page.
		l, resp := list(t, "")
		if string(resp.body) != "{\"list_of_books\":[]}\n" {
			t.Errorf("GET /books with no books = %s, want {\"list_of_books\":[]}", resp.body)
		}
		if link := resp.header.Get("Link"); link != "" || l.NextCursor != "" {
			t.Errorf("empty listing has Link %q, next_cursor %q; want neither", link, l.NextCursor)
		}

		var want []Book
		for i := range 3 {
			want = append(want, ts.createNamed(t, "alice", fmt.Sprintf("book %d", i)))
		}
		ts.createNamed(t, "bob", "not alice's")

		// Exactly limit books: one full page and no next page.
		l, resp = list(t, "?limit=3")
		if diff := cmp.Diff(want, l.Books); diff != "" {
			t.Errorf("GET /books?limit=3 with 3 books (-want +got):\n%s", diff)
		}
		if link := resp.header.Get("Link"); link != "" || l.NextCursor != "" {
			t.Errorf("listing exactly limit books has Link %q, next_cursor %q; want neither", link, l.NextCursor)
		}

		// limit+1 books: a full page, then a page with the last one.
		want = append(want, ts.createNamed(t, "alice", "book 3"))
		l, resp = list(t, "?limit=3")
		if diff := cmp.Diff(want[:3], l.Books); diff != "" {
			t.Errorf("first page (-want +got):\n%s", diff)
		}
		if l.NextCursor == "" {
			t.Fatal("first of two pages has no next_cursor")
		}
		wantLink := `</books?cursor=` + url.QueryEscape(l.NextCursor) + `&limit=3>; rel="next"`
		if link := resp.header.Get("Link"); link != wantLink {
			t.Errorf("Link = %q, want %q", link, wantLink)
		}
		l, resp = list(t, "?limit=3&cursor="+url.QueryEscape(l.NextCursor))
		if diff := cmp.Diff(want[3:], l.Books); diff != "" {
			t.Errorf("second page (-want +got):\n%s", diff)
		}
		if link := resp.header.Get("Link"); link != "" || l.NextCursor != "" {
			t.Errorf("last page has Link %q, next_cursor %q; want neither", link, l.NextCursor)
		}

		// The Link header alone is enough to walk the listing.
		var walked []Book
		path := "/books?limit=1"
		for path != "" {
			resp := ts.must(t, request{method: "GET", path: path, user: "alice"}, http.StatusOK)
			walked = append(walked, decode[List](t, resp).Books...)
			path = ""
			if link := resp.header.Get("Link"); link != "" {
				target, _, _ := strings.Cut(strings.TrimPrefix(link, "<"), ">")
				path = target
			}
		}
		if diff := cmp.Diff(want, walked); diff != "" {
			t.Errorf("walking Link rel=next with limit=1 (-want +got):\n%s", diff)
		}

		// Every page size sees every book once, in id order.
		for limit := 1; limit <= 5; limit++ {
			if diff := cmp.Diff(want, ts.listAll(t, "alice", "", "", limit)); diff != "" {
				t.Errorf("paging with limit=%d (-want +got):\n%s", limit, diff)
			}
		}
		// A book deleted between pages does not break the cursor.
		l, _ = list(t, "?limit=2")
		ts.must(t, request{method: "DELETE", path: fmt.Sprintf("/books/%d", want[1].ID), user: "alice"}, http.StatusNoContent)
		ts.must(t, request{method: "DELETE", path: fmt.Sprintf("/books/%d", want[2].ID), user: "alice"}, http.StatusNoContent)
		l, _ = list(t, "?limit=2&cursor="+url.QueryEscape(l.NextCursor))
		if diff := cmp.Diff(want[3:], l.Books); diff != "" {
			t.Errorf("page after deleting its first books (-want +got):\n%s", diff)
		}
	})
}

func TestListDefaultAndMaximumLimit(t *testing.T) {
	ts := newTestService(t, dialects[0].dsn(t))
	for i := range MaxLimit + 1 {
		ts.createNamed(t, "alice", fmt.Sprintf("b%d", i))
	}
	for _, tc := range []struct {
		query    string
		n        int
		nextPage bool
	}{
		{"", DefaultLimit, true},
		{"?limit=100", MaxLimit, true},
		{"?limit=1", 1, true},
	} {
		l := decode[List](t, ts.must(t, request{method: "GET", path: "/books" + tc.query, user: "alice"}, http.StatusOK))
		if len(l.Books) != tc.n || (l.NextCursor != "") != tc.nextPage {
			t.Errorf("GET /books%s = %d books, next_cursor %q; want %d and a next page: %v", tc.query, len(l.Books), l.NextCursor, tc.n, tc.nextPage)
		}
	}
}

// tamper returns cursor c with its id replaced by after, keeping the tag.
func tamper(t *testing.T, c string, after uint64) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		t.Fatal(err)
	}
	_, n := binary.Uvarint(b[1:])
	out := append([]byte{b[0]}, binary.AppendUvarint(nil, after)...)
	out = append(out, b[1+n:]...)
	return base64.RawURLEncoding.EncodeToString(out)
}

func TestListRefusesBadParameters(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		for i := range 3 {
			ts.createNamed(t, "alice", fmt.Sprintf("a%d", i))
			ts.createNamed(t, "bob", fmt.Sprintf("b%d", i))
		}
		next := func(user, roles, query string) string {
			l := decode[List](t, ts.must(t, request{method: "GET", path: "/books?limit=1" + query, user: user, roles: roles}, http.StatusOK))
			if l.NextCursor == "" {
				t.Fatalf("no next_cursor for %s%s", user, query)
			}
			return l.NextCursor
		}
		alices := next("alice", "", "")
		bobs := next("bob", "", "")
		adminAll := next("root", "admin", "&all=true")
		ts.createNamed(t, "root", "r1")
		ts.createNamed(t, "root", "r2")
		rootOwn := next("root", "admin", "")

		flipped := []byte(alices)
		flipped[len(flipped)/2] ^= 1

		for _, tc := range []struct {
			name, user, roles, query string
			status                   int
			msg                      string
		}{
			{"limit zero", "alice", "", "limit=0", 400, `"limit" must be a whole number from 1 to 100`},
			{"limit negative", "alice", "", "limit=-1", 400, `"limit" must be a whole number from 1 to 100`},
			{"limit over maximum", "alice", "", "limit=101", 400, `"limit" must be a whole number from 1 to 100`},
			{"limit huge", "alice", "", "limit=99999999999999999999", 400, `"limit"`},
			{"limit not a number", "alice", "", "limit=ten", 400, `"limit"`},
			{"limit a fraction", "alice", "", "limit=1.5", 400, `"limit"`},
			{"limit empty", "alice", "", "limit=", 400, `"limit"`},
			{"limit twice", "alice", "", "limit=1&limit=2", 400, `"limit" is given more than once`},
			{"unknown parameter", "alice", "", "page=2", 400, `unknown query parameter "page"`},
			{"offset is not supported", "alice", "", "offset=2", 400, `unknown query parameter "offset"`},
			{"malformed query", "alice", "", "limit=%zz", 400, "query string is malformed"},
			{"cursor empty", "alice", "", "cursor=", 400, `"cursor"`},
			{"cursor garbage", "alice", "", "cursor=not-a-cursor", 400, `"cursor"`},
			{"cursor not base64", "alice", "", "cursor=" + url.QueryEscape("!!!!"), 400, `"cursor"`},
			{"cursor too long", "alice", "", "cursor=" + strings.Repeat("A", 100), 400, `"cursor"`},
			{"cursor with padding", "alice", "", "cursor=" + url.QueryEscape(alices+"="), 400, `"cursor"`},
			{"cursor bit flipped", "alice", "", "cursor=" + url.QueryEscape(string(flipped)), 400, `"cursor"`},
			{"cursor id rewritten to 0", "alice", "", "cursor=" + tamper(t, alices, 0), 400, `"cursor"`},
			{"cursor id rewritten far ahead", "alice", "", "cursor=" + tamper(t, alices, 1<<40), 400, `"cursor"`},
			{"cursor twice", "alice", "", "cursor=" + alices + "&cursor=" + alices, 400, `"cursor" is given more than once`},
			{"another user's cursor", "alice", "", "cursor=" + bobs, 400, `"cursor"`},
			{"own-listing cursor in the admin listing", "root", "admin", "all=true&cursor=" + rootOwn, 400, `"cursor"`},
			{"admin-listing cursor in an own listing", "root", "admin", "cursor=" + adminAll, 400, `"cursor"`},
			{"all not a boolean", "alice", "admin", "all=yes", 400, `"all" must be true or false`},
			{"all in capitals", "alice", "admin", "all=TRUE", 400, `"all" must be true or false`},
			{"all empty", "alice", "admin", "all=", 400, `"all" must be true or false`},
			{"all=true without admin", "alice", "", "all=true", 403, "needs the admin role"},
			{"all=true with role user", "alice", "user", "all=true", 403, "needs the admin role"},
			{"all=true with a longer role name", "alice", "administrator", "all=true", 403, "needs the admin role"},
			{"all=true with Admin in capitals", "alice", "Admin", "all=true", 403, "needs the admin role"},
			{"all=true with admin inside a role", "alice", "user,superadmin,admins", "all=true", 403, "needs the admin role"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := request{method: "GET", path: "/books?" + tc.query, user: tc.user, roles: tc.roles}
				resp := ts.do(t, r)
				if resp.status != tc.status {
					t.Fatalf("%v = %d %s, want %d", r, resp.status, resp.body, tc.status)
				}
				if msg := message(t, resp); !strings.Contains(msg, tc.msg) {
					t.Errorf("%v message = %q, want it to contain %q", r, msg, tc.msg)
				}
			})
		}
		// The untouched cursors work where they came from.
		ts.must(t, request{method: "GET", path: "/books?cursor=" + alices, user: "alice"}, http.StatusOK)
		ts.must(t, request{method: "GET", path: "/books?all=true&cursor=" + adminAll, user: "root", roles: "admin"}, http.StatusOK)
	})
}

func TestAdminListing(t *testing.T) {
	forEachDialect(t, func(t *testing.T, ts *testService) {
		var all []Book
		for _, o := range []string{"alice", "bob", "alice", "root"} {
			b := ts.createNamed(t, o, "by "+o)
			b.OwnerID = o
			all = append(all, b)
		}
		for _, roles := range []string{"admin", "user,admin", "user, admin", " admin ,user"} {
			t.Run("roles "+roles, func(t *testing.T) {
				got := ts.listAll(t, "root", roles, "&all=true", 3)
				if diff := cmp.Diff(all, got); diff != "" {
					t.Errorf("GET /books?all=true as %q (-want +got):\n%s", roles, diff)
				}
			})
		}
		t.Run("Link keeps all=true", func(t *testing.T) {
			resp := ts.must(t, request{method: "GET", path: "/books?all=true&limit=1", user: "root", roles: "admin"}, http.StatusOK)
			if link := resp.header.Get("Link"); !strings.Contains(link, "all=true") {
				t.Errorf("admin listing Link = %q, want it to keep all=true", link)
			}
		})
		t.Run("admin without all sees own books only", func(t *testing.T) {
			got := ts.listAll(t, "root", "admin", "", 10)
			want := []Book{all[3]}
			want[0].OwnerID = ""
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("GET /books as admin (-want +got):\n%s", diff)
			}
		})
		t.Run("all=false is an own listing for anyone", func(t *testing.T) {
			got := ts.listAll(t, "bob", "", "&all=false", 10)
			want := []Book{all[1]}
			want[0].OwnerID = ""
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("GET /books?all=false as bob (-want +got):\n%s", diff)
			}
		})
	})
}
