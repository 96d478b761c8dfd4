// Package tutorial runs the tutorial's flow against a running Tollgate
// gateway, as a client would: register, log in, create, list and delete
// books, and the checks that make it safe (no token is 401, a forged
// identity header never reaches books, a tampered token is refused, an
// unknown path is 404, and with authz gone every protected route fails
// closed).
//
// It is shared by the end-to-end tests that run the stack on one machine
// and by the kind end-to-end test that runs it in a cluster behind the
// real Envoy. It only speaks HTTP to the base URL it is given; it never
// starts or stops anything.
package tutorial

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Options tune a run. The zero value registers a fresh user.
type Options struct {
	// Name and Password of the user the flow registers; empty means a
	// generated name and password, so runs never collide.
	Name, Password string
	// AdminName and AdminPassword, when set, add the admin steps: the
	// admin lists GET /users and sees no password hash.
	AdminName, AdminPassword string
	// Book is the JSON body of the tutorial's POST /book (its
	// book1.json); nil means a built-in book of the same shape. It must
	// have a "name".
	Book []byte
}

// Step is one named step of the flow. Steps run in order and share state
// (the token, the book's id), so a failed step makes the rest pointless.
type Step struct {
	Name string
	Run  func(ctx context.Context) error
}

// Run runs every step of the flow against baseURL (for example
// http://localhost:8080) and returns the first failure, naming its step.
func Run(ctx context.Context, baseURL string, client *http.Client, opts Options) error {
	for _, s := range Steps(baseURL, client, opts) {
		if err := s.Run(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return nil
}

// flow is the state the steps share.
type flow struct {
	base   string
	client *http.Client
	opts   Options
	token  string
	bookID int64
}

// newFlow returns the state of a flow against baseURL. Its client never
// follows redirects, as curl does not without -L: a redirect is an
// answer to check, not a way round one.
func newFlow(baseURL string, client *http.Client, opts Options) *flow {
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &flow{base: strings.TrimSuffix(baseURL, "/"), client: &c, opts: opts}
}

// Steps returns the flow as steps, for callers that want one subtest per
// step:
//
//	for _, s := range tutorial.Steps(url, client, opts) {
//		if !t.Run(s.Name, func(t *testing.T) { ... s.Run(ctx) ... }) {
//			break
//		}
//	}
func Steps(baseURL string, client *http.Client, opts Options) []Step {
	if opts.Name == "" {
		opts.Name = "tutorial-" + strings.ToLower(rand.Text()[:10])
	}
	if opts.Password == "" {
		opts.Password = "tutorial " + rand.Text()
	}
	if opts.Book == nil {
		opts.Book = book1
	}
	f := newFlow(baseURL, client, opts)
	steps := []Step{
		{"register", f.register},
		{"users without a token is 401", f.usersWithoutToken},
		{"login with HTTP Basic", f.login},
		{"create a book (POST /book, x-access-tokens)", f.createBook},
		{"list books with the token", f.listBooks},
		{"list books with Authorization: Bearer", f.listBooksBearer},
		{"list books without a token is 401", f.listWithoutToken},
		{"forged identity without a token is 401", f.forgedWithoutToken},
		{"forged identity with a token is overwritten", f.forgedWithToken},
		{"create with a forged identity and no token is 401", f.forgedCreateWithoutToken},
		{"create with a forged identity is owned by the token's user", f.forgedCreateWithToken},
		{"tampered token is 401", f.tamperedToken},
		{"users as a plain user is 403", f.usersAsUser},
		{"path tricks get the check of the path they normalize to", f.pathTricks},
		{"unknown path is 404", f.unknownPath},
		{"unknown paths are never forwarded", f.unknownNeverForwarded},
		{"delete the book", f.deleteBook},
		{"delete it again is 404", f.deleteAgain},
	}
	if opts.AdminName != "" {
		steps = append(steps, Step{"admin lists users without hashes", f.adminUsers})
	}
	return steps
}

// response is what a step looks at.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (f *flow) do(ctx context.Context, method, path string, body []byte, header ...string) (response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := newRequest(ctx, method, f.base, path, r)
	if err != nil {
		return response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return response{}, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// newRequest makes a request whose request-target is base's path
// followed by target byte for byte, the way `curl --path-as-is` sends
// it: Go's URL handling would otherwise leave dot segments and escapes
// as they are only by accident.
func newRequest(ctx context.Context, method, base, target string, body io.Reader) (*http.Request, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("base URL: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, base, body)
	if err != nil {
		return nil, err
	}
	full := u.EscapedPath() + target
	ru := &url.URL{Scheme: u.Scheme, Host: u.Host, User: u.User}
	if strings.HasPrefix(full, "//") {
		// An opaque "//x" would be sent as an absolute URL.
		ru.Path, ru.RawPath = full, full
	} else {
		ru.Opaque = full
	}
	req.URL = ru
	return req, nil
}

// expect checks the status of a request and returns the response.
func (f *flow) expect(ctx context.Context, want int, method, path string, body []byte, header ...string) (response, error) {
	resp, err := f.do(ctx, method, path, body, header...)
	if err != nil {
		return resp, err
	}
	if resp.status != want {
		return resp, fmt.Errorf("%s %s = %d, want %d; body: %.300s", method, path, resp.status, want, resp.body)
	}
	return resp, nil
}

func (f *flow) register(ctx context.Context) error {
	body, _ := json.Marshal(map[string]string{"name": f.opts.Name, "password": f.opts.Password})
	_, err := f.expect(ctx, http.StatusCreated, "POST", "/register", body)
	return err
}

func (f *flow) usersWithoutToken(ctx context.Context) error {
	_, err := f.expect(ctx, http.StatusUnauthorized, "GET", "/users", nil)
	return err
}

// login logs in with HTTP Basic, as `curl -X POST
// http://name:password@host/login` does, and keeps the token.
func (f *flow) login(ctx context.Context) error {
	token, err := f.loginAs(ctx, f.opts.Name, f.opts.Password)
	f.token = token
	return err
}

func (f *flow) loginAs(ctx context.Context, name, password string) (string, error) {
	// The user and password go in the URL, as in the tutorial's curl
	// command; Go's client turns them into Basic credentials as curl does.
	u, err := url.Parse(f.base + "/login")
	if err != nil {
		return "", err
	}
	u.User = url.UserPassword(name, password)
	req, err := http.NewRequestWithContext(ctx, "POST", u.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("POST /login: %w", err)
	}
	defer resp.Body.Close()
	var t struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return "", fmt.Errorf("POST /login as %s = %d, want 200; body: %s", name, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return "", fmt.Errorf("POST /login: decode: %w", err)
	}
	if t.Token == "" || t.AccessToken != t.Token || t.TokenType != "Bearer" || t.ExpiresIn <= 0 {
		return "", fmt.Errorf("POST /login = %+v, want token = access_token, token_type Bearer, expires_in > 0", t)
	}
	return t.Token, nil
}

// book1 is the tutorial's book1.json, with its capitalised "Author".
var book1 = []byte(`{"name": "The Hobbit", "Author": "J. R. R. Tolkien", "Publisher": "George Allen & Unwin", "book_prize": 12}`)

func (f *flow) createBook(ctx context.Context) error {
	id, err := f.create(ctx, "x-access-tokens", f.token)
	f.bookID = id
	return err
}

// create posts the flow's book with the given headers, expecting 201, and
// returns the new book's id.
func (f *flow) create(ctx context.Context, header ...string) (int64, error) {
	var want struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(f.opts.Book, &want); err != nil || want.Name == "" {
		return 0, fmt.Errorf("the book to post has no name: %.200s", f.opts.Book)
	}
	resp, err := f.expect(ctx, http.StatusCreated, "POST", "/book", f.opts.Book, header...)
	if err != nil {
		return 0, err
	}
	var b struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(resp.body, &b); err != nil || b.ID == 0 || b.Name != want.Name {
		return 0, fmt.Errorf("POST /book answered %s, want the created book %q with its id", resp.body, want.Name)
	}
	return b.ID, nil
}

// listed returns the ids in a GET /books answer.
func listed(resp response) ([]int64, error) {
	var l struct {
		Books []struct {
			ID int64 `json:"id"`
		} `json:"list_of_books"`
	}
	if err := json.Unmarshal(resp.body, &l); err != nil {
		return nil, fmt.Errorf("GET /books: decode %.200s: %w", resp.body, err)
	}
	var ids []int64
	for _, b := range l.Books {
		ids = append(ids, b.ID)
	}
	return ids, nil
}

// listOwn lists the caller's books and checks they are exactly the one
// this flow created.
func (f *flow) listOwn(ctx context.Context, header ...string) error {
	resp, err := f.expect(ctx, http.StatusOK, "GET", "/books", nil, header...)
	if err != nil {
		return err
	}
	ids, err := listed(resp)
	if err != nil {
		return err
	}
	if !slices.Equal(ids, []int64{f.bookID}) {
		return fmt.Errorf("GET /books listed %v, want only the user's book [%d]", ids, f.bookID)
	}
	return nil
}

func (f *flow) listBooks(ctx context.Context) error {
	return f.listOwn(ctx, "x-access-tokens", f.token)
}

func (f *flow) listBooksBearer(ctx context.Context) error {
	return f.listOwn(ctx, "Authorization", "Bearer "+f.token)
}

func (f *flow) listWithoutToken(ctx context.Context) error {
	resp, err := f.expect(ctx, http.StatusUnauthorized, "GET", "/books", nil)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(resp.header.Get("Www-Authenticate"), "Bearer") {
		return fmt.Errorf("GET /books without a token: WWW-Authenticate = %q, want a Bearer challenge", resp.header.Get("Www-Authenticate"))
	}
	return nil
}

// forgedWithoutToken sends the identity headers books trusts, without a
// token: the gateway must refuse, not forward them.
func (f *flow) forgedWithoutToken(ctx context.Context) error {
	_, err := f.expect(ctx, http.StatusUnauthorized, "GET", "/books", nil,
		"x-user-id", "00000000-0000-0000-0000-000000000000", "x-user-roles", "admin")
	return err
}

// forgedWithToken sends a valid token plus forged identity headers: books
// must see the token's identity (the list is the caller's own) and the
// forged admin role must not open the all-users listing.
func (f *flow) forgedWithToken(ctx context.Context) error {
	h := append([]string{"x-access-tokens", f.token}, forged...)
	if err := f.listOwn(ctx, h...); err != nil {
		return err
	}
	_, err := f.expect(ctx, http.StatusForbidden, "GET", "/books?all=true", nil, h...)
	return err
}

// forged are identity headers a client might try to smuggle.
var forged = []string{"x-user-id", "00000000-0000-0000-0000-000000000000", "x-user-name", "admin", "x-user-roles", "admin"}

// forgedCreateWithoutToken: books would create the book under the forged
// id if the gateway let the request through.
func (f *flow) forgedCreateWithoutToken(ctx context.Context) error {
	_, err := f.expect(ctx, http.StatusUnauthorized, "POST", "/book", f.opts.Book, forged...)
	return err
}

// forgedCreateWithToken creates a book with a valid token and forged
// identity headers: the book must belong to the token's user, who can
// read it without the forged headers (books answers another owner's
// book as a missing one), and can delete it again.
func (f *flow) forgedCreateWithToken(ctx context.Context) error {
	id, err := f.create(ctx, append([]string{"x-access-tokens", f.token}, forged...)...)
	if err != nil {
		return err
	}
	path := fmt.Sprintf("/books/%d", id)
	if _, err := f.expect(ctx, http.StatusOK, "GET", path, nil, "x-access-tokens", f.token); err != nil {
		return fmt.Errorf("the book created with forged headers is not the token user's: %w", err)
	}
	_, err = f.expect(ctx, http.StatusNoContent, "DELETE", path, nil, "x-access-tokens", f.token)
	return err
}

// pathTricks sends a plain user's token, with a forged admin role, to
// paths that mean /users once normalized: each must meet the admin check
// of /users (403), or be refused outright (400 for an encoded slash, 404
// for what is not /users at all), never pass the weaker check of a books
// route or reach the issuer unchecked.
func (f *flow) pathTricks(ctx context.Context) error {
	tricks := []struct {
		path string
		want int
	}{
		{"/books/../users", http.StatusForbidden},
		{"/books/%2e%2e/users", http.StatusForbidden},
		{"/%2e%2e/users", http.StatusForbidden},
		{"/./users", http.StatusForbidden},
		{"//users", http.StatusForbidden},
		{"/books/..%2fusers", http.StatusBadRequest},
		{"/books%2f..%2f..%2fusers", http.StatusBadRequest},
		{"/USERS", http.StatusNotFound},
		{"/users/", http.StatusNotFound},
	}
	for _, tr := range tricks {
		resp, err := f.do(ctx, "GET", tr.path, nil, append([]string{"x-access-tokens", f.token}, forged...)...)
		if err != nil {
			return err
		}
		if resp.status != tr.want {
			return fmt.Errorf("GET %s as a plain user = %d, want %d; body: %.300s", tr.path, resp.status, tr.want, resp.body)
		}
		if strings.Contains(string(resp.body), `"users"`) {
			return fmt.Errorf("GET %s as a plain user listed users: %.300s", tr.path, resp.body)
		}
	}
	return nil
}

func (f *flow) tamperedToken(ctx context.Context) error {
	// Flip one character of the signature.
	t := []byte(f.token)
	i := len(t) - 2
	if t[i] == 'A' {
		t[i] = 'B'
	} else {
		t[i] = 'A'
	}
	_, err := f.expect(ctx, http.StatusUnauthorized, "GET", "/books", nil, "x-access-tokens", string(t))
	return err
}

func (f *flow) usersAsUser(ctx context.Context) error {
	_, err := f.expect(ctx, http.StatusForbidden, "GET", "/users", nil, "x-access-tokens", f.token)
	return err
}

func (f *flow) unknownPath(ctx context.Context) error {
	_, err := f.expect(ctx, http.StatusNotFound, "GET", "/admin", nil, "x-access-tokens", f.token)
	return err
}

// unknownNeverForwarded asks for paths the services behind the gateway
// would answer (their health and metrics endpoints, a method a route
// does not take): the gateway must answer 404 itself, which shows in the
// absence of the upstream timing header a forwarded response carries.
func (f *flow) unknownNeverForwarded(ctx context.Context) error {
	for _, r := range []struct{ method, path string }{
		{"GET", "/metrics"}, {"GET", "/healthz"}, {"GET", "/readyz"},
		{"GET", "/book"}, {"DELETE", "/users"}, {"POST", "/books/1"},
	} {
		resp, err := f.expect(ctx, http.StatusNotFound, r.method, r.path, nil, "x-access-tokens", f.token)
		if err != nil {
			return err
		}
		if t := resp.header.Get("X-Envoy-Upstream-Service-Time"); t != "" {
			return fmt.Errorf("%s %s was forwarded to an upstream (x-envoy-upstream-service-time: %s)", r.method, r.path, t)
		}
	}
	return nil
}

func (f *flow) deleteBook(ctx context.Context) error {
	_, err := f.expect(ctx, http.StatusNoContent, "DELETE", fmt.Sprintf("/books/%d", f.bookID), nil, "x-access-tokens", f.token)
	return err
}

func (f *flow) deleteAgain(ctx context.Context) error {
	_, err := f.expect(ctx, http.StatusNotFound, "DELETE", fmt.Sprintf("/books/%d", f.bookID), nil, "x-access-tokens", f.token)
	return err
}

func (f *flow) adminUsers(ctx context.Context) error {
	token, err := f.loginAs(ctx, f.opts.AdminName, f.opts.AdminPassword)
	if err != nil {
		return err
	}
	resp, err := f.expect(ctx, http.StatusOK, "GET", "/users", nil, "Authorization", "Bearer "+token)
	if err != nil {
		return err
	}
	lower := strings.ToLower(string(resp.body))
	for _, leak := range []string{"password", "hash", "$argon2"} {
		if strings.Contains(lower, leak) {
			return fmt.Errorf("GET /users shows %q: %.300s", leak, resp.body)
		}
	}
	if !strings.Contains(string(resp.body), `"`+f.opts.Name+`"`) {
		return fmt.Errorf("GET /users does not list %s: %.300s", f.opts.Name, resp.body)
	}
	return nil
}

// FailClosed checks that with authz unable to answer, every protected
// route is refused (Envoy's status_on_error, 503; a connection failure
// may also surface as 403 or another 5xx) and never forwarded: token is
// any token the issuer signed, so without the outage each request would
// pass. Public routes are not checked: they never ask authz.
func FailClosed(ctx context.Context, baseURL string, client *http.Client, token string) error {
	return failClosed(ctx, baseURL, client, token, func(status int) bool {
		switch status {
		case http.StatusForbidden, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	})
}

// FailClosedStatus is FailClosed for a gateway whose answer to a failed
// check is known (status_on_error): every protected route must answer
// exactly status.
func FailClosedStatus(ctx context.Context, baseURL string, client *http.Client, token string, status int) error {
	return failClosed(ctx, baseURL, client, token, func(s int) bool { return s == status })
}

func failClosed(ctx context.Context, baseURL string, client *http.Client, token string, refused func(int) bool) error {
	f := newFlow(baseURL, client, Options{})
	routes := []struct{ method, path string }{
		{"GET", "/books"}, {"POST", "/book"}, {"POST", "/books"}, {"GET", "/books/1"},
		{"DELETE", "/books/1"}, {"GET", "/users"},
	}
	for _, r := range routes {
		var body []byte
		if r.method == "POST" {
			body = book1
		}
		resp, err := f.do(ctx, r.method, r.path, body, "x-access-tokens", token)
		if err != nil {
			return err
		}
		if !refused(resp.status) {
			return fmt.Errorf("%s %s with authz down = %d, want it refused (503); body: %.200s", r.method, r.path, resp.status, resp.body)
		}
	}
	return nil
}

// Public checks the routes that need no token, as they must keep working
// while authz is down: it registers a fresh user, logs in, and fetches
// the JWKS and the discovery document.
func Public(ctx context.Context, baseURL string, client *http.Client) error {
	f := newFlow(baseURL, client, Options{})
	name, password := "public-"+strings.ToLower(rand.Text()[:10]), "public "+rand.Text()
	f.opts = Options{Name: name, Password: password}
	if err := f.register(ctx); err != nil {
		return err
	}
	if _, err := f.loginAs(ctx, name, password); err != nil {
		return err
	}
	for _, p := range []string{"/.well-known/jwks.json", "/.well-known/openid-configuration"} {
		if _, err := f.expect(ctx, http.StatusOK, "GET", p, nil); err != nil {
			return err
		}
	}
	return nil
}

// Unauthenticated checks that a request to a protected route with token
// is refused with 401 and a Bearer challenge naming an invalid token, as
// an expired, tampered or foreign token must be.
func Unauthenticated(ctx context.Context, baseURL string, client *http.Client, token string) error {
	f := newFlow(baseURL, client, Options{})
	resp, err := f.expect(ctx, http.StatusUnauthorized, "GET", "/books", nil, "x-access-tokens", token)
	if err != nil {
		return err
	}
	if c := resp.header.Get("Www-Authenticate"); !strings.HasPrefix(c, "Bearer") || !strings.Contains(c, `error="invalid_token"`) {
		return fmt.Errorf("GET /books: WWW-Authenticate = %q, want a Bearer challenge with error=\"invalid_token\"", c)
	}
	return nil
}

// Login logs in as name and returns the token, for callers (like
// FailClosed) that need one.
func Login(ctx context.Context, baseURL string, client *http.Client, name, password string) (string, error) {
	f := newFlow(baseURL, client, Options{})
	return f.loginAs(ctx, name, password)
}

// Register registers a user.
func Register(ctx context.Context, baseURL string, client *http.Client, name, password string) error {
	f := newFlow(baseURL, client, Options{Name: name, Password: password})
	return f.register(ctx)
}
