package authz

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/internal/store"
)

// Defaults, the values DefaultConfig starts from.
const (
	DefaultAudience        = "tollgate"
	DefaultLeeway          = 30 * time.Second
	DefaultMinRefresh      = time.Minute
	DefaultMaxRefresh      = 15 * time.Minute
	DefaultRefetchInterval = 30 * time.Second
	DefaultFetchTimeout    = 5 * time.Second
	DefaultCacheSize       = 10000
	DefaultShutdownTimeout = 15 * time.Second
	// DefaultReloadInterval is how often the configuration file is
	// checked, well within the 10 seconds a change may take.
	DefaultReloadInterval = 2 * time.Second
	// DefaultMaxTokenLifetime is the issuer's own upper bound on its
	// token TTL.
	DefaultMaxTokenLifetime = 24 * time.Hour

	// MaxTokenBytes caps a token before any parsing, so that a header of
	// dots or a huge payload costs nothing (CVE-2025-30204).
	MaxTokenBytes = 8 << 10

	// Realm is the realm in every WWW-Authenticate challenge.
	Realm = "tollgate"
)

// DefaultAlgorithms is the default signature algorithm allowlist.
var DefaultAlgorithms = []string{"ES256", "RS256", "EdDSA"}

// DefaultTokenHeaders are the request headers searched for a token, in
// order: an Authorization bearer token, then the tutorial's headers.
var DefaultTokenHeaders = []string{"authorization", "x-access-tokens", "x-access-token"}

// supportedAlgorithms are the asymmetric JWS algorithms a key set may
// use. Symmetric (HS*) algorithms and "none" are never accepted: the
// verifier holds only public keys, so an HMAC "key" would be one an
// attacker also has.
var supportedAlgorithms = map[string]bool{
	"ES256": true, "ES384": true, "ES512": true,
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"EdDSA": true,
}

// Config is what New needs. Start from DefaultConfig and set Issuer;
// every field is then taken as it is (a zero CacheSize turns the cache
// off, a zero Leeway allows no skew), and New refuses values that make
// no sense rather than replacing them.
type Config struct {
	// Issuer is the exact expected "iss" claim, and the base URL of the
	// issuer's OpenID discovery document when JWKSURL is empty.
	Issuer string
	// JWKSURL is where the key set is fetched; empty means take
	// jwks_uri from Issuer + "/.well-known/openid-configuration".
	JWKSURL string
	// Audience must be one of the token's "aud" values.
	Audience string
	// Algorithms is the signature algorithm allowlist. A key is used only
	// with its own algorithm, which must be in this list.
	Algorithms []string
	// TokenHeaders are the header names searched for a token, in order.
	// "authorization" expects the Bearer scheme; any other header carries
	// the bare token.
	TokenHeaders []string
	// Leeway is the clock skew allowed on exp, nbf and iat; zero means
	// none.
	Leeway time.Duration
	// MaxTokenLifetime is the longest a token may be meant to live: exp
	// - iat, or exp - now (within Leeway) for a token without iat. Longer
	// ones are refused. It must be positive.
	MaxTokenLifetime time.Duration
	// CacheSize bounds the verified-token cache; 0 disables it.
	CacheSize int
	// MinRefresh and MaxRefresh bound the background JWKS refresh
	// interval the issuer asks for with Cache-Control max-age (or
	// Expires); with no such header, MaxRefresh is used.
	MinRefresh, MaxRefresh time.Duration
	// RefetchInterval is the least time between two fetches made because
	// a token named an unknown kid, so random kids cannot turn every
	// check into a fetch.
	RefetchInterval time.Duration
	// FetchTimeout bounds one discovery or JWKS request.
	FetchTimeout time.Duration
	// ShutdownTimeout bounds Serve's graceful stop.
	ShutdownTimeout time.Duration
	// RevocationsURL is the issuer's revocation feed (GET /revocations
	// on the issuer itself: the gateway does not route it); empty means
	// revocations are not followed.
	RevocationsURL string
	// RevocationsInterval is how often the feed is fetched.
	RevocationsInterval time.Duration
	// RevocationsMaxAge is how old the last good fetch of the feed may
	// be before RevocationsStale applies.
	RevocationsMaxAge time.Duration
	// RevocationsStale is what happens past RevocationsMaxAge: StaleServe
	// keeps deciding with the last good list, StaleDeny refuses tokens
	// issued before the last good fetch.
	RevocationsStale string
	// HTTPClient fetches discovery, the JWKS and the revocation feed;
	// nil means a client of authz's own with FetchTimeout.
	HTTPClient *http.Client

	// Issuers are the trusted issuers. Empty means one, named
	// DefaultIssuerName, from Issuer, JWKSURL, Audience, Algorithms and
	// MaxTokenLifetime; the single-issuer fields are then ignored.
	Issuers []IssuerConfig
	// Routes are authz-side route policies, for proxies that cannot pass
	// per-route settings; the first match wins.
	Routes []RouteConfig
	// DefaultPolicy is the policy of a request no route matches; nil
	// means any valid token.
	DefaultPolicy *PolicyConfig
	// ConfigFile, when set, is a YAML file of issuers, routes and a
	// default policy that replaces Issuers, Routes and DefaultPolicy
	// (and the single-issuer fields). It is re-read every ReloadInterval;
	// a valid change takes effect, an invalid one is logged and refused.
	ConfigFile string
	// ReloadInterval is how often ConfigFile is checked for a change.
	ReloadInterval time.Duration
	// LogBuffer is how many decision log lines wait to be written by a
	// goroutine of their own; a check never waits for one, and a line
	// that finds the buffer full is dropped and counted in
	// tollgate_authz_decision_logs_dropped_total. Zero writes each line
	// within its check, as a plain logger does.
	LogBuffer int
	// LogAllowSample logs one allow decision in LogAllowSample: 1 logs
	// every allow, 0 none. Denials are always logged.
	LogAllowSample int
	// Explain turns on POST /explain on the HTTP port: the decision for a
	// token an operator pastes, explained. It is read-only, but says more
	// about a token than a check answers, so it is for operators only.
	Explain bool
	// TracerProvider records a span per check (and per JWKS fetch a
	// check waits on); nil turns tracing off at no cost.
	TracerProvider trace.TracerProvider

	// DPoPAlgorithms are the signature algorithms a DPoP proof may use.
	DPoPAlgorithms []string
	// DPoPMaxAge is how old a proof's iat may be, DPoPMaxFuture how far
	// ahead of authz's clock.
	DPoPMaxAge, DPoPMaxFuture time.Duration
	// DPoPReplayCapacity bounds this replica's in-memory set of used
	// proofs (when DPoPReplayDSN is empty).
	DPoPReplayCapacity int
	// DPoPReplayDSN, a postgres:// URL, makes the used proofs a table
	// shared by every replica using it, instead of per replica memory.
	DPoPReplayDSN string
	// DPoPNonces makes every proof carry a server nonce (RFC 9449 §8).
	DPoPNonces bool
	// DPoPNonceSecretFile holds the nonce key (at least 32 bytes), the
	// same for every replica; empty means a random key, for one replica.
	DPoPNonceSecretFile string
	// DPoPNoncePeriod is how often the nonce changes; a nonce is valid
	// for one to two periods.
	DPoPNoncePeriod time.Duration
	// DPoPPublicOrigins maps a request host ("books.example.com", or
	// with a port) to the origin its clients use ("https://books.example.com")
	// where TLS ends before the gateway, so a proof's htu is compared
	// with the URL the client used. The configuration file's
	// dpop_public_origins add to it.
	DPoPPublicOrigins map[string]string
}

// DefaultConfig returns the configuration `tollgate authz` starts from:
// every field but Issuer set to its default.
func DefaultConfig() Config {
	return Config{
		Audience:         DefaultAudience,
		Algorithms:       slices.Clone(DefaultAlgorithms),
		TokenHeaders:     slices.Clone(DefaultTokenHeaders),
		Leeway:           DefaultLeeway,
		MaxTokenLifetime: DefaultMaxTokenLifetime,
		CacheSize:        DefaultCacheSize,
		MinRefresh:       DefaultMinRefresh,
		MaxRefresh:       DefaultMaxRefresh,
		RefetchInterval:  DefaultRefetchInterval,
		FetchTimeout:     DefaultFetchTimeout,
		ShutdownTimeout:  DefaultShutdownTimeout,

		RevocationsInterval: DefaultRevocationsInterval,
		RevocationsMaxAge:   DefaultRevocationsMaxAge,
		RevocationsStale:    StaleServe,
		ReloadInterval:      DefaultReloadInterval,
		LogBuffer:           DefaultLogBuffer,
		LogAllowSample:      DefaultLogAllowSample,

		DPoPAlgorithms:     slices.Clone(DefaultDPoPAlgorithms),
		DPoPMaxAge:         dpop.DefaultMaxAge,
		DPoPMaxFuture:      dpop.DefaultMaxFuture,
		DPoPReplayCapacity: DefaultDPoPReplayCapacity,
		DPoPNoncePeriod:    dpop.DefaultNoncePeriod,
	}
}

// Validate reports what New would refuse in c.
func (c Config) Validate() error {
	_, err := c.validate()
	return err
}

// validate checks c and returns it normalised (token header names
// lowercased, an HTTP client built when none was given).
func (c Config) validate() (Config, error) {
	var errs []error
	single := c.ConfigFile == "" && len(c.Issuers) == 0
	if single && c.Issuer == "" {
		errs = append(errs, errors.New("issuer is required"))
	}
	if single && c.JWKSURL == "" && c.Issuer != "" {
		if err := checkHTTPURL(c.Issuer); err != nil {
			errs = append(errs, fmt.Errorf("issuer: %w (it is the discovery base when no JWKS URL is set)", err))
		}
	}
	if single && c.JWKSURL != "" {
		if err := checkHTTPURL(c.JWKSURL); err != nil {
			errs = append(errs, fmt.Errorf("jwks url: %w", err))
		}
	}
	if single && c.Audience == "" {
		errs = append(errs, errors.New("audience is required"))
	}
	if len(c.Algorithms) == 0 {
		errs = append(errs, errors.New("algorithm allowlist is empty"))
	}
	for _, a := range c.Algorithms {
		if !supportedAlgorithms[a] {
			errs = append(errs, fmt.Errorf("algorithm %q is not allowed (use ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512 or EdDSA)", a))
		}
	}
	if len(c.TokenHeaders) == 0 {
		errs = append(errs, errors.New("token header list is empty"))
	}
	headers := make([]string, 0, len(c.TokenHeaders))
	for _, h := range c.TokenHeaders {
		lh := strings.ToLower(strings.TrimSpace(h))
		if !validHeaderName(lh) {
			errs = append(errs, fmt.Errorf("token header %q is not a valid header name", h))
			continue
		}
		if identityHeader(lh) || strings.HasPrefix(lh, policyHeaderPrefix) {
			errs = append(errs, fmt.Errorf("token header %q is reserved", h))
			continue
		}
		headers = append(headers, lh)
	}
	c.TokenHeaders = headers
	if c.Leeway < 0 {
		errs = append(errs, fmt.Errorf("leeway %v is negative", c.Leeway))
	}
	if c.MaxTokenLifetime <= 0 {
		errs = append(errs, fmt.Errorf("max token lifetime must be positive, not %v", c.MaxTokenLifetime))
	}
	if c.LogBuffer < 0 {
		errs = append(errs, fmt.Errorf("log buffer %d is negative", c.LogBuffer))
	}
	if c.LogAllowSample < 0 {
		errs = append(errs, fmt.Errorf("allow log sample %d is negative (1 logs every allow, 0 none)", c.LogAllowSample))
	}
	if c.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("cache size %d is negative", c.CacheSize))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"min refresh", c.MinRefresh}, {"max refresh", c.MaxRefresh}, {"refetch interval", c.RefetchInterval}, {"fetch timeout", c.FetchTimeout}, {"shutdown timeout", c.ShutdownTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, not %v", d.name, d.v))
		}
	}
	if c.RevocationsURL != "" {
		if err := checkHTTPURL(c.RevocationsURL); err != nil {
			errs = append(errs, fmt.Errorf("revocations url: %w", err))
		}
		if c.RevocationsInterval <= 0 || c.RevocationsMaxAge < c.RevocationsInterval {
			errs = append(errs, fmt.Errorf("revocations interval %v must be positive and at most the max age %v", c.RevocationsInterval, c.RevocationsMaxAge))
		}
		if c.RevocationsStale != StaleServe && c.RevocationsStale != StaleDeny {
			errs = append(errs, fmt.Errorf("revocations stale policy %q must be %q or %q", c.RevocationsStale, StaleServe, StaleDeny))
		}
	}
	if c.ConfigFile != "" && c.ReloadInterval <= 0 {
		errs = append(errs, fmt.Errorf("reload interval must be positive, not %v", c.ReloadInterval))
	}
	if len(c.DPoPAlgorithms) == 0 {
		errs = append(errs, errors.New("dpop algorithm allowlist is empty"))
	}
	for _, a := range c.DPoPAlgorithms {
		if !supportedAlgorithms[a] {
			errs = append(errs, fmt.Errorf("dpop algorithm %q is not allowed (use ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512 or EdDSA)", a))
		}
	}
	if c.DPoPMaxAge <= 0 || c.DPoPMaxFuture < 0 {
		errs = append(errs, fmt.Errorf("dpop proof window needs a positive max age and a non-negative max future, not %v and %v", c.DPoPMaxAge, c.DPoPMaxFuture))
	}
	if c.DPoPReplayDSN == "" && c.DPoPReplayCapacity <= 0 {
		errs = append(errs, fmt.Errorf("dpop replay capacity must be positive, not %d", c.DPoPReplayCapacity))
	}
	if c.DPoPReplayDSN != "" && !store.IsPostgres(c.DPoPReplayDSN) {
		errs = append(errs, errors.New("dpop replay dsn must be a postgres:// URL"))
	}
	if c.DPoPNonces && c.DPoPNoncePeriod <= 0 {
		errs = append(errs, fmt.Errorf("dpop nonce period must be positive, not %v", c.DPoPNoncePeriod))
	}
	if c.DPoPNonceSecretFile != "" && !c.DPoPNonces {
		errs = append(errs, errors.New("a dpop nonce secret file is set but nonces are off"))
	}
	if _, err := checkOrigins(c.DPoPPublicOrigins); err != nil {
		errs = append(errs, err)
	}
	if c.MinRefresh > c.MaxRefresh {
		errs = append(errs, fmt.Errorf("min refresh %v is above max refresh %v", c.MinRefresh, c.MaxRefresh))
	}
	if c.HTTPClient == nil {
		// An own transport, so Close can drop its idle connections.
		c.HTTPClient = &http.Client{Timeout: c.FetchTimeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("authz config: %w", err)
	}
	return c, nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http or https URL", s)
	}
	return nil
}

// validHeaderName reports whether s is a non-empty lowercase HTTP token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
