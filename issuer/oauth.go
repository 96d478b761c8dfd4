package issuer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// OAuth 2.0 sessions: the token endpoint (RFC 6749 §3.2) with the
// password and refresh_token grants, revocation (RFC 7009), logout, an
// admin's revocation of all of a user's sessions, and the revocation
// feed that authz follows.

// DefaultClient is the public client /login issues to.
const DefaultClient = "tollgate-cli"

// Session defaults.
const (
	DefaultSessionIdleTTL = 14 * 24 * time.Hour
	DefaultSessionMaxTTL  = 90 * 24 * time.Hour
	maxFormBody           = 16 << 10
	refreshTokenBytes     = 32
	// maxTokenLifetime is the longest TokenTTL validate allows: a
	// subject's not-before is kept that long, so every token it refuses
	// has expired when it goes, whatever TokenTTL was.
	maxTokenLifetime = 24 * time.Hour
	pruneInterval    = 10 * time.Minute
)

// oauthError is an error answer of the token, revocation and logout
// endpoints (RFC 6749 §5.2): a status, an error code and a description.
type oauthError struct {
	status int
	code   string
	desc   string
	header http.Header
	cause  error // for the log only
}

func (e *oauthError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.status, e.code, e.desc, e.cause)
	}
	return fmt.Sprintf("%d %s: %s", e.status, e.code, e.desc)
}

func (e *oauthError) Unwrap() error { return e.cause }

func oauthErr(status int, code, desc string) *oauthError {
	return &oauthError{status: status, code: code, desc: desc}
}

func errInvalidGrant(cause error) *oauthError {
	e := oauthErr(http.StatusBadRequest, "invalid_grant", "the grant is invalid, expired, revoked or was issued to another client")
	e.cause = cause
	return e
}

// oauthHandler adapts an OAuth endpoint: an *oauthError is written as
// RFC 6749 §5.2 says; the shared login path's *httpapi.Error is mapped
// onto an OAuth code; anything else is a logged 500 whose cause is never
// shown. Every answer is no-store.
func oauthHandler(h httpapi.HandlerFunc) httpapi.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		err := h(w, r)
		if err == nil {
			return nil
		}
		var oe *oauthError
		var he *httpapi.Error
		switch {
		case errors.As(err, &oe):
		case errors.As(err, &he) && he.Status == http.StatusUnauthorized:
			// The password grant's bad credentials (RFC 6749 §5.2).
			oe = &oauthError{status: http.StatusBadRequest, code: "invalid_grant", desc: he.Msg, cause: he.Err}
		case errors.As(err, &he) && (he.Status == http.StatusTooManyRequests || he.Status == http.StatusServiceUnavailable):
			oe = &oauthError{status: he.Status, code: "temporarily_unavailable", desc: he.Msg, header: he.Header, cause: he.Err}
		case errors.As(err, &he) && he.Status < 500:
			oe = &oauthError{status: he.Status, code: "invalid_request", desc: he.Msg, header: he.Header, cause: he.Err}
		default:
			return err // httpapi logs it and answers 500
		}
		writeOAuthError(w, r, oe)
		return nil
	}
}

// writeOAuthError writes oe as RFC 6749 §5.2 says, and logs it.
func writeOAuthError(w http.ResponseWriter, r *http.Request, oe *oauthError) {
	log := httpapi.Logger(r.Context())
	log.Info("oauth request refused", "status", oe.status, "error", oe.code, "err", oe.cause)
	for k, vs := range oe.header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	httpapi.WriteJSON(w, oe.status, map[string]string{"error": oe.code, "error_description": oe.desc})
}

// oauthErrors writes an *oauthError h returns as oauthHandler does and
// leaves every other error to httpapi: /login answers its own errors as
// the tutorial's clients expect, and its DPoP errors as RFC 9449 §5
// gives them.
func oauthErrors(h httpapi.HandlerFunc) httpapi.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		err := h(w, r)
		var oe *oauthError
		if errors.As(err, &oe) {
			writeOAuthError(w, r, oe)
			return nil
		}
		return err
	}
}

// readForm reads an application/x-www-form-urlencoded body, refusing
// another content type, an oversized body and a parameter given twice
// (RFC 6749 §3.2). Query parameters are ignored.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, oauthErr(http.StatusRequestEntityTooLarge, "invalid_request", fmt.Sprintf("request body is larger than %d bytes", maxFormBody))
		}
		return nil, &oauthError{status: http.StatusBadRequest, code: "invalid_request", desc: "request body is not a valid form", cause: err}
	}
	for k, vs := range r.PostForm {
		if len(vs) > 1 {
			return nil, oauthErr(http.StatusBadRequest, "invalid_request", fmt.Sprintf("parameter %q is given more than once", k))
		}
	}
	return r.PostForm, nil
}

// client checks the public client named in form (RFC 6749 §2.1, §3.2.1).
func (s *Service) client(form url.Values) (string, error) {
	id := form.Get("client_id")
	if !s.clients[id] {
		return "", oauthErr(http.StatusUnauthorized, "invalid_client", "unknown client")
	}
	return id, nil
}

// tokenAnswer is the /token success answer (RFC 6749 §5.1).
type tokenAnswer struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// token is POST /token.
func (s *Service) token(w http.ResponseWriter, r *http.Request) error {
	s.setNonce(w)
	form, err := readForm(w, r)
	if err != nil {
		return err
	}
	grant := form.Get("grant_type")
	if grant == "" {
		return oauthErr(http.StatusBadRequest, "invalid_request", "grant_type is required")
	}
	if grant != "password" && grant != "refresh_token" {
		return oauthErr(http.StatusBadRequest, "unsupported_grant_type", "grant_type must be password or refresh_token")
	}
	clientID, err := s.client(form)
	if err != nil {
		return err
	}
	var iss issued
	switch grant {
	case "password":
		// The proof first: a bad one costs no password hash and is no
		// failed login.
		jkt, err := s.checkProof(r, "/token", "", s.dpopRequired(clientID))
		if err != nil {
			return err
		}
		u, err := s.authenticate(r, form.Get("username"), form.Get("password"))
		if err != nil {
			return err
		}
		if iss, err = s.startSession(r.Context(), u, clientID, jkt); err != nil {
			return err
		}
		s.metrics.logins.WithLabelValues("success").Inc()
	case "refresh_token":
		if s.cfg.DisableRefresh {
			return oauthErr(http.StatusBadRequest, "unsupported_grant_type", "refresh tokens are disabled on this server")
		}
		raw := form.Get("refresh_token")
		if raw == "" {
			return oauthErr(http.StatusBadRequest, "invalid_request", "refresh_token is required")
		}
		if iss, err = s.refresh(r, raw, clientID); err != nil {
			return err
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, tokenAnswer{
		AccessToken:  iss.access,
		TokenType:    tokenType(iss.jkt),
		ExpiresIn:    int64(s.cfg.TokenTTL / time.Second),
		RefreshToken: iss.refresh,
	})
	return nil
}

// issued is what a login or a refresh hands the client.
type issued struct {
	access  string
	refresh string // empty when refresh is off
	jkt     string // the DPoP key the tokens are bound to, or ""
}

// newRefreshToken returns a new opaque refresh token and the hash it is
// stored under.
func newRefreshToken() (raw, hash string, err error) {
	b := make([]byte, refreshTokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("refresh token: %w", err)
	}
	raw = base64.RawURLEncoding.EncodeToString(b)
	return raw, refreshHash(raw), nil
}

// refreshHash is the stored form of a refresh token. The token has 256
// bits of entropy, so a plain SHA-256 (no salt, no stretching) is all a
// lookup key needs.
func refreshHash(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:])
}

// startSession issues u's tokens after a successful password check: an
// access token, and with refresh on a session and its first refresh
// token, stored before anything is returned. jkt, when set, binds the
// access token and the session to that DPoP key.
func (s *Service) startSession(ctx context.Context, u user, clientID, jkt string) (issued, error) {
	now := s.cfg.Now()
	tok, err := s.issueToken(ctx, u, jkt)
	if err != nil {
		return issued{}, err
	}
	a := accessRow{jti: tok.jti, subject: u.publicID, clientID: clientID, exp: tok.exp}
	if s.cfg.DisableRefresh {
		if err := s.sessions.recordAccess(ctx, a); err != nil {
			return issued{}, err
		}
		return issued{access: tok.raw, jkt: jkt}, nil
	}
	raw, hash, err := newRefreshToken()
	if err != nil {
		return issued{}, err
	}
	a.sessionID = uuid.NewString()
	ss := session{id: a.sessionID, subject: u.publicID, clientID: clientID, created: now.UTC(), jkt: jkt}
	if err := s.sessions.create(ctx, ss, hash, a); err != nil {
		return issued{}, err
	}
	return issued{access: tok.raw, refresh: raw, jkt: jkt}, nil
}

// refresh is the refresh_token grant (RFC 6749 §6) with rotation and
// reuse detection (RFC 9700 §4.14.2): the token presented is consumed
// and replaced; presenting a consumed token again ends its session,
// access tokens included.
//
// A session bound to a DPoP key is refreshed only with a proof by that
// key; a refresh without one, or with another key's, is refused before
// the token is consumed, so whoever stole the refresh token but not the
// key can neither use it nor spend it. An unbound session refreshed
// with a proof is bound to that key from then on: RFC 9449 §5 binds
// every refresh token issued to a public client that presents a proof,
// and rotation issues one.
func (s *Service) refresh(r *http.Request, raw, clientID string) (issued, error) {
	ctx := r.Context()
	log := httpapi.Logger(ctx)
	now := s.cfg.Now()
	oldHash := refreshHash(raw)
	// The replacement tokens are made first, outside the transaction
	// that decides whether this refresh wins; a loser's are dropped.
	ss, err := s.sessions.refreshSession(ctx, oldHash)
	if errors.Is(err, errNotFound) {
		s.metrics.refreshes.WithLabelValues("invalid").Inc()
		return issued{}, errInvalidGrant(errRefreshUnknown)
	}
	if err != nil {
		return issued{}, err
	}
	jkt, err := s.checkProof(r, "/token", ss.jkt, s.dpopRequired(clientID))
	if err != nil {
		s.metrics.refreshes.WithLabelValues("invalid").Inc()
		return issued{}, err
	}
	u, err := s.users.byPublicID(ctx, ss.subject)
	if errors.Is(err, errNotFound) {
		s.metrics.refreshes.WithLabelValues("invalid").Inc()
		return issued{}, errInvalidGrant(err)
	}
	if err != nil {
		return issued{}, err
	}
	tok, err := s.issueToken(ctx, u, jkt)
	if err != nil {
		return issued{}, err
	}
	newRaw, newHash, err := newRefreshToken()
	if err != nil {
		return issued{}, err
	}
	out := issued{access: tok.raw, refresh: newRaw, jkt: jkt}
	sid, err := s.sessions.rotate(ctx, rotation{
		oldHash:  oldHash,
		clientID: clientID,
		now:      now,
		idle:     s.cfg.SessionIdleTTL,
		absolute: s.cfg.SessionMaxTTL,
		newHash:  newHash,
		access:   accessRow{jti: tok.jti, subject: u.publicID, exp: tok.exp},
		jkt:      jkt,
	})
	switch {
	case err == nil:
		s.metrics.refreshes.WithLabelValues("rotated").Inc()
		log.Info("refresh token rotated", "session", sid)
		return out, nil
	case errors.Is(err, errRefreshReused):
		s.metrics.refreshes.WithLabelValues("reused").Inc()
		if _, rerr := s.sessions.revokeSession(ctx, sid, now); rerr != nil {
			return issued{}, fmt.Errorf("revoke session %s after refresh token reuse: %w", sid, rerr)
		}
		log.Warn("refresh token reused: session revoked with its access tokens", "session", sid, "client_id", clientID)
		return issued{}, errInvalidGrant(err)
	case errors.Is(err, errRefreshUnknown), errors.Is(err, errSessionEnded), errors.Is(err, errWrongClient), errors.Is(err, errNotFound):
		s.metrics.refreshes.WithLabelValues("invalid").Inc()
		return issued{}, errInvalidGrant(err)
	}
	return issued{}, err
}

// revoke is POST /revoke (RFC 7009): an access or a refresh token of the
// calling client is revoked; a token the issuer does not know, or that
// is no longer valid, is answered 200 all the same (§2.2).
func (s *Service) revoke(w http.ResponseWriter, r *http.Request) error {
	form, err := readForm(w, r)
	if err != nil {
		return err
	}
	clientID, err := s.client(form)
	if err != nil {
		return err
	}
	tok := form.Get("token")
	if tok == "" {
		return oauthErr(http.StatusBadRequest, "invalid_request", "token is required")
	}
	hint := form.Get("token_type_hint")
	if hint != "" && hint != "access_token" && hint != "refresh_token" {
		return oauthErr(http.StatusBadRequest, "unsupported_token_type", "token_type_hint must be access_token or refresh_token")
	}
	ctx := r.Context()
	// Refresh tokens are opaque and access tokens are JWTs: a token with
	// dots can only be an access token, whatever the hint says.
	if strings.Count(tok, ".") == 2 {
		err = s.revokeAccessToken(ctx, tok, clientID)
	} else {
		err = s.revokeRefreshToken(ctx, tok, clientID)
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Service) revokeRefreshToken(ctx context.Context, raw, clientID string) error {
	ss, err := s.sessions.refreshSession(ctx, refreshHash(raw))
	if errors.Is(err, errNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	sid := ss.id
	if ss.clientID != clientID {
		return oauthErr(http.StatusBadRequest, "unauthorized_client", "the token was issued to another client")
	}
	if _, err := s.sessions.revokeSession(ctx, sid, s.cfg.Now()); err != nil {
		return err
	}
	s.metrics.revocations.WithLabelValues("refresh_token").Inc()
	httpapi.Logger(ctx).Info("session revoked", "session", sid, "by", "refresh_token")
	return nil
}

func (s *Service) revokeAccessToken(ctx context.Context, raw, clientID string) error {
	claims, err := s.verifyOwn(raw)
	if err != nil {
		return nil // not a valid token of ours: nothing to revoke (§2.2)
	}
	a, err := s.sessions.accessByJTI(ctx, claims.JwtID())
	switch {
	case errors.Is(err, errNotFound):
		// Signed by us but not recorded (issued before sessions
		// existed): revoke it by jti all the same.
		a = accessRow{jti: claims.JwtID(), exp: claims.Expiration(), clientID: clientID}
	case err != nil:
		return err
	}
	if a.clientID != clientID {
		return oauthErr(http.StatusBadRequest, "unauthorized_client", "the token was issued to another client")
	}
	if err := s.sessions.revokeAccess(ctx, a.jti, a.exp); err != nil {
		return err
	}
	s.metrics.revocations.WithLabelValues("access_token").Inc()
	httpapi.Logger(ctx).Info("access token revoked", "jti", a.jti)
	return nil
}

// logout is POST /logout: the caller's access token (which the issuer
// verifies itself: the route is public at the gateway) ends its session,
// refresh tokens and current access token alike. 204.
func (s *Service) logout(w http.ResponseWriter, r *http.Request) error {
	raw, scheme := presentedToken(r)
	if raw == "" {
		e := httpapi.Errorf(http.StatusUnauthorized, nil, "an access token is required")
		e.Header = http.Header{"Www-Authenticate": {`Bearer realm="tollgate"`, s.dpopChallenge("")}}
		return e
	}
	claims, err := s.verifyOwn(raw)
	if err != nil {
		e := httpapi.Errorf(http.StatusUnauthorized, err, "token is invalid")
		e.Header = http.Header{"Www-Authenticate": {`Bearer realm="tollgate", error="invalid_token"`, s.dpopChallenge("")}}
		if scheme == dpop.Scheme {
			e.Header = http.Header{"Www-Authenticate": {`Bearer realm="tollgate"`, s.dpopChallenge("invalid_token")}}
		}
		return e
	}
	if err := s.checkBoundToken(r, "/logout", raw, scheme, claims); err != nil {
		return err
	}
	ctx := r.Context()
	a, err := s.sessions.accessByJTI(ctx, claims.JwtID())
	if err != nil && !errors.Is(err, errNotFound) {
		return err
	}
	if a.sessionID != "" {
		if _, err := s.sessions.revokeSession(ctx, a.sessionID, s.cfg.Now()); err != nil {
			return err
		}
	}
	// The session's revocation covers its access tokens; this one is
	// revoked by name as well, in case it has no session.
	if err := s.sessions.revokeAccess(ctx, claims.JwtID(), claims.Expiration()); err != nil {
		return err
	}
	s.metrics.revocations.WithLabelValues("logout").Inc()
	httpapi.Logger(ctx).Info("logout", "user_id", claims.Subject(), "session", a.sessionID)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// presentedToken returns the access token of r and how it came:
// Authorization Bearer or DPoP first, then the tutorial's headers
// (scheme "").
func presentedToken(r *http.Request) (tok, scheme string) {
	if sch, rest, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok {
		switch {
		case strings.EqualFold(sch, "bearer"):
			return strings.TrimSpace(rest), "Bearer"
		case strings.EqualFold(sch, dpop.Scheme):
			return strings.TrimSpace(rest), dpop.Scheme
		}
	}
	for _, h := range []string{"X-Access-Tokens", "X-Access-Token"} {
		if v := r.Header.Get(h); v != "" {
			return v, ""
		}
	}
	return "", ""
}

// maxOwnTokenBytes bounds a token the issuer parses itself.
const maxOwnTokenBytes = 8 << 10

// verifyOwn verifies a token the issuer signed: a published key, this
// issuer, this audience, not expired.
func (s *Service) verifyOwn(raw string) (jwt.Token, error) {
	if len(raw) > maxOwnTokenBytes {
		return nil, errors.New("token too large")
	}
	set, err := s.keys.publicSet(s.cfg.Now())
	if err != nil {
		return nil, err
	}
	return jwt.ParseString(raw,
		jwt.WithKeySet(set, jws.WithRequireKid(true)),
		jwt.WithValidate(true),
		jwt.WithIssuer(s.cfg.IssuerURL),
		jwt.WithAudience(s.cfg.Audience),
		jwt.WithClock(jwt.ClockFunc(s.cfg.Now)),
		jwt.WithAcceptableSkew(30*time.Second),
		jwt.WithRequiredClaim("jti"),
		jwt.WithRequiredClaim("sub"),
		jwt.WithRequiredClaim("exp"),
	)
}

// publicSet returns the published keys as a key set, to verify the
// issuer's own tokens.
func (kr *keyring) publicSet(now time.Time) (jwk.Set, error) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	set := jwk.NewSet()
	for _, k := range kr.publishedLocked(now) {
		if err := set.AddKey(k.public); err != nil {
			return nil, fmt.Errorf("build key set: %w", err)
		}
	}
	return set, nil
}

// revokeUser is POST /users/{id}/revoke, for admins: every token of the
// user issued until now is refused and every session ends. 204.
//
// Token times are whole seconds, so the not-before is the revocation
// time rounded up to the next second: a token issued in the same second
// before the revocation has iat below it and is refused, and tokens
// issued from now on get an iat of at least the not-before (issueToken
// sees to that), so a login right after the revocation works at once.
func (s *Service) revokeUser(w http.ResponseWriter, r *http.Request) error {
	if r.Header.Get("X-User-Id") == "" {
		e := httpapi.Errorf(http.StatusUnauthorized, nil, "authentication required")
		e.Header = http.Header{"Www-Authenticate": {`Bearer realm="tollgate"`}}
		return e
	}
	if !hasRole(r.Header.Values("X-User-Roles"), "admin") {
		return httpapi.Errorf(http.StatusForbidden, nil, "the admin role is required")
	}
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return httpapi.Errorf(http.StatusBadRequest, nil, "id must be a user id (a UUID)")
	}
	ctx := r.Context()
	if _, err := s.users.byPublicID(ctx, id); errors.Is(err, errNotFound) {
		return httpapi.Errorf(http.StatusNotFound, nil, "no such user")
	} else if err != nil {
		return err
	}
	now := s.cfg.Now()
	nb := ceilSecond(now)
	if err := s.sessions.revokeSubject(ctx, id, nb, nb.Add(maxTokenLifetime+time.Minute), now); err != nil {
		return err
	}
	s.metrics.revocations.WithLabelValues("user").Inc()
	httpapi.Logger(ctx).Info("all sessions of user revoked", "user_id", id, "by", r.Header.Get("X-User-Id"), "not_before", nb.Unix())
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ceilSecond rounds t up to a whole second.
func ceilSecond(t time.Time) time.Time {
	f := t.Truncate(time.Second)
	if f.Before(t) {
		return f.Add(time.Second)
	}
	return f
}

// feedAnswer is the GET /revocations answer.
type feedAnswer struct {
	Issuer   string           `json:"iss"`
	Version  int64            `json:"version"`
	Full     bool             `json:"full"`
	Tokens   []revokedToken   `json:"tokens"`
	Subjects []revokedSubject `json:"subjects"`
}

// revocations is GET /revocations?since=V, the feed authz follows: the
// revocations recorded after version V (all live ones when V is absent,
// 0, or ahead of this database), and the current version. ETag is the
// version, so If-None-Match with it is a 304 until something is
// revoked. It is not routed at the gateway.
func (s *Service) revocations(w http.ResponseWriter, r *http.Request) error {
	var since int64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return httpapi.Errorf(http.StatusBadRequest, nil, "since must be a non-negative integer")
		}
		since = n
	}
	ctx := r.Context()
	now := s.cfg.Now()
	version, toks, subs, err := s.sessions.feed(ctx, since, false, now)
	if err != nil {
		return err
	}
	full := since == 0
	if since > version {
		// A follower ahead of the database (restored from a backup, or
		// pointed at another one) starts over.
		full = true
		if version, toks, subs, err = s.sessions.feed(ctx, 0, true, now); err != nil {
			return err
		}
	}
	etag := `"` + strconv.FormatInt(version, 10) + `"`
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-cache")
	if !full && r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	if toks == nil {
		toks = []revokedToken{}
	}
	if subs == nil {
		subs = []revokedSubject{}
	}
	body, err := json.Marshal(feedAnswer{Issuer: s.cfg.IssuerURL, Version: version, Full: full, Tokens: toks, Subjects: subs})
	if err != nil {
		return fmt.Errorf("encode revocations: %w", err)
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// pruneSessions deletes expired session data now and then.
func (s *Service) pruneSessions(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		if err := s.sessions.prune(ctx, s.cfg.Now(), s.cfg.SessionMaxTTL); err != nil && ctx.Err() == nil {
			s.log.Warn("prune expired sessions and revocations", "err", err)
		}
		if err := s.throttle.prune(ctx, s.cfg.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("prune login throttle", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
