package issuer

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// Account rules.
const (
	MinNameLen       = 3
	MaxNameLen       = 64
	MinPasswordChars = 8
	MaxPasswordBytes = 1024
	maxRegisterBody  = 16 << 10 // a maximal password, every byte \u-escaped, fits
	defaultListLimit = 100
	maxListLimit     = 1000
)

//go:embed common-passwords.txt
var commonPasswordsText []byte

// commonPasswords are refused at registration, compared in lower case.
var commonPasswords = func() map[string]bool {
	m := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(commonPasswordsText))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			m[strings.ToLower(line)] = true
		}
	}
	return m
}()

// nameKey is the form a name is unique and looked up in. Valid names are
// ASCII, so lower-casing them is exact.
func nameKey(name string) string { return strings.ToLower(name) }

// validateName checks a user name: 3 to 64 ASCII letters, digits, '.',
// '_' or '-', starting and ending with a letter or digit. ASCII only, so
// no two names look alike (no homoglyphs, no invisible characters) and
// every name is safe in a header, a log line and a URL.
func validateName(name string) error {
	if name == "" {
		return errors.New("name is required")
	}
	if !utf8.ValidString(name) {
		return errors.New("name must be valid UTF-8")
	}
	if n := len(name); n < MinNameLen || n > MaxNameLen {
		return fmt.Errorf("name must be %d to %d characters long", MinNameLen, MaxNameLen)
	}
	alnum := func(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !alnum(c) && c != '.' && c != '_' && c != '-' {
			return errors.New("name may contain only ASCII letters, digits, '.', '_' and '-'")
		}
	}
	if !alnum(name[0]) || !alnum(name[len(name)-1]) {
		return errors.New("name must start and end with a letter or a digit")
	}
	return nil
}

// validatePassword checks a password as received, without trimming or
// normalizing it: at least 8 characters, at most 1024 bytes, not the user
// name and not one of the most common passwords.
func validatePassword(password, name string) error {
	if password == "" {
		return errors.New("password is required")
	}
	if len(password) > MaxPasswordBytes {
		return fmt.Errorf("password must be at most %d bytes long", MaxPasswordBytes)
	}
	if utf8.RuneCountInString(password) < MinPasswordChars {
		return fmt.Errorf("password must be at least %d characters long", MinPasswordChars)
	}
	if strings.EqualFold(password, name) {
		return errors.New("password must not be the user name")
	}
	if commonPasswords[strings.ToLower(password)] {
		return errors.New("password is too common; choose another")
	}
	return nil
}

// registration is a POST /register body.
type registration struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// decodeRegistration reads and checks a POST /register body, returning
// an *httpapi.Error (4xx) for everything a client can get wrong.
func decodeRegistration(w http.ResponseWriter, r *http.Request) (registration, error) {
	var req registration
	if err := httpapi.DecodeJSON(w, r, &req, maxRegisterBody); err != nil {
		return registration{}, err
	}
	if err := validateName(req.Name); err != nil {
		return registration{}, httpapi.Errorf(http.StatusBadRequest, nil, "%s", err)
	}
	if err := validatePassword(req.Password, req.Name); err != nil {
		return registration{}, httpapi.Errorf(http.StatusBadRequest, nil, "%s", err)
	}
	return req, nil
}

// errNameUnavailable answers a registration for a taken or reserved name
// alike, so a reserved admin name is indistinguishable from a taken one.
func errNameUnavailable() error {
	return httpapi.Errorf(http.StatusConflict, nil, "name is already taken")
}

// errBusyResponse answers a request the password hasher has no room for.
func errBusyResponse(err error) error {
	e := httpapi.Errorf(http.StatusServiceUnavailable, err, "server is busy; retry shortly")
	e.Header = http.Header{"Retry-After": {"1"}}
	return e
}

func (s *Service) register(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.DisableRegistration {
		s.metrics.registrations.WithLabelValues("disabled").Inc()
		return httpapi.Errorf(http.StatusForbidden, nil, "registration is disabled on this server")
	}
	req, err := decodeRegistration(w, r)
	if err != nil {
		s.metrics.registrations.WithLabelValues("invalid").Inc()
		return err
	}
	ctx := r.Context()
	if s.admins[nameKey(req.Name)] {
		s.metrics.registrations.WithLabelValues("taken").Inc()
		return errNameUnavailable()
	}
	// Checking first spares a hash for a name that is taken; the unique
	// constraint below still decides a race between two registrations.
	if taken, err := s.users.exists(ctx, req.Name); err != nil {
		return err
	} else if taken {
		s.metrics.registrations.WithLabelValues("taken").Inc()
		return errNameUnavailable()
	}
	hash, err := s.hasher.hash(ctx, req.Password)
	if errors.Is(err, errBusy) {
		s.metrics.registrations.WithLabelValues("busy").Inc()
		return errBusyResponse(err)
	}
	if err != nil {
		return err
	}
	u := user{publicID: uuid.NewString(), name: req.Name, passwordHash: hash, created: s.cfg.Now().UTC()}
	if err := s.users.create(ctx, &u); errors.Is(err, errNameTaken) {
		s.metrics.registrations.WithLabelValues("taken").Inc()
		return errNameUnavailable()
	} else if err != nil {
		return err
	}
	s.metrics.registrations.WithLabelValues("created").Inc()
	httpapi.Logger(ctx).Info("user registered", "user_id", u.publicID)
	httpapi.WriteJSON(w, http.StatusCreated, map[string]string{
		"id":      u.publicID,
		"name":    u.name,
		"message": "registered successfully",
	})
	return nil
}

// errBadCredentials is the one answer to every failed login, whatever
// failed: the same status, body and headers.
func errBadCredentials(msg string) error {
	e := httpapi.Errorf(http.StatusUnauthorized, nil, "%s", msg)
	e.Header = http.Header{"Www-Authenticate": {`Basic realm="tollgate", charset="UTF-8"`}}
	return e
}

const badCredentials = "invalid name or password"

// tokenResponse is the login answer; token and access_token are the same
// JWT, the first for the tutorial's clients, the second for OAuth ones.
// refresh_token is there when refresh is on.
type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// login is the tutorial's login (HTTP Basic), the password grant of the
// default client with the tutorial's answer.
func (s *Service) login(w http.ResponseWriter, r *http.Request) error {
	s.setNonce(w)
	name, password, ok := r.BasicAuth()
	if !ok {
		s.metrics.logins.WithLabelValues("no_credentials").Inc()
		return errBadCredentials("HTTP Basic credentials are required")
	}
	// As at /token, the proof before the password.
	jkt, err := s.checkProof(r, "/login", "", s.dpopRequired(s.cfg.LoginClient))
	if err != nil {
		return err
	}
	u, err := s.authenticate(r, name, password)
	if err != nil {
		return err
	}
	iss, err := s.startSession(r.Context(), u, s.cfg.LoginClient, jkt)
	if err != nil {
		return err
	}
	s.metrics.logins.WithLabelValues("success").Inc()
	httpapi.WriteJSON(w, http.StatusOK, tokenResponse{
		Token:        iss.access,
		AccessToken:  iss.access,
		TokenType:    tokenType(iss.jkt),
		ExpiresIn:    int64(s.cfg.TokenTTL / time.Second),
		RefreshToken: iss.refresh,
	})
	return nil
}

// authenticate checks a name and password, throttled, for /login and
// the password grant alike. Every failure is the same 401
// (errBadCredentials), whatever failed.
func (s *Service) authenticate(r *http.Request, name, password string) (user, error) {
	ctx := r.Context()
	log := httpapi.Logger(ctx)
	addr := addrKey(clientAddr(r, s.cfg.TrustedProxies, s.cfg.TrustedHops))

	// A name that cannot exist is not an account to count failures
	// against (and not worth a hash); its failures still count against
	// the address.
	account := ""
	if validateName(name) == nil && len(password) <= MaxPasswordBytes {
		account = nameKey(name)
	}
	wait, err := s.throttle.wait(ctx, account, addr, s.cfg.Now())
	if err != nil {
		return user{}, errBusyResponse(err)
	}
	if wait > 0 {
		s.metrics.logins.WithLabelValues("throttled").Inc()
		secs := int64((wait + time.Second - 1) / time.Second)
		log.Warn("login throttled", "client", addr, "retry_after_s", secs)
		e := httpapi.Errorf(http.StatusTooManyRequests, nil, "too many failed logins; retry in %d seconds", secs)
		e.Header = http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}}
		return user{}, e
	}
	if account == "" {
		if err := s.throttle.failure(ctx, "", addr, s.cfg.Now()); err != nil {
			return user{}, errBusyResponse(err)
		}
		s.metrics.logins.WithLabelValues("failure").Inc()
		return user{}, errBadCredentials(badCredentials)
	}

	u, err := s.users.byName(ctx, name)
	known := err == nil
	if err != nil && !errors.Is(err, errNotFound) {
		return user{}, err
	}
	hash := s.dummyHash
	if known {
		hash = u.passwordHash
	}
	match, stale, err := s.hasher.verify(ctx, password, hash)
	switch {
	case errors.Is(err, errBusy):
		s.metrics.logins.WithLabelValues("busy").Inc()
		return user{}, errBusyResponse(err)
	case err != nil:
		return user{}, fmt.Errorf("verify password of user %s: %w", u.publicID, err)
	}
	if !known || !match {
		if err := s.throttle.failure(ctx, account, addr, s.cfg.Now()); err != nil {
			return user{}, errBusyResponse(err)
		}
		s.metrics.logins.WithLabelValues("failure").Inc()
		if known {
			log.Info("login failed: wrong password", "user_id", u.publicID, "client", addr)
		} else {
			log.Info("login failed: unknown user", "client", addr)
		}
		return user{}, errBadCredentials(badCredentials)
	}
	if err := s.throttle.success(ctx, account, addr, s.cfg.Now()); err != nil {
		// The login is good; only its throttling bookkeeping failed.
		log.Warn("record successful login for throttling", "err", err)
	}
	if stale {
		s.rehash(r, u, password)
	}
	log.Info("login", "user_id", u.publicID, "client", addr)
	return u, nil
}

// rehash replaces u's hash, made with other parameters than the current
// ones, now that the password is known. It is best effort: the login
// succeeds either way, and the next one tries again.
func (s *Service) rehash(r *http.Request, u user, password string) {
	log := httpapi.Logger(r.Context())
	hash, err := s.hasher.hash(r.Context(), password)
	if err != nil {
		log.Warn("rehash password with current parameters; will retry at next login", "user_id", u.publicID, "err", err)
		return
	}
	changed, err := s.users.replaceHash(r.Context(), u.id, u.passwordHash, hash)
	if err != nil {
		log.Warn("rehash password with current parameters; will retry at next login", "user_id", u.publicID, "err", err)
		return
	}
	if changed {
		s.metrics.rehashes.Inc()
		log.Info("password rehashed with current parameters", "user_id", u.publicID)
	}
}

// roles returns the roles of the user name: everyone is a user, the
// configured admins are admins too.
func (s *Service) roles(name string) []string {
	if s.admins[nameKey(name)] {
		return []string{"admin", "user"}
	}
	return []string{"user"}
}

// userView is a user as GET /users shows it: never a hash.
type userView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Roles     []string  `json:"roles"`
	CreatedAt time.Time `json:"created_at"`
}

// userList is the GET /users answer. Next, when set, is the after value
// for the following page.
type userList struct {
	Users []userView `json:"users"`
	Next  string     `json:"next,omitempty"`
}

// listUsers answers GET /users for admins. The identity comes from the
// x-user-id and x-user-roles headers, which only the gateway sets after
// authz verified a token.
func (s *Service) listUsers(w http.ResponseWriter, r *http.Request) error {
	if r.Header.Get("X-User-Id") == "" {
		e := httpapi.Errorf(http.StatusUnauthorized, nil, "authentication required")
		e.Header = http.Header{"Www-Authenticate": {`Bearer realm="tollgate"`}}
		return e
	}
	if !hasRole(r.Header.Values("X-User-Roles"), "admin") {
		return httpapi.Errorf(http.StatusForbidden, nil, "the admin role is required")
	}
	q := r.URL.Query()
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return httpapi.Errorf(http.StatusBadRequest, nil, "limit must be an integer from 1 to %d", maxListLimit)
		}
		limit = n
	}
	after := q.Get("after")
	if len(after) > MaxNameLen || !utf8.ValidString(after) {
		return httpapi.Errorf(http.StatusBadRequest, nil, "after must be a user name")
	}
	rows, err := s.users.list(r.Context(), after, limit+1)
	if err != nil {
		return err
	}
	out := userList{Users: []userView{}}
	for i, u := range rows {
		if i == limit {
			out.Next = rows[i-1].name
			break
		}
		out.Users = append(out.Users, userView{ID: u.publicID, Name: u.name, Roles: s.roles(u.name), CreatedAt: u.created})
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// hasRole reports whether the comma-separated role lists in values hold
// role.
func hasRole(values []string, role string) bool {
	for _, v := range values {
		for r := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(r) == role {
				return true
			}
		}
	}
	return false
}
