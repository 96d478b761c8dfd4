package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Stale-feed policies: what a check does when the revocation feed has
// not been fetched successfully for longer than RevocationsMaxAge.
const (
	// StaleServe keeps deciding with the last good copy of the list.
	StaleServe = "serve"
	// StaleDeny refuses every token issued before the last good fetch
	// (all tokens, if there never was one): a revocation made during
	// the outage cannot have been seen, so only tokens newer than what
	// authz knows are let through.
	StaleDeny = "deny"
)

// Revocation feed defaults.
const (
	DefaultRevocationsInterval = 2 * time.Second
	DefaultRevocationsMaxAge   = time.Minute
	// maxFeedBytes bounds one feed answer: about 100 bytes an entry,
	// so a full list of well over 100,000 revocations fits.
	maxFeedBytes = 64 << 20
	// revocationPruneInterval is how often expired entries are dropped.
	revocationPruneInterval = time.Minute
)

// revKey names a revoked token (iss + jti) or subject (iss + sub).
// Never the token's bytes or hash: an ES256 signature is malleable (for
// every valid signature (r, s), (r, n-s) is another one), so a list of
// token hashes would let the same token's twin through.
type revKey struct{ iss, id string }

// notBefore is a subject's revocation: its tokens issued before
// notBefore (unix seconds) are refused, until until.
type notBefore struct{ notBefore, until int64 }

// revocationSet is one immutable copy of the deny list. Checks read it
// without a lock; the follower builds a new one for every change.
type revocationSet struct {
	tokens   map[revKey]int64 // exp, unix seconds
	subjects map[revKey]notBefore
}

var emptyRevocations = &revocationSet{tokens: map[revKey]int64{}, subjects: map[revKey]notBefore{}}

// revoked reports whether id, issued by iss, is revoked.
func (rs *revocationSet) revoked(iss string, id *identity) bool {
	if len(rs.tokens) > 0 && id.jti != "" {
		if _, ok := rs.tokens[revKey{iss, id.jti}]; ok {
			return true
		}
	}
	if len(rs.subjects) > 0 {
		// A token without iat (zero, far in the past) cannot show it
		// is newer than the subject's revocation.
		if nb, ok := rs.subjects[revKey{iss, id.sub}]; ok && id.iat.Unix() < nb.notBefore {
			return true
		}
	}
	return false
}

// feedAnswer is the issuer's GET /revocations answer.
type feedAnswer struct {
	Issuer  string `json:"iss"`
	Version int64  `json:"version"`
	Full    bool   `json:"full"`
	Tokens  []struct {
		JTI string `json:"jti"`
		Exp int64  `json:"exp"`
	} `json:"tokens"`
	Subjects []struct {
		Sub       string `json:"sub"`
		NotBefore int64  `json:"not_before"`
		Until     int64  `json:"until"`
	} `json:"subjects"`
}

// revocations follows the issuer's revocation feed: it fetches the
// changes since the version it has every RevocationsInterval, keeps
// the last good list when the issuer is unreachable, and drops entries
// once the tokens they refuse have expired.
type revocations struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	client  *http.Client
	now     func() time.Time

	current  atomic.Pointer[revocationSet]
	lastSync atomic.Int64 // unix nanoseconds of the last good fetch; 0: never

	mu        sync.Mutex // held by the fetch loop only
	version   int64
	failing   bool
	lastPrune time.Time
}

func newRevocations(cfg Config, log *slog.Logger, m *metrics, now func() time.Time) *revocations {
	r := &revocations{cfg: cfg, log: log, metrics: m, client: cfg.HTTPClient, now: now}
	r.current.Store(emptyRevocations)
	return r
}

// set returns the current deny list.
func (r *revocations) set() *revocationSet { return r.current.Load() }

// age returns how long ago the last good fetch was, and false when
// there never was one.
func (r *revocations) age() (time.Duration, bool) {
	at := r.lastSync.Load()
	if at == 0 {
		return 0, false
	}
	return r.now().Sub(time.Unix(0, at)), true
}

// staleDenies reports whether, under StaleDeny, id must be refused
// because the feed is too old: it was issued before the last good
// fetch, or there never was one.
func (r *revocations) staleDenies(id *identity) bool {
	if r.cfg.RevocationsStale != StaleDeny {
		return false
	}
	at := r.lastSync.Load()
	if at == 0 {
		return true
	}
	last := time.Unix(0, at)
	if r.now().Sub(last) <= r.cfg.RevocationsMaxAge {
		return false
	}
	return id.iat.IsZero() || id.iat.Before(last.Truncate(time.Second))
}

// run fetches the feed every RevocationsInterval until ctx ends.
func (r *revocations) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.fetch(ctx)
		t.Reset(r.cfg.RevocationsInterval)
	}
}

// fetch gets the changes since the current version and applies them.
func (r *revocations) fetch(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.fetchLocked(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		return
	case err != nil:
		r.metrics.revocationFetches.WithLabelValues("error").Inc()
		if !r.failing {
			r.log.Warn("revocation feed fetch failed; deciding with the last good list", "url", r.cfg.RevocationsURL, "err", err)
		}
		r.failing = true
	case r.failing:
		r.failing = false
		r.log.Info("revocation feed fetched again", "version", r.version)
	}
	if now := r.now(); now.Sub(r.lastPrune) >= revocationPruneInterval {
		r.lastPrune = now
		r.prune(now)
	}
}

func (r *revocations) fetchLocked(ctx context.Context) error {
	u, err := url.Parse(r.cfg.RevocationsURL)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("since", strconv.FormatInt(r.version, 10))
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if r.version > 0 {
		req.Header.Set("If-None-Match", `"`+strconv.FormatInt(r.version, 10)+`"`)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		r.synced("not_modified")
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: status %d", r.cfg.RevocationsURL, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFeedBytes+1))
	if err != nil {
		return fmt.Errorf("read revocation feed: %w", err)
	}
	if len(body) > maxFeedBytes {
		return fmt.Errorf("revocation feed is larger than %d bytes", maxFeedBytes)
	}
	var fa feedAnswer
	if err := json.Unmarshal(body, &fa); err != nil {
		return fmt.Errorf("decode revocation feed: %w", err)
	}
	if fa.Issuer == "" || fa.Version < 0 {
		return errors.New("revocation feed has no issuer or a negative version")
	}
	if fa.Issuer != r.cfg.Issuer {
		return fmt.Errorf("revocation feed is for issuer %q, not %q", fa.Issuer, r.cfg.Issuer)
	}
	r.apply(&fa)
	r.synced("ok")
	return nil
}

func (r *revocations) synced(result string) {
	r.lastSync.Store(r.now().UnixNano())
	r.metrics.revocationFetches.WithLabelValues(result).Inc()
}

// apply makes the list the feed answer describes current: a full answer
// replaces it, a delta adds to a copy of it.
func (r *revocations) apply(fa *feedAnswer) {
	iss := r.cfg.Issuer // one string shared by every key
	cur := r.current.Load()
	var next *revocationSet
	if fa.Full {
		next = &revocationSet{tokens: make(map[revKey]int64, len(fa.Tokens)), subjects: make(map[revKey]notBefore, len(fa.Subjects))}
	} else if len(fa.Tokens) == 0 && len(fa.Subjects) == 0 {
		r.version = fa.Version
		return
	} else {
		next = &revocationSet{tokens: maps.Clone(cur.tokens), subjects: maps.Clone(cur.subjects)}
	}
	for _, t := range fa.Tokens {
		if t.JTI != "" {
			next.tokens[revKey{iss, t.JTI}] = t.Exp
		}
	}
	for _, s := range fa.Subjects {
		if s.Sub == "" {
			continue
		}
		k := revKey{iss, s.Sub}
		if old, ok := next.subjects[k]; ok && old.notBefore > s.NotBefore {
			continue
		}
		next.subjects[k] = notBefore{notBefore: s.NotBefore, until: s.Until}
	}
	r.current.Store(next)
	if fa.Full || r.version == 0 {
		r.log.Info("revocation list loaded", "version", fa.Version, "tokens", len(next.tokens), "subjects", len(next.subjects))
	}
	r.version = fa.Version
}

// prune drops entries whose tokens have all expired (past the leeway),
// so the list holds only what can still matter.
func (r *revocations) prune(now time.Time) {
	cur := r.current.Load()
	cut := now.Add(-r.cfg.Leeway).Unix()
	stale := 0
	for _, exp := range cur.tokens {
		if exp < cut {
			stale++
		}
	}
	for _, nb := range cur.subjects {
		if nb.until < cut {
			stale++
		}
	}
	if stale == 0 {
		return
	}
	next := &revocationSet{tokens: make(map[revKey]int64, len(cur.tokens)), subjects: make(map[revKey]notBefore, len(cur.subjects))}
	for k, exp := range cur.tokens {
		if exp >= cut {
			next.tokens[k] = exp
		}
	}
	for k, nb := range cur.subjects {
		if nb.until >= cut {
			next.subjects[k] = nb
		}
	}
	r.current.Store(next)
}

// detail is the readiness detail of the feed.
func (r *revocations) detail() any {
	d := map[string]any{"url": r.cfg.RevocationsURL, "stale_policy": r.cfg.RevocationsStale}
	set := r.set()
	d["tokens"], d["subjects"] = len(set.tokens), len(set.subjects)
	if age, ok := r.age(); ok {
		d["age_seconds"] = age.Seconds()
	} else {
		d["age_seconds"] = nil
	}
	return d
}
