package resilience

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/tollgate-dev/tollgate/books"
	"github.com/tollgate-dev/tollgate/issuer"
)

// User is an account on the stack.
type User struct {
	Name, Password string
	// ID is the public id (the tokens' sub).
	ID string
}

// NewUser returns a user with a fresh name and password.
func NewUser(prefix string) *User {
	return &User{Name: prefix + "-" + strings.ToLower(rand.Text()[:12]), Password: "pw " + rand.Text()}
}

// Token is a token the issuer signed, with what its claims say.
type Token struct {
	Raw string
	Kid string
	Sub string
	Exp time.Time
}

// ParseToken reads a token's kid, sub and exp without verifying it: the
// test only needs to know which key signed it and when it expires.
func ParseToken(raw string) (*Token, error) {
	var c jwt.RegisteredClaims
	t, _, err := jwt.NewParser().ParseUnverified(raw, &c)
	if err != nil {
		return nil, fmt.Errorf("parse token: %w", err)
	}
	kid, _ := t.Header["kid"].(string)
	if c.ExpiresAt == nil {
		return nil, errors.New("token has no exp")
	}
	return &Token{Raw: raw, Kid: kid, Sub: c.Subject, Exp: c.ExpiresAt.Time}, nil
}

// APIError is a status the client did not want.
type APIError struct {
	Op     string
	Status int
	Body   string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s = %d %s", e.Op, e.Status, strings.TrimSpace(e.Body))
}

// Client speaks the Tollgate API to one base URL (the gateway, or a
// service directly for checks on the upstream side).
type Client struct {
	Base string
	HTTP *http.Client
}

// NewAPIClient returns a Client for base, loopback only.
func NewAPIClient(base string) *Client { return &Client{Base: base, HTTP: NewClient(8)} }

func (c *Client) do(ctx context.Context, method, path string, body any, hdr http.Header, out any, want ...int) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	ok := len(want) == 0
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		return resp.StatusCode, &APIError{Op: method + " " + path, Status: resp.StatusCode, Body: string(data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode %q: %w", method, path, data, err)
		}
	}
	return resp.StatusCode, nil
}

// Register creates u and fills in its ID.
func (c *Client) Register(ctx context.Context, u *User) error {
	var out struct {
		ID string `json:"id"`
	}
	if _, err := c.do(ctx, http.MethodPost, "/register", map[string]string{"name": u.Name, "password": u.Password}, nil, &out, http.StatusCreated); err != nil {
		return err
	}
	u.ID = out.ID
	return nil
}

// LoginRequest is a POST /login for u.
func (c *Client) LoginRequest(u *User) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, c.Base+"/login", nil)
	req.SetBasicAuth(u.Name, u.Password)
	return req
}

// Login logs u in and returns its token.
func (c *Client) Login(ctx context.Context, u *User) (*Token, error) {
	var out struct {
		Token string `json:"token"`
	}
	hdr := http.Header{}
	req := c.LoginRequest(u)
	hdr.Set("Authorization", req.Header.Get("Authorization"))
	if _, err := c.do(ctx, http.MethodPost, "/login", nil, hdr, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return ParseToken(out.Token)
}

// Retry calls f until it succeeds, ctx ends, or limit passes, and
// returns its last error.
func Retry(ctx context.Context, limit time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %v: %w", limit, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// BookInput is the body of a book write.
type BookInput struct {
	Name      string `json:"name"`
	Author    string `json:"author"`
	Publisher string `json:"publisher"`
	BookPrize int64  `json:"book_prize"`
}

// NewBookInput returns a book with a unique name and fields derived from
// it, so a partial row is easy to tell from a whole one.
func NewBookInput(seq int) BookInput {
	n := fmt.Sprintf("book-%d-%s", seq, strings.ToLower(rand.Text()[:8]))
	return BookInput{Name: n, Author: "author of " + n, Publisher: "publisher of " + n, BookPrize: int64(seq%1000 + 1)}
}

// jsonBody encodes v as a request body.
func jsonBody(v any) io.Reader {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return bytes.NewReader(b)
}

// BearerHeader returns the headers that carry tok.
func BearerHeader(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// IdentityHeader returns the headers the gateway gives an upstream for a
// caller: for checks made directly on a service, behind the gateway.
func IdentityHeader(id string, roles ...string) http.Header {
	return http.Header{"X-User-Id": {id}, "X-User-Roles": {strings.Join(roles, ",")}}
}

// ListAllBooks lists every book of every user, from books directly as an
// admin.
func (c *Client) ListAllBooks(ctx context.Context) ([]books.Book, error) {
	var all []books.Book
	cursor := ""
	for range 100000 {
		q := url.Values{"all": {"true"}, "limit": {fmt.Sprint(books.MaxLimit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page books.List
		if _, err := c.do(ctx, http.MethodGet, "/books?"+q.Encode(), nil, IdentityHeader(uuid.NewString(), "admin", "user"), &page, http.StatusOK); err != nil {
			return nil, err
		}
		all = append(all, page.Books...)
		if page.NextCursor == "" {
			return all, nil
		}
		cursor = page.NextCursor
	}
	return nil, errors.New("list books: too many pages")
}

// ListedUser is a user as GET /users shows it.
type ListedUser struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
}

// ListUsers lists every user, from the issuer directly as an admin.
func (c *Client) ListUsers(ctx context.Context) ([]ListedUser, error) {
	var all []ListedUser
	after := ""
	for range 100000 {
		q := url.Values{"limit": {"1000"}}
		if after != "" {
			q.Set("after", after)
		}
		var page struct {
			Users []ListedUser `json:"users"`
			Next  string       `json:"next"`
		}
		if _, err := c.do(ctx, http.MethodGet, "/users?"+q.Encode(), nil, IdentityHeader(uuid.NewString(), "admin", "user"), &page, http.StatusOK); err != nil {
			return nil, err
		}
		all = append(all, page.Users...)
		if page.Next == "" {
			return all, nil
		}
		after = page.Next
	}
	return nil, errors.New("list users: too many pages")
}

// Forger signs tokens with a key the issuer never published: what an
// attacker holding no real key can do.
type Forger struct {
	key *ecdsa.PrivateKey
	kid string
}

// NewForger generates the attacker's key.
func NewForger() (*Forger, error) {
	data, kid, err := issuer.GenerateKeyPEM(issuer.ES256)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("forger: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("forger: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("forger: key is %T", k)
	}
	return &Forger{key: ec, kid: kid}, nil
}

// Forge returns a token with the claims a real admin token for sub would
// have, signed by the forger's key under kid (its own kid when empty,
// which authz does not know; a real kid makes it a bad signature).
func (f *Forger) Forge(sub, kid string) string {
	if kid == "" {
		kid = f.kid
	}
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": IssuerURL, "aud": "tollgate", "sub": sub, "name": "admin",
		"roles": []string{"admin", "user"}, "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "jti": uuid.NewString(),
	})
	t.Header["kid"] = kid
	s, err := t.SignedString(f.key)
	if err != nil {
		panic(err) // ES256 signing with a valid key does not fail
	}
	return s
}

// Keys tracks which signing keys the test has withdrawn and when, to
// tell what authz must decide for a token at a given moment.
type Keys struct {
	// Bound is how long a withdrawal may take to reach authz.
	Bound time.Duration
	// Leeway is authz's clock-skew allowance on exp.
	Leeway time.Duration

	mu        sync.Mutex
	withdrawn map[string]time.Time
}

// Withdrawn records that kid left the JWKS at t.
func (k *Keys) Withdrawn(kid string, t time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.withdrawn == nil {
		k.withdrawn = map[string]time.Time{}
	}
	k.withdrawn[kid] = t
}

// IsWithdrawn reports whether kid has been withdrawn.
func (k *Keys) IsWithdrawn(kid string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.withdrawn[kid]
	return ok
}

// expirySlack covers exp's one-second resolution and the moments
// between a request's send time and authz's check.
const expirySlack = time.Second

// Expect returns what a check of tok sent at sent and answered at done
// must decide: allow while its key is published and it has not expired,
// deny once a withdrawal had Bound to take effect or it expired beyond
// the leeway, and either in between.
func (k *Keys) Expect(tok *Token, sent, done time.Time) Expect {
	k.mu.Lock()
	w, withdrawn := k.withdrawn[tok.Kid]
	k.mu.Unlock()
	deny := tok.Exp.Add(k.Leeway + expirySlack)
	if withdrawn {
		deny = minTime(deny, w.Add(k.Bound))
	}
	allowUntil := tok.Exp.Add(-expirySlack)
	if withdrawn {
		allowUntil = minTime(allowUntil, w)
	}
	switch {
	case !sent.Before(deny):
		return ExpectDeny
	case done.Before(allowUntil):
		return ExpectAllow
	}
	return ExpectEither
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
