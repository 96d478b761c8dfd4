package books

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// Limits on what a book may hold.
const (
	// MaxNameLen is the most characters (Unicode code points) a name may
	// have after surrounding white space is trimmed; a name needs at least one.
	MaxNameLen = 200
	// MaxTextLen is the most characters author and publisher may have.
	MaxTextLen = 200
	// MaxBookPrize is the largest book_prize accepted.
	MaxBookPrize = 1_000_000_000
	// DefaultMaxBodyBytes is DefaultConfig's bound on a request body.
	DefaultMaxBodyBytes = 16 << 10
)

// Book is a book as the API returns it.
type Book struct {
	ID int64 `json:"id"`
	// OwnerID is the x-user-id of the book's owner. It is only filled in
	// an admin's listing of every user's books.
	OwnerID   string    `json:"owner_id,omitempty"`
	Name      string    `json:"name"`
	Author    string    `json:"author"`
	Publisher string    `json:"publisher"`
	BookPrize int64     `json:"book_prize"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// List is the response of GET /books: one page of books in id order.
type List struct {
	Books []Book `json:"list_of_books"`
	// NextCursor, when set, is the cursor query parameter that fetches
	// the next page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// fields is the client-settable content of a book, validated.
type fields struct {
	Name      string
	Author    string
	Publisher string
	BookPrize int64
}

// patch is a validated partial update: a nil field stays as it is.
type patch struct {
	Name      *string
	Author    *string
	Publisher *string
	BookPrize *int64
}

func (p patch) empty() bool {
	return p.Name == nil && p.Author == nil && p.Publisher == nil && p.BookPrize == nil
}

// bookBody lists the JSON members a request body may have, for
// httpapi.DecodeJSON's checks (unknown members, shape). The values are
// then taken from the body by rawBook, member by member.
type bookBody struct {
	Name      json.RawMessage `json:"name"`
	Author    json.RawMessage `json:"author"`
	Publisher json.RawMessage `json:"publisher"`
	BookPrize json.RawMessage `json:"book_prize"`
}

// rawBook holds the members present in a request body, keyed by their
// canonical names; a member sent as null is present with the value null.
type rawBook map[string]json.RawMessage

// decodeBook reads a book request body: application/json (or any +json
// type, such as application/merge-patch+json) holding one object whose
// members are the book's fields, matched without regard to case. Every
// way the body can be wrong is an *httpapi.Error with a 4xx status.
func decodeBook(w http.ResponseWriter, r *http.Request, maxBytes int64) (rawBook, error) {
	if mt := mediaType(r); mt == "application/json-patch+json" {
		return nil, httpapi.Errorf(http.StatusUnsupportedMediaType, nil,
			"JSON Patch is not supported; send a JSON merge patch (application/merge-patch+json) or a JSON object")
	}
	// DecodeJSON checks the content type, size, syntax and member names;
	// the copy of the body lets decodeMembers see what it cannot: the
	// same member sent twice (in any case), where encoding/json would
	// silently keep the last one.
	var body bytes.Buffer
	r.Body = readCloser{io.TeeReader(r.Body, &body), r.Body}
	if err := httpapi.DecodeJSON(w, r, &bookBody{}, maxBytes); err != nil {
		return nil, err
	}
	return decodeMembers(body.Bytes())
}

type readCloser struct {
	io.Reader
	io.Closer
}

func mediaType(r *http.Request) string {
	mt, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// memberNames are the canonical JSON names of a book's fields.
var memberNames = []string{"name", "author", "publisher", "book_prize"}

// decodeMembers splits body, already known to be one valid JSON object
// with only known members, into its members, refusing duplicates.
func decodeMembers(body []byte) (rawBook, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, httpapi.Errorf(http.StatusBadRequest, err, "request body must be a JSON object")
	}
	raw := rawBook{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, httpapi.Errorf(http.StatusBadRequest, err, "request body is not valid JSON")
		}
		key, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, httpapi.Errorf(http.StatusBadRequest, err, "request body is not valid JSON")
		}
		name := canonicalName(key)
		if name == "" {
			return nil, httpapi.Errorf(http.StatusBadRequest, nil, "unknown field %q; allowed: %s", key, strings.Join(memberNames, ", "))
		}
		if _, dup := raw[name]; dup {
			return nil, httpapi.Errorf(http.StatusBadRequest, nil, "field %q is given more than once", name)
		}
		raw[name] = value
	}
	return raw, nil
}

func canonicalName(key string) string {
	for _, n := range memberNames {
		if strings.EqualFold(n, key) {
			return n
		}
	}
	return ""
}

// isNull reports whether v is the JSON literal null.
func isNull(v json.RawMessage) bool { return string(v) == "null" }

// fields validates raw as a complete book, for POST and PUT: name is
// required; a missing or null author, publisher or book_prize is "" or 0.
func (raw rawBook) fields() (fields, error) {
	var f fields
	v, ok := raw["name"]
	if !ok || isNull(v) {
		return fields{}, httpapi.Errorf(http.StatusBadRequest, nil, "field \"name\" is required")
	}
	var err error
	if f.Name, err = parseName(v); err != nil {
		return fields{}, err
	}
	if v, ok := raw["author"]; ok && !isNull(v) {
		if f.Author, err = parseText("author", v); err != nil {
			return fields{}, err
		}
	}
	if v, ok := raw["publisher"]; ok && !isNull(v) {
		if f.Publisher, err = parseText("publisher", v); err != nil {
			return fields{}, err
		}
	}
	if v, ok := raw["book_prize"]; ok && !isNull(v) {
		if f.BookPrize, err = parsePrize(v); err != nil {
			return fields{}, err
		}
	}
	return f, nil
}

// patch validates raw as a JSON merge patch (RFC 7396) of a book: a
// missing member leaves the field as it is; null removes it, which for a
// book's optional fields means resetting author and publisher to "" and
// book_prize to 0. name cannot be removed, so "name": null is an error.
func (raw rawBook) patch() (patch, error) {
	var p patch
	if v, ok := raw["name"]; ok {
		if isNull(v) {
			return patch{}, httpapi.Errorf(http.StatusBadRequest, nil, "field \"name\" is required and cannot be null")
		}
		name, err := parseName(v)
		if err != nil {
			return patch{}, err
		}
		p.Name = &name
	}
	for _, m := range []struct {
		name string
		dst  **string
	}{{"author", &p.Author}, {"publisher", &p.Publisher}} {
		v, ok := raw[m.name]
		if !ok {
			continue
		}
		s := ""
		if !isNull(v) {
			var err error
			if s, err = parseText(m.name, v); err != nil {
				return patch{}, err
			}
		}
		*m.dst = &s
	}
	if v, ok := raw["book_prize"]; ok {
		var n int64
		if !isNull(v) {
			var err error
			if n, err = parsePrize(v); err != nil {
				return patch{}, err
			}
		}
		p.BookPrize = &n
	}
	return p, nil
}

func parseName(v json.RawMessage) (string, error) {
	s, err := parseString("name", v, MaxNameLen)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", httpapi.Errorf(http.StatusBadRequest, nil, "field \"name\" must not be empty")
	}
	return s, nil
}

func parseText(name string, v json.RawMessage) (string, error) {
	return parseString(name, v, MaxTextLen)
}

// parseString decodes a JSON string, trims surrounding white space, and
// refuses control characters (PostgreSQL cannot even store NUL) and more
// than max characters.
func parseString(name string, v json.RawMessage, max int) (string, error) {
	if len(v) == 0 || v[0] != '"' {
		return "", httpapi.Errorf(http.StatusBadRequest, nil, "field %q must be a string, not %s", name, jsonType(v))
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", httpapi.Errorf(http.StatusBadRequest, err, "field %q must be a string", name)
	}
	s = strings.TrimSpace(s)
	if strings.ContainsFunc(s, unicode.IsControl) {
		return "", httpapi.Errorf(http.StatusBadRequest, nil, "field %q must not contain control characters", name)
	}
	if n := utf8.RuneCountInString(s); n > max {
		return "", httpapi.Errorf(http.StatusBadRequest, nil, "field %q is %d characters long; at most %d are allowed", name, n, max)
	}
	return s, nil
}

// parsePrize decodes book_prize: a JSON number that is a whole number
// from 0 to MaxBookPrize, written without a fraction or exponent.
func parsePrize(v json.RawMessage) (int64, error) {
	const field = "book_prize"
	if t := jsonType(v); t != "a number" {
		return 0, httpapi.Errorf(http.StatusBadRequest, nil, "field %q must be a whole number, not %s", field, t)
	}
	s := string(v)
	if strings.ContainsAny(s, ".eE") {
		return 0, httpapi.Errorf(http.StatusBadRequest, nil, "field %q must be a whole number, not %s", field, s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) || (err == nil && (n < 0 || n > MaxBookPrize)) {
		return 0, httpapi.Errorf(http.StatusBadRequest, nil, "field %q must be between 0 and %d", field, MaxBookPrize)
	}
	if err != nil {
		return 0, httpapi.Errorf(http.StatusBadRequest, err, "field %q must be a whole number", field)
	}
	return n, nil
}

// jsonType names the type of the JSON value v for error messages.
func jsonType(v json.RawMessage) string {
	if len(v) == 0 {
		return "empty"
	}
	switch c := v[0]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "true or false"
	case c == 'n':
		return "null"
	default:
		return "a number"
	}
}
