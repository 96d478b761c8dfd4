// Package issuer is Tollgate's token service: user accounts, password
// login, signed JWTs, and the JWKS and OpenID discovery documents that let
// any verifier check those tokens.
//
// It must never let a password, a password hash, a token or a private key
// leave the service or reach a log, never tell an unknown user from a
// wrong password, and never sign with a key verifiers could not have
// fetched yet.
package issuer

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/argon2"

	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/internal/store"
)

// Config configures a Service. Start from DefaultConfig; every field is
// then taken as it is, and New refuses values that make no sense rather
// than replacing them.
type Config struct {
	// DB is the database: a SQLite file path or a postgres:// URL.
	DB string
	// DataDir holds, when KeyDir is empty, the generated signing key
	// under DataDir/keys.
	DataDir string
	// IssuerURL is the iss claim and the base of the URLs in the
	// discovery document: the issuer's address as clients reach it
	// through the gateway.
	IssuerURL string
	// Audience is the aud claim.
	Audience string
	// SigningAlg is the algorithm tokens are signed with: ES256, RS256 or
	// EdDSA. Only keys of that type sign; keys of other
	// types in KeyDir are published, which lets verifiers learn a key of
	// a new type before the algorithm is switched.
	SigningAlg string
	// KeyDir is a directory of PEM private keys (a mounted Kubernetes
	// Secret, for example), re-read every KeyPollInterval. Empty means
	// DataDir/keys, where a key is generated once when there is none.
	KeyDir string
	// KeyActivationDelay is how long after a key is first seen it starts
	// signing; it should exceed how long verifiers cache the JWKS. Zero
	// means at once.
	KeyActivationDelay time.Duration
	// KeyPollInterval is how often KeyDir is checked for changes.
	KeyPollInterval time.Duration
	// TokenTTL is the lifetime of a token, from 1m to 24h.
	TokenTTL time.Duration
	// JWKSMaxAge is the max-age of the JWKS and discovery documents; zero
	// means no caching.
	JWKSMaxAge time.Duration
	// DisableRegistration turns POST /register off.
	DisableRegistration bool
	// AdminUsers are user names that hold the admin role. A listed name
	// that is not taken yet cannot be registered, so nobody can claim an
	// admin name before its owner.
	AdminUsers []string
	// AdminName is the admin user created at start when AdminPassword is
	// set.
	AdminName string
	// AdminPassword, when set, creates the user AdminName with this
	// password at start, or resets its password; that user holds the
	// admin role.
	AdminPassword string
	// Argon2 are the password hashing costs, at least MinArgon2Params.
	Argon2 Argon2Params
	// MaxConcurrentHashes bounds the password hashes computed at once,
	// and with it their memory.
	MaxConcurrentHashes int
	// MaxQueuedHashes bounds the requests waiting for a hash slot; more
	// get 503 at once. Zero queues none.
	MaxQueuedHashes int
	// HashQueueTimeout bounds the wait for a hash slot.
	HashQueueTimeout time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For header names the
	// client, for login throttling; none when empty.
	TrustedProxies []netip.Prefix
	// TrustedHops is how many proxies in front of the issuer append the
	// address they saw to X-Forwarded-For, counting the gateway (Envoy
	// with use_remote_address): behind a trusted proxy the client is the
	// TrustedHops-th entry from the right, and entries left of it, which
	// the client sent, are ignored. At least 1 (the gateway alone);
	// behind a load balancer that appends too, 2.
	TrustedHops int
	// DisableRefresh turns refresh tokens off: logins then return an
	// access token only, and the refresh_token grant is refused.
	DisableRefresh bool
	// SessionIdleTTL ends a session not refreshed for this long.
	SessionIdleTTL time.Duration
	// SessionMaxTTL ends a session this long after its login, however
	// often it is refreshed.
	SessionMaxTTL time.Duration
	// Clients are the public OAuth clients (RFC 6749 §2.1) that may use
	// /token and /revoke, by client_id.
	Clients []string
	// LoginClient is the client /login issues to; it must be in Clients.
	LoginClient string
	// Throttle sets the login failure limits.
	Throttle Throttle
	// DPoP configures proof-of-possession tokens (RFC 9449) at /token
	// and /login.
	DPoP DPoP
	// ShutdownTimeout bounds Serve's graceful stop.
	ShutdownTimeout time.Duration
	// TracerProvider records a server span per request, continuing the
	// caller's W3C trace context; nil turns tracing off.
	TracerProvider trace.TracerProvider
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the configuration `tollgate issuer` starts
// from: a SQLite database and a generated key under ./data, ES256
// tokens for 45 minutes, and the hashing and throttling defaults.
func DefaultConfig() Config {
	hashes := 2 * runtime.NumCPU()
	return Config{
		DataDir:             DefaultDataDir,
		DB:                  filepath.Join(DefaultDataDir, "issuer.db"),
		IssuerURL:           DefaultIssuerURL,
		Audience:            DefaultAudience,
		SigningAlg:          ES256,
		KeyActivationDelay:  DefaultKeyActivationDelay,
		KeyPollInterval:     DefaultKeyPollInterval,
		TokenTTL:            DefaultTokenTTL,
		JWKSMaxAge:          DefaultJWKSMaxAge,
		AdminName:           DefaultAdminName,
		Argon2:              MinArgon2Params,
		MaxConcurrentHashes: hashes,
		MaxQueuedHashes:     4 * hashes,
		HashQueueTimeout:    2 * time.Second,
		TrustedProxies:      slices.Clone(DefaultTrustedProxies),
		TrustedHops:         DefaultTrustedHops,
		Throttle:            DefaultThrottle(),
		SessionIdleTTL:      DefaultSessionIdleTTL,
		SessionMaxTTL:       DefaultSessionMaxTTL,
		Clients:             []string{DefaultClient},
		LoginClient:         DefaultClient,
		DPoP:                DefaultDPoP(),
		ShutdownTimeout:     DefaultShutdownTimeout,
	}
}

// Defaults.
const (
	DefaultIssuerURL          = "http://localhost:8080"
	DefaultAudience           = "tollgate"
	DefaultKeyActivationDelay = 10 * time.Minute
	DefaultKeyPollInterval    = 5 * time.Second
	DefaultTokenTTL           = 45 * time.Minute
	DefaultJWKSMaxAge         = 5 * time.Minute
	DefaultAdminName          = "admin"
	DefaultDataDir            = "data"
	DefaultShutdownTimeout    = 15 * time.Second
)

// retireGrace is how long a removed key stays published after the last
// token it signed expired: verifiers accept a token a little past exp
// (their clock leeway), and another replica's use of the key reaches the
// database one poll later.
const retireGrace = 2 * time.Minute

func (c Config) validate() error {
	if c.DB == "" {
		return errors.New("no database configured")
	}
	u, err := url.Parse(c.IssuerURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("issuer URL %q must be an absolute http(s) URL without query, fragment or user info", c.IssuerURL)
	}
	if _, err := parseAlg(c.SigningAlg); err != nil {
		return err
	}
	if c.TokenTTL < time.Minute || c.TokenTTL > 24*time.Hour {
		return fmt.Errorf("token TTL %s must be between 1m and 24h", c.TokenTTL)
	}
	if err := c.Argon2.validate(); err != nil {
		return err
	}
	if err := c.Throttle.validate(); err != nil {
		return err
	}
	if c.KeyActivationDelay < 0 || c.JWKSMaxAge < 0 || c.MaxQueuedHashes < 0 {
		return fmt.Errorf("key activation delay %v, JWKS max-age %v and queued hashes %d must not be negative", c.KeyActivationDelay, c.JWKSMaxAge, c.MaxQueuedHashes)
	}
	if c.KeyPollInterval <= 0 || c.HashQueueTimeout <= 0 || c.ShutdownTimeout <= 0 || c.MaxConcurrentHashes <= 0 {
		return fmt.Errorf("key poll interval %v, hash queue timeout %v, shutdown timeout %v and concurrent hashes %d must be positive", c.KeyPollInterval, c.HashQueueTimeout, c.ShutdownTimeout, c.MaxConcurrentHashes)
	}
	if c.SessionIdleTTL <= 0 || c.SessionMaxTTL < c.SessionIdleTTL {
		return fmt.Errorf("session idle lifetime %v must be positive and at most the absolute lifetime %v", c.SessionIdleTTL, c.SessionMaxTTL)
	}
	if len(c.Clients) == 0 {
		return errors.New("at least one client is required")
	}
	for _, id := range c.Clients {
		if !validClientID(id) {
			return fmt.Errorf("client id %q must be 1 to 128 ASCII letters, digits, '.', '_', ':' or '-'", id)
		}
	}
	if !slices.Contains(c.Clients, c.LoginClient) {
		return fmt.Errorf("login client %q is not one of the clients %q", c.LoginClient, c.Clients)
	}
	if err := c.DPoP.validate(c.Clients); err != nil {
		return err
	}
	if c.KeyDir == "" && c.DataDir == "" {
		return errors.New("a key directory or a data directory is required")
	}
	if c.TrustedHops < 1 {
		return fmt.Errorf("trusted hops %d must be at least 1 (trust no proxy to ignore X-Forwarded-For)", c.TrustedHops)
	}
	for _, name := range c.AdminUsers {
		if err := validateName(name); err != nil {
			return fmt.Errorf("admin user %q: %w", name, err)
		}
	}
	if c.AdminPassword != "" {
		if err := validateName(c.AdminName); err != nil {
			return fmt.Errorf("admin name %q: %w", c.AdminName, err)
		}
		if err := validatePassword(c.AdminPassword, c.AdminName); err != nil {
			return fmt.Errorf("admin password: %w", err)
		}
	}
	return nil
}

// Service is a running issuer. Its methods are safe for concurrent use.
type Service struct {
	cfg       Config
	alg       jwa.SignatureAlgorithm
	log       *slog.Logger
	db        *store.DB
	users     users
	keys      *keyring
	hasher    *hasher
	throttle  loginThrottle
	sessions  sessions
	clients   map[string]bool
	admins    map[string]bool // name keys holding the admin role
	dummyHash string          // verified for unknown users, so they cost a real hash
	health    *server.Health
	metrics   *metrics
	handler   http.Handler

	// dpop verifies proofs at the token endpoints; dpopClients must
	// send one with every token request.
	dpop        *dpop.Verifier
	dpopClients map[string]bool

	stopPoll  context.CancelFunc
	stopDPoP  context.CancelFunc
	pollDone  chan struct{}
	closeOnce sync.Once
}

// New opens the database (applying migrations), creates or resets the
// configured admin, loads (or first generates) the signing keys, and
// starts watching the key directory. Close releases all of it.
func New(ctx context.Context, cfg Config, log *slog.Logger, reg *prometheus.Registry) (*Service, error) {
	return newService(ctx, cfg, log, reg, argon2.IDKey)
}

func newService(ctx context.Context, cfg Config, log *slog.Logger, reg *prometheus.Registry, derive deriveFunc) (*Service, error) {
	cfg.IssuerURL = strings.TrimRight(cfg.IssuerURL, "/")
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("issuer config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	alg, _ := parseAlg(cfg.SigningAlg)
	if cfg.KeyActivationDelay < cfg.JWKSMaxAge {
		log.Warn("key activation delay is shorter than the JWKS max-age: verifiers may meet a new key's tokens before their cache has it",
			"key_activation_delay", cfg.KeyActivationDelay, "jwks_max_age", cfg.JWKSMaxAge)
	}

	db, err := store.Open(ctx, cfg.DB, Migrations())
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	s := &Service{
		cfg:      cfg,
		alg:      alg,
		log:      log,
		db:       db,
		users:    users{db},
		sessions: sessions{db},
		clients:  map[string]bool{},
		admins:   map[string]bool{},
		hasher: &hasher{
			params:  cfg.Argon2,
			derive:  derive,
			limiter: newLimiter(cfg.MaxConcurrentHashes, cfg.MaxQueuedHashes, cfg.HashQueueTimeout),
		},
	}
	s.throttle = memThrottle{newThrottle(cfg.Throttle)}
	if db.Dialect == store.Postgres {
		s.throttle = sharedThrottle{db: db, cfg: cfg.Throttle}
	}
	// The shared replay store's sweeper lives as long as the service.
	dpopCtx, stopDPoP := context.WithCancel(context.WithoutCancel(ctx))
	s.stopDPoP = stopDPoP
	if s.dpop, err = newDPoP(dpopCtx, cfg, db.Dialect); err != nil {
		stopDPoP()
		db.Close()
		return nil, fmt.Errorf("issuer: DPoP: %w", err)
	}
	if err := s.start(ctx, reg); err != nil {
		stopDPoP()
		db.Close()
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return s, nil
}

func (s *Service) start(ctx context.Context, reg *prometheus.Registry) error {
	cfg := s.cfg
	for _, name := range cfg.AdminUsers {
		s.admins[nameKey(name)] = true
	}
	for _, id := range cfg.Clients {
		s.clients[id] = true
	}
	s.dpopClients = map[string]bool{}
	for _, id := range cfg.DPoP.RequiredClients {
		s.dpopClients[id] = true
	}
	if cfg.AdminPassword != "" {
		s.admins[nameKey(cfg.AdminName)] = true
	}

	// The dummy hash has the current parameters, so an unknown user's
	// login costs exactly what a known user's does.
	dummy := make([]byte, 18)
	if _, err := rand.Read(dummy); err != nil {
		return fmt.Errorf("dummy password: %w", err)
	}
	var err error
	if s.dummyHash, err = s.hasher.hash(ctx, base64.RawStdEncoding.EncodeToString(dummy)); err != nil {
		return fmt.Errorf("dummy hash: %w", err)
	}
	if err := s.ensureAdmin(ctx); err != nil {
		return err
	}
	for _, name := range cfg.AdminUsers {
		if ok, err := s.users.exists(ctx, name); err != nil {
			return err
		} else if !ok {
			s.log.Warn("configured admin user does not exist yet and cannot be registered through /register", "user", name)
		}
	}

	dir := cfg.KeyDir
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "keys")
		if err := ensureGeneratedKey(dir, s.alg, s.log); err != nil {
			return err
		}
	}
	s.metrics = newMetrics(reg, s)
	s.keys = newKeyring(dir, s.alg, cfg.KeyActivationDelay, retireGrace, cfg.Now, keyRows{s.db}, s.log)
	s.keys.events = func(kind string) { s.metrics.keyEvents.WithLabelValues(kind).Inc() }
	if err := s.keys.reload(ctx); err != nil {
		return fmt.Errorf("load signing keys: %w", err)
	}
	if _, err := s.keys.signer(cfg.Now()); err != nil {
		return err
	}

	s.health = server.NewHealth(map[string]server.Check{
		"database":    s.db.Ping,
		"signing_key": s.signingKeyReady,
	})
	s.handler = server.Traced(cfg.TracerProvider, "issuer", s.routes(reg))

	pollCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopPoll = cancel
	s.pollDone = make(chan struct{})
	go func() {
		defer close(s.pollDone)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.pruneSessions(pollCtx)
		}()
		s.keys.poll(pollCtx, cfg.KeyPollInterval)
		<-done
	}()
	return nil
}

// validClientID reports whether id can be a client_id: short, and safe
// in a log line and a form.
func validClientID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._:-", c) >= 0) {
			return false
		}
	}
	return true
}

// ensureAdmin creates the configured admin, or resets its password when
// the stored hash does not match the configured password.
func (s *Service) ensureAdmin(ctx context.Context) error {
	if s.cfg.AdminPassword == "" {
		return nil
	}
	name := s.cfg.AdminName
	u, err := s.users.byName(ctx, name)
	switch {
	case err == nil:
		ok, stale, err := s.hasher.verify(ctx, s.cfg.AdminPassword, u.passwordHash)
		if err == nil && ok && !stale {
			return nil
		}
	case !errors.Is(err, errNotFound):
		return err
	}
	hash, err := s.hasher.hash(ctx, s.cfg.AdminPassword)
	if err != nil {
		return fmt.Errorf("hash admin password: %w", err)
	}
	if err := s.users.setPassword(ctx, name, uuid.NewString(), hash, s.cfg.Now()); err != nil {
		return err
	}
	s.log.Info("admin user's password set", "user", name)
	return nil
}

// ensureGeneratedKey makes sure dir holds a key for alg, generating one
// the first time, so restarts keep signing with the same key.
func ensureGeneratedKey(dir string, alg jwa.SignatureAlgorithm, log *slog.Logger) error {
	files, err := readKeyDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, f := range files {
		if kp, err := parseKeyPEM(f.data); f.err == nil && err == nil && kp.alg == alg {
			return nil
		}
	}
	path, kid, err := GenerateKeyFile(dir, alg.String())
	if err != nil {
		return err
	}
	log.Info("generated a signing key", "file", path, "kid", kid, "alg", alg.String())
	return nil
}

func (s *Service) signingKeyReady(ctx context.Context) error {
	_, err := s.keys.signer(s.cfg.Now())
	return err
}

// Handler returns the issuer's HTTP API, instrumented, with /healthz,
// /readyz and /metrics.
func (s *Service) Handler() http.Handler { return s.handler }

// Ready reports whether the service can serve: the database answers and
// a key can sign.
func (s *Service) Ready(ctx context.Context) error { return s.health.Ready(ctx) }

// SetStopping makes /readyz fail from now on, for a graceful shutdown.
func (s *Service) SetStopping() { s.health.SetStopping() }

// Serve serves the issuer's API, health and metrics on l until ctx ends
// or the listener fails; then it turns readiness off, drains within
// Config.ShutdownTimeout and closes s.
func (s *Service) Serve(ctx context.Context, l net.Listener) error {
	defer s.Close()
	return server.Run(ctx, s.log, s.cfg.ShutdownTimeout, s.SetStopping,
		server.Bound{Name: "issuer", Unit: server.NewHTTP(s.handler, s.log), Listener: l})
}

// Close stops watching the key directory, stores which keys this
// process signed with, and closes the database.
func (s *Service) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.stopPoll()
		<-s.pollDone
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if ferr := s.keys.flush(ctx); ferr != nil {
			s.log.Error("store signing key use at shutdown; a removed key may be withdrawn early", "err", ferr)
		}
		s.stopDPoP()
		err = s.db.Close()
	})
	return err
}
