package books

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// FuzzDecodeBook feeds arbitrary bodies to the request decoding of
// POST/PUT (fields) and PATCH (patch) and checks that every refusal is a
// 4xx *httpapi.Error, that every accepted book obeys the limits, that
// the two readings agree, and that they agree with encoding/json.
func FuzzDecodeBook(f *testing.F) {
	for _, seed := range []string{
		readFile(f, "book1.json"),
		readFile(f, "book2.json"),
		`{"name":"n","author":"a","publisher":"p","book_prize":12}`,
		`{"NAME":"n","AUTHOR":null,"book_prize":null}`,
		`{"name":"n","name":"m"}`,
		`{"name":"n","Name":"m"}`,
		`{"name":" \u00e9 ","book_prize":1000000000}`,
		`{"name":"a\u0000b"}`,
		`{"book_prize":12.5}`,
		`{"book_prize":-0}`,
		`{"book_prize":1e3}`,
		`{"book_prize":"12"}`,
		`{"name":null}`,
		`{}`,
		`[]`,
		`null`,
		`{"name":"x"} {}`,
		`{"isbn":1}`,
		"{\"name\":\"\xff\"}",
		`{"name":[[[[]]]]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/books", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		raw, err := decodeBook(httptest.NewRecorder(), req, DefaultMaxBodyBytes)
		if err != nil {
			checkRefusal(t, "decodeBook", err)
			return
		}
		p, perr := raw.patch()
		if perr != nil {
			checkRefusal(t, "patch", perr)
		}
		fl, ferr := raw.fields()
		if ferr != nil {
			checkRefusal(t, "fields", ferr)
			return
		}
		checkText(t, "name", fl.Name, MaxNameLen)
		if fl.Name == "" {
			t.Fatalf("fields accepted an empty name from %q", body)
		}
		checkText(t, "author", fl.Author, MaxTextLen)
		checkText(t, "publisher", fl.Publisher, MaxTextLen)
		if fl.BookPrize < 0 || fl.BookPrize > MaxBookPrize {
			t.Fatalf("fields accepted book_prize %d from %q", fl.BookPrize, body)
		}

		// A body good as a whole book is good as a patch, and says the same.
		if perr != nil {
			t.Fatalf("fields accepted %q but patch refused it: %v", body, perr)
		}
		if p.Name == nil || *p.Name != fl.Name ||
			(p.Author != nil && *p.Author != fl.Author) ||
			(p.Publisher != nil && *p.Publisher != fl.Publisher) ||
			(p.BookPrize != nil && *p.BookPrize != fl.BookPrize) {
			t.Fatalf("patch %+v and fields %+v disagree on %q", p, fl, body)
		}

		// encoding/json reads the same values (keys match without case,
		// and duplicates were refused, so there is only one reading).
		var std struct {
			Name      *string `json:"name"`
			Author    *string `json:"author"`
			Publisher *string `json:"publisher"`
			BookPrize *int64  `json:"book_prize"`
		}
		if err := json.Unmarshal(body, &std); err != nil {
			t.Fatalf("decodeBook accepted %q but encoding/json refuses it: %v", body, err)
		}
		stdFields := fields{Name: strings.TrimSpace(deref(std.Name)), Author: strings.TrimSpace(deref(std.Author)), Publisher: strings.TrimSpace(deref(std.Publisher))}
		if std.BookPrize != nil {
			stdFields.BookPrize = *std.BookPrize
		}
		if diff := cmp.Diff(stdFields, fl); diff != "" {
			t.Fatalf("decodeBook and encoding/json disagree on %q (-json +decodeBook):\n%s", body, diff)
		}

		// What was accepted survives a round trip unchanged.
		again, err := json.Marshal(map[string]any{"name": fl.Name, "author": fl.Author, "publisher": fl.Publisher, "book_prize": fl.BookPrize})
		if err != nil {
			t.Fatal(err)
		}
		req = httptest.NewRequest("PUT", "/books/1", bytes.NewReader(again))
		raw2, err := decodeBook(httptest.NewRecorder(), req, DefaultMaxBodyBytes)
		if err != nil {
			t.Fatalf("re-encoded %s refused: %v", again, err)
		}
		fl2, err := raw2.fields()
		if err != nil {
			t.Fatalf("re-encoded %s refused: %v", again, err)
		}
		if diff := cmp.Diff(fl, fl2); diff != "" {
			t.Fatalf("round trip of %q changed the book (-first +second):\n%s", body, diff)
		}
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// checkRefusal fails unless err is a client error with a message.
func checkRefusal(t *testing.T, op string, err error) {
	t.Helper()
	var he *httpapi.Error
	if !errors.As(err, &he) {
		t.Fatalf("%s returned %T %v, want an *httpapi.Error", op, err, err)
	}
	if he.Status != http.StatusBadRequest && he.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("%s refused with status %d (%s), want 400 or 413", op, he.Status, he.Msg)
	}
	if he.Msg == "" || !utf8.ValidString(he.Msg) {
		t.Fatalf("%s refused with message %q", op, he.Msg)
	}
}

// checkText fails unless s is a trimmed, bounded, control-free string.
func checkText(t *testing.T, name, s string, max int) {
	t.Helper()
	if s != strings.TrimSpace(s) || utf8.RuneCountInString(s) > max || strings.ContainsFunc(s, unicode.IsControl) || !utf8.ValidString(s) {
		t.Fatalf("accepted %s %q: untrimmed, too long, invalid or with control characters", name, s)
	}
}
