package books

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// Identity headers, set by the gateway's authorization check.
const (
	headerUserID = "X-User-Id"
	headerRoles  = "X-User-Roles"
)

// maxUserIDLen bounds x-user-id (a UUID in practice).
const maxUserIDLen = 256

// Listing parameters.
const (
	// DefaultLimit is the page size of GET /books without a limit.
	DefaultLimit = 50
	// MaxLimit is the largest page size a client may ask for.
	MaxLimit = 100
)

// caller is who the gateway says is asking.
type caller struct {
	id    string
	admin bool
}

// identify reads the caller from the identity headers. With no usable
// x-user-id it refuses (401) instead of guessing: a request without one
// did not come through the gateway's check.
func identify(r *http.Request) (caller, error) {
	ids := r.Header.Values(headerUserID)
	if len(ids) == 0 || ids[0] == "" {
		return caller{}, unauthorized("this service needs the caller's identity (x-user-id), which the gateway sets for a valid token")
	}
	if len(ids) > 1 || !validUserID(ids[0]) {
		return caller{}, unauthorized("the caller's identity (x-user-id) is malformed")
	}
	c := caller{id: ids[0]}
	for _, v := range r.Header.Values(headerRoles) {
		for role := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(role) == "admin" {
				c.admin = true
			}
		}
	}
	return c, nil
}

// validUserID accepts 1 to maxUserIDLen visible ASCII characters.
func validUserID(id string) bool {
	if id == "" || len(id) > maxUserIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

func unauthorized(msg string) *httpapi.Error {
	e := httpapi.Errorf(http.StatusUnauthorized, nil, "%s", msg)
	e.Header = http.Header{"Www-Authenticate": {`Bearer realm="tollgate"`}}
	return e
}

// authed adapts a handler that needs the caller.
func (s *Service) authed(h func(w http.ResponseWriter, r *http.Request, c caller) error) http.Handler {
	return httpapi.Handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := identify(r)
		if err != nil {
			return err
		}
		return h(w, r, c)
	})
}

// notFound is the one answer for a book the caller cannot see, whether
// it is missing, someone else's, or not even a well-formed id.
func notFound() *httpapi.Error {
	return httpapi.Errorf(http.StatusNotFound, nil, "book not found")
}

// bookID parses the {id} path segment: a positive decimal integer in
// canonical form. Anything else names no book, so it is a 404 like any
// other book the caller cannot see, not a 400 that would tell ids apart.
func bookID(r *http.Request) (int64, error) {
	s := r.PathValue("id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != s {
		return 0, notFound()
	}
	return id, nil
}

// storeError maps a store error to a response.
func storeError(err error) error {
	if errors.Is(err, errNotFound) {
		return notFound()
	}
	return err
}

// own strips what a caller's own view of a book does not show.
func own(b Book) Book {
	b.OwnerID = ""
	return b
}

func (s *Service) create(w http.ResponseWriter, r *http.Request, c caller) error {
	raw, err := decodeBook(w, r, s.maxBody)
	if err != nil {
		return err
	}
	f, err := raw.fields()
	if err != nil {
		return err
	}
	b, err := s.books.create(r.Context(), c.id, f)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/books/"+strconv.FormatInt(b.ID, 10))
	httpapi.WriteJSON(w, http.StatusCreated, own(b))
	return nil
}

// listParams are the query parameters GET /books understands.
var listParams = []string{"all", "cursor", "limit"}

func (s *Service) list(w http.ResponseWriter, r *http.Request, c caller) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return httpapi.Errorf(http.StatusBadRequest, err, "the query string is malformed")
	}
	for name, vs := range q {
		if !slices.Contains(listParams, name) {
			return httpapi.Errorf(http.StatusBadRequest, nil, "unknown query parameter %q; allowed: %s", name, strings.Join(listParams, ", "))
		}
		if len(vs) > 1 {
			return httpapi.Errorf(http.StatusBadRequest, nil, "query parameter %q is given more than once", name)
		}
	}

	all := false
	switch v, ok := q["all"]; {
	case !ok || v[0] == "false":
	case v[0] == "true":
		if !c.admin {
			return httpapi.Errorf(http.StatusForbidden, nil, "listing every user's books (all=true) needs the admin role")
		}
		all = true
	default:
		return httpapi.Errorf(http.StatusBadRequest, nil, "query parameter \"all\" must be true or false")
	}

	limit := DefaultLimit
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > MaxLimit {
			return httpapi.Errorf(http.StatusBadRequest, nil, "query parameter \"limit\" must be a whole number from 1 to %d", MaxLimit)
		}
		limit = n
	}

	lq := listQuery{owner: c.id, limit: limit + 1}
	scope := "user\x00" + c.id
	if all {
		lq.owner, scope = "", "all"
	}
	if v, ok := q["cursor"]; ok {
		if lq.after, err = s.cursors.decode(scope, v[0]); err != nil {
			return httpapi.Errorf(http.StatusBadRequest, err, "query parameter \"cursor\" is not a cursor this listing gave out")
		}
	}

	books, err := s.books.list(r.Context(), lq)
	if err != nil {
		return err
	}
	resp := List{Books: books}
	if len(books) > limit {
		resp.Books = books[:limit]
		resp.NextCursor = s.cursors.encode(scope, resp.Books[limit-1].ID)
		next := url.Values{"cursor": {resp.NextCursor}, "limit": {strconv.Itoa(limit)}}
		if all {
			next.Set("all", "true")
		}
		w.Header().Set("Link", `</books?`+next.Encode()+`>; rel="next"`)
	}
	if !all {
		for i := range resp.Books {
			resp.Books[i] = own(resp.Books[i])
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Service) get(w http.ResponseWriter, r *http.Request, c caller) error {
	id, err := bookID(r)
	if err != nil {
		return err
	}
	b, err := s.books.get(r.Context(), c.id, id)
	if err != nil {
		return storeError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, own(b))
	return nil
}

func (s *Service) replace(w http.ResponseWriter, r *http.Request, c caller) error {
	id, err := bookID(r)
	if err != nil {
		return err
	}
	raw, err := decodeBook(w, r, s.maxBody)
	if err != nil {
		return err
	}
	f, err := raw.fields()
	if err != nil {
		return err
	}
	b, err := s.books.replace(r.Context(), c.id, id, f)
	if err != nil {
		return storeError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, own(b))
	return nil
}

func (s *Service) update(w http.ResponseWriter, r *http.Request, c caller) error {
	id, err := bookID(r)
	if err != nil {
		return err
	}
	raw, err := decodeBook(w, r, s.maxBody)
	if err != nil {
		return err
	}
	p, err := raw.patch()
	if err != nil {
		return err
	}
	b, err := s.books.update(r.Context(), c.id, id, p)
	if err != nil {
		return storeError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, own(b))
	return nil
}

func (s *Service) delete(w http.ResponseWriter, r *http.Request, c caller) error {
	id, err := bookID(r)
	if err != nil {
		return err
	}
	if err := s.books.delete(r.Context(), c.id, id); err != nil {
		return storeError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
