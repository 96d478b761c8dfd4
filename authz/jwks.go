package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/httpcc"
	"go.opentelemetry.io/otel/trace"
)

// maxDocumentBytes bounds a discovery document or JWKS body.
const maxDocumentBytes = 1 << 20

// Retry delays after a failed fetch: doubling from the first, never over
// the last (nor over MinRefresh once a key set is loaded).
const (
	firstRetry = 250 * time.Millisecond
	maxRetry   = 30 * time.Second
)

var (
	// errNoKeys means no usable key set is loaded, so nothing verifies.
	errNoKeys = errors.New("no usable key set loaded")
	// errUnknownKid means the token's kid is not in the key set, even
	// after a refetch (or the refetch was rate-limited).
	errUnknownKid = errors.New("kid is not in the key set")
)

// keySource keeps the current key set: it fetches the JWKS (finding its
// URL through discovery if need be), refreshes it in the background at
// the interval the issuer asks for within [MinRefresh, MaxRefresh],
// refetches early, at most once per RefetchInterval, when a token names
// an unknown kid, and keeps the last good set when a fetch fails.
type keySource struct {
	base     context.Context // canceled by Close; every fetch runs under it
	fetches  sync.WaitGroup
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	tracer   trace.Tracer             // nil: tracing off
	onChange func(prev, next *keySet) // called after each change, outside the lock

	current  atomic.Pointer[keySet] // nil until the first successful fetch
	loadedAt atomic.Int64           // unix nanoseconds of the last successful fetch (or 304)
	refused  atomic.Int64           // keys refused in the last fetched set

	mu        sync.Mutex
	jwksURL   string     // resolved; empty until discovery succeeds
	etag      string     // of the current set
	nextAt    time.Time  // when the background loop fetches next
	failures  int        // consecutive failed fetches
	lastStart time.Time  // start of the latest fetch, for the refetch rate limit
	inflight  *fetchCall // the fetch in progress, shared by everyone waiting
	closed    bool       // run has ended; no more fetches
	kick      chan struct{}
}

// fetchCall is one fetch that any number of callers can wait for.
type fetchCall struct {
	done chan struct{}
	err  error
}

func newKeySource(base context.Context, cfg Config, log *slog.Logger, m *metrics, onChange func(prev, next *keySet)) *keySource {
	return &keySource{
		base:     base,
		cfg:      cfg,
		log:      log,
		metrics:  m,
		onChange: onChange,
		jwksURL:  cfg.JWKSURL,
		kick:     make(chan struct{}, 1),
	}
}

// keys returns the current key set (nil before the first load).
func (s *keySource) keys() *keySet { return s.current.Load() }

// run refreshes the key set until the base context is done, then waits
// for fetches in flight.
func (s *keySource) run() {
	defer func() {
		// After closed is set no fetch starts, so Wait sees every Add.
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.fetches.Wait()
	}()
	ctx := s.base
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		s.mu.Lock()
		wait := time.Until(s.nextAt)
		s.mu.Unlock()
		if wait > 0 {
			t.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-s.kick: // an on-demand fetch moved nextAt
				t.Stop()
			case <-t.C:
			}
			continue
		}
		call := s.start(false)
		if call == nil {
			// A scheduled start is refused only once the source is
			// closed or its context is done: looping again would spin
			// (nextAt stays in the past) and never see ctx.Done.
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-call.done:
		}
	}
}

// refetch fetches the key set now because a token named an unknown kid,
// unless another fetch started less than RefetchInterval ago, and waits
// for the fetch in progress (this one or another) until ctx is done. It
// reports whether a fetch completed while it waited.
func (s *keySource) refetch(ctx context.Context) bool {
	call := s.start(true)
	if call == nil {
		s.metrics.refetches.WithLabelValues("rate_limited").Inc()
		return false
	}
	s.metrics.refetches.WithLabelValues("fetched").Inc()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	defer cancel()
	endSpan := s.traceFetchWait(ctx)
	select {
	case <-call.done:
		endSpan(true)
		return true
	case <-ctx.Done():
		endSpan(false)
		return false
	}
}

// start returns the fetch in progress, or starts one. An on-demand
// start is refused (nil) within RefetchInterval of the previous start,
// and every start once the source is closed.
func (s *keySource) start(onDemand bool) *fetchCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight != nil {
		return s.inflight
	}
	if s.closed || s.base.Err() != nil {
		return nil
	}
	now := time.Now()
	if onDemand && !s.lastStart.IsZero() && now.Sub(s.lastStart) < s.cfg.RefetchInterval {
		return nil
	}
	s.lastStart = now
	call := &fetchCall{done: make(chan struct{})}
	s.inflight = call
	// The fetch outlives the request that asked for it: other checks
	// wait for it too, and its result is worth keeping.
	s.fetches.Add(1)
	go func() {
		defer s.fetches.Done()
		s.fetch(s.base, call)
	}()
	return call
}

// fetch performs one fetch, installs its result and schedules the next.
func (s *keySource) fetch(ctx context.Context, call *fetchCall) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	defer cancel()
	next, refresh, notModified, err := s.fetchOnce(ctx)

	prev := s.current.Load()
	s.mu.Lock()
	switch {
	case err != nil:
		s.failures++
		retry := firstRetry << min(s.failures-1, 10)
		limit := maxRetry
		if prev != nil {
			limit = min(limit, s.cfg.MinRefresh)
		}
		s.nextAt = time.Now().Add(min(retry, limit))
	default:
		s.failures = 0
		s.nextAt = time.Now().Add(refresh)
	}
	s.inflight = nil
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}

	switch {
	case err != nil:
		s.metrics.fetches.WithLabelValues("error").Inc()
		if prev != nil {
			s.log.Warn("JWKS fetch failed; keeping the last good key set", "err", err, "keys", prev.len())
		} else {
			s.log.Warn("JWKS fetch failed; not ready until a key set loads", "err", err)
		}
	case notModified:
		s.metrics.fetches.WithLabelValues("not_modified").Inc()
		s.loadedAt.Store(time.Now().UnixNano())
	default:
		s.metrics.fetches.WithLabelValues("ok").Inc()
		s.loadedAt.Store(time.Now().UnixNano())
		s.current.Store(next)
		if changed(prev, next) {
			s.log.Info("JWKS loaded", "keys", next.len(), "kids", next.kids(), "next_refresh", refresh.String())
			if s.onChange != nil {
				s.onChange(prev, next)
			}
		}
	}
	call.err = err
	close(call.done)
}

// changed reports whether next differs from prev in any kid or key.
func changed(prev, next *keySet) bool {
	if prev == nil || prev.len() != next.len() {
		return true
	}
	for kid, k := range next.keys {
		if prev.keys[kid] != k {
			return true
		}
	}
	return false
}

func (s *keySet) kids() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.keys))
	for kid := range s.keys {
		out = append(out, kid)
	}
	return out
}

// fetchOnce fetches and parses the key set. It returns the new set, the
// refresh interval the response asks for (clamped), and whether the
// server answered 304 Not Modified (then the set is nil).
func (s *keySource) fetchOnce(ctx context.Context) (next *keySet, refresh time.Duration, notModified bool, err error) {
	u, err := s.resolve(ctx)
	if err != nil {
		return nil, 0, false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, false, fmt.Errorf("jwks request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	s.mu.Lock()
	etag := s.etag
	s.mu.Unlock()
	prev := s.current.Load()
	if etag != "" && prev != nil {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, 0, false, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	refresh = s.refreshInterval(resp.Header)
	if resp.StatusCode == http.StatusNotModified && prev != nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxDocumentBytes))
		return nil, refresh, true, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, false, fmt.Errorf("fetch jwks %s: status %s", u, resp.Status)
	}
	body, err := readLimited(resp.Body)
	if err != nil {
		return nil, 0, false, fmt.Errorf("read jwks %s: %w", u, err)
	}
	set, leaked, err := parseJWKS(body)
	if err != nil {
		return nil, 0, false, fmt.Errorf("parse jwks %s: %w", u, err)
	}
	next, refused := buildKeySet(set, s.cfg.Algorithms, prev)
	refused = append(leaked, refused...)
	for _, r := range refused {
		reason := r.reason()
		s.metrics.keysRefused.WithLabelValues(reason).Inc()
		if reason == refusedPrivate {
			// Someone who has the issuer's private key can sign
			// anything: make the leak an outage people see, not a
			// silent trust.
			s.log.Error("JWKS publishes private key material: the issuer's signing key has leaked; refusing the key, rotate it",
				"kid", truncate(r.kid, 64), "err", r.err, "jwks_uri", u)
			continue
		}
		s.log.Warn("JWKS key refused", "kid", truncate(r.kid, 64), "reason", reason, "err", r.err)
	}
	s.refused.Store(int64(len(refused)))
	if next.len() == 0 && prev == nil {
		return nil, 0, false, fmt.Errorf("jwks %s has no usable keys (%d refused)", u, len(refused))
	}
	if next.len() == 0 {
		// The issuer withdrew every key: honour it and deny everything,
		// rather than keep trusting keys it no longer publishes.
		s.log.Error("JWKS has no usable keys; every token will be denied", "refused", len(refused))
	}
	s.mu.Lock()
	s.etag = resp.Header.Get("ETag")
	s.mu.Unlock()
	return next, refresh, false, nil
}

// refreshInterval is the time until the next background fetch: the
// response's freshness lifetime (Cache-Control max-age less Age, or
// Expires), clamped to [MinRefresh, MaxRefresh]; MaxRefresh without one;
// MinRefresh with no-store or no-cache.
func (s *keySource) refreshInterval(h http.Header) time.Duration {
	d := s.cfg.MaxRefresh
	if exp := h.Get("Expires"); exp != "" {
		d = expiresIn(h, exp)
	}
	if cc := h.Get("Cache-Control"); cc != "" {
		// httpcc.ParseResponse cannot tell a bare no-cache from none, so
		// read the directives it tokenizes.
		tokens, err := httpcc.ParseResponseDirectives(cc)
		if err != nil {
			return s.cfg.MaxRefresh
		}
		for _, tok := range tokens {
			switch strings.ToLower(tok.Name) {
			case httpcc.NoStore, httpcc.NoCache:
				return s.cfg.MinRefresh
			case httpcc.MaxAge:
				maxAge, err := strconv.ParseUint(tok.Value, 10, 64)
				if err != nil {
					return s.cfg.MaxRefresh
				}
				d = time.Duration(min(maxAge, uint64(s.cfg.MaxRefresh/time.Second)+1)) * time.Second
				if age, err := strconv.ParseUint(h.Get("Age"), 10, 32); err == nil {
					d -= time.Duration(age) * time.Second
				}
			}
		}
	}
	return min(max(d, s.cfg.MinRefresh), s.cfg.MaxRefresh)
}

// expiresIn is the lifetime an Expires header gives, measured against
// the response's Date when it has one (RFC 9111 §4.2.1).
func expiresIn(h http.Header, exp string) time.Duration {
	t, err := http.ParseTime(exp)
	if err != nil {
		return 0 // an invalid Expires means already expired
	}
	now := time.Now()
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		now = d
	}
	return t.Sub(now)
}

// resolve returns the JWKS URL, discovering it on first use.
func (s *keySource) resolve(ctx context.Context) (string, error) {
	s.mu.Lock()
	u := s.jwksURL
	s.mu.Unlock()
	if u != "" {
		return u, nil
	}
	u, err := discover(ctx, s.cfg.HTTPClient, s.cfg.Issuer)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.jwksURL = u
	s.mu.Unlock()
	s.log.Info("JWKS URL discovered", "jwks_uri", u)
	return u, nil
}

// discover reads the issuer's OpenID discovery document and returns its
// jwks_uri. The document's issuer must be exactly the configured one
// (OpenID Connect Discovery 1.0 §4.3), or its keys would vouch for
// tokens from someone else.
func discover(ctx context.Context, c *http.Client, issuer string) (string, error) {
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("discovery request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch discovery document: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch discovery document %s: status %s", u, resp.Status)
	}
	body, err := readLimited(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read discovery document %s: %w", u, err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("parse discovery document %s: %w", u, err)
	}
	if doc.Issuer != issuer {
		return "", fmt.Errorf("discovery document %s names issuer %q, want %q", u, doc.Issuer, issuer)
	}
	if err := checkHTTPURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("discovery document %s: jwks_uri: %w", u, err)
	}
	return doc.JWKSURI, nil
}

func readLimited(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, maxDocumentBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxDocumentBytes {
		return nil, fmt.Errorf("body is over %d bytes", maxDocumentBytes)
	}
	return body, nil
}

// truncate bounds an attacker-supplied string before it is logged.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
