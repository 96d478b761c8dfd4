package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// trustState is everything a configuration file (or the single-issuer
// settings) decides: the trusted issuers, by iss and by name, and the
// authz-side routes. It is immutable and replaced whole on reload.
type trustState struct {
	byIss  map[string]*trustedIssuer
	byName map[string]*trustedIssuer
	list   []*trustedIssuer
	routes []route
	def    policy
	// hasRoutes is false when there are no routes and the default is
	// any valid token, so a check can skip route matching.
	hasRoutes bool
	// origins are the public origins of hosts whose TLS ends before the
	// gateway, by lowercase host, for DPoP's htu.
	origins map[string]string
}

// fileConfig is what a configuration file holds.
type fileConfig struct {
	Issuers []IssuerConfig `yaml:"issuers"`
	Routes  []RouteConfig  `yaml:"routes"`
	Default *PolicyConfig  `yaml:"default"`
	// DPoPPublicOrigins maps a request host to the origin its clients
	// use (TLS ended before the gateway); it adds to, and per host
	// overrides, Config.DPoPPublicOrigins.
	DPoPPublicOrigins map[string]string `yaml:"dpop_public_origins"`
}

// entryError is an error in one entry of a list in the configuration,
// so the file loader can name the entry's line.
type entryError struct {
	section string // "issuers", "routes" or "default"
	index   int
	err     error
}

func (e *entryError) Error() string {
	if e.section == "default" || e.index < 0 {
		return e.section + ": " + e.err.Error()
	}
	return fmt.Sprintf("%s[%d]: %s", e.section, e.index, e.err)
}

func (e *entryError) Unwrap() error { return e.err }

// singleIssuer is the issuer that Config's single-issuer fields describe.
func (c Config) singleIssuer() IssuerConfig {
	return IssuerConfig{
		Name:             DefaultIssuerName,
		Issuer:           c.Issuer,
		JWKSURL:          c.JWKSURL,
		Audiences:        []string{c.Audience},
		Algorithms:       c.Algorithms,
		MaxTokenLifetime: c.MaxTokenLifetime,
	}
}

// checkIssuers checks issuer entries and fills their defaults from c.
func (c Config) checkIssuers(list []IssuerConfig) ([]IssuerConfig, []claimMapping, error) {
	var errs []error
	if len(list) == 0 {
		errs = append(errs, errors.New("issuers: at least one issuer is required"))
	}
	names, isses := map[string]bool{}, map[string]bool{}
	out := make([]IssuerConfig, len(list))
	maps := make([]claimMapping, len(list))
	for i, ic := range list {
		var e []error
		if err := checkIssuerName(ic.Name); err != nil {
			e = append(e, err)
		} else if names[ic.Name] {
			e = append(e, fmt.Errorf("name %q is used twice", ic.Name))
		}
		names[ic.Name] = true
		switch {
		case ic.Issuer == "":
			e = append(e, errors.New("issuer is required"))
		case isses[ic.Issuer]:
			e = append(e, fmt.Errorf("issuer %q is listed twice", ic.Issuer))
		case ic.JWKSURL == "":
			if err := checkHTTPURL(ic.Issuer); err != nil {
				e = append(e, fmt.Errorf("issuer: %w (it is the discovery base when no jwks_url is set)", err))
			}
		}
		isses[ic.Issuer] = true
		if ic.JWKSURL != "" {
			if err := checkHTTPURL(ic.JWKSURL); err != nil {
				e = append(e, fmt.Errorf("jwks_url: %w", err))
			}
		}
		if len(ic.Audiences) == 0 {
			e = append(e, errors.New("audiences: at least one audience is required"))
		}
		for _, a := range ic.Audiences {
			if a == "" {
				e = append(e, errors.New("audiences: an audience is empty"))
			}
		}
		if len(ic.Algorithms) == 0 {
			ic.Algorithms = slices.Clone(c.Algorithms)
		}
		for _, a := range ic.Algorithms {
			if !supportedAlgorithms[a] {
				e = append(e, fmt.Errorf("algorithms: %q is not allowed (use ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512 or EdDSA)", a))
			}
		}
		if ic.MaxTokenLifetime == 0 {
			ic.MaxTokenLifetime = c.MaxTokenLifetime
		}
		if ic.MaxTokenLifetime <= 0 {
			e = append(e, fmt.Errorf("max_token_lifetime must be positive, not %v", ic.MaxTokenLifetime))
		}
		m, err := newClaimMapping(ic.Claims, ic.Headers, c.TokenHeaders)
		if err != nil {
			e = append(e, err)
		}
		if len(e) > 0 {
			errs = append(errs, &entryError{"issuers", i, errors.Join(e...)})
		}
		out[i], maps[i] = ic, m
	}
	return out, maps, errors.Join(errs...)
}

// buildState turns issuers, routes and a default policy into a state,
// reusing prev's key sources for issuers whose key settings did not
// change. Nothing runs until commit.
func (s *Server) buildState(fc fileConfig, prev *trustState) (*trustState, error) {
	issuers, maps, err := s.cfg.checkIssuers(fc.Issuers)
	if err != nil {
		return nil, err
	}
	st := &trustState{byIss: map[string]*trustedIssuer{}, byName: map[string]*trustedIssuer{}}
	managed := []string{HeaderUserID, HeaderUserName, HeaderUserRoles, HeaderUserIssuer}
	for _, m := range maps {
		for _, h := range m.headers {
			if !slices.Contains(managed, h.name) {
				managed = append(managed, h.name)
			}
		}
	}
	for i, ic := range issuers {
		ti := &trustedIssuer{
			name:         ic.Name,
			iss:          ic.Issuer,
			required:     ic.Required == nil || *ic.Required,
			mapping:      maps[i],
			managed:      managed,
			tokenHeaders: s.cfg.TokenHeaders,
			keyID:        ic.Issuer + "\x00" + ic.JWKSURL + "\x00" + strings.Join(ic.Algorithms, ","),
		}
		if prev != nil {
			if old := prev.byIss[ic.Issuer]; old != nil && old.keyID == ti.keyID {
				ti.src = old.src
			}
		}
		if ti.src == nil {
			kc := s.cfg
			kc.Issuer, kc.JWKSURL, kc.Algorithms = ic.Issuer, ic.JWKSURL, ic.Algorithms
			var src *keySource
			src = newKeySource(nil, kc, s.log.With("issuer", ic.Name), s.metrics, func(p, n *keySet) { s.keysChanged(src, p, n) })
			src.tracer = s.tracer
			ti.src = src
		}
		ti.verifier = newVerifier(ic, s.cfg.Leeway, ti.src, func() time.Time { return s.now() })
		st.byIss[ic.Issuer], st.byName[ic.Name] = ti, ti
		st.list = append(st.list, ti)
	}
	var errs []error
	for i, rc := range fc.Routes {
		r, err := s.newRoute(rc, st)
		if err != nil {
			errs = append(errs, &entryError{"routes", i, err})
		}
		st.routes = append(st.routes, r)
	}
	if fc.Default != nil {
		p, err := s.newPolicy(*fc.Default, st)
		if err != nil {
			errs = append(errs, &entryError{section: "default", err: err})
		}
		st.def = p
	}
	st.hasRoutes = len(st.routes) > 0 || st.def != (policy{})
	if len(s.cfg.DPoPPublicOrigins) > 0 || len(fc.DPoPPublicOrigins) > 0 {
		all := make(map[string]string, len(s.cfg.DPoPPublicOrigins)+len(fc.DPoPPublicOrigins))
		for h, o := range s.cfg.DPoPPublicOrigins {
			all[strings.ToLower(h)] = o
		}
		for h, o := range fc.DPoPPublicOrigins {
			all[strings.ToLower(h)] = o
		}
		origins, err := checkOrigins(all)
		if err != nil {
			errs = append(errs, &entryError{section: "dpop_public_origins", index: -1, err: err})
		}
		st.origins = origins
	}
	return st, errors.Join(errs...)
}

// commit makes st current: starts its new key sources, retires the
// issuers it replaces (ending their cached verifications) and stops the
// key sources it no longer uses.
func (s *Server) commit(st *trustState) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	prev := s.state.Load()
	var starting []*keySource
	for _, ti := range st.list {
		ti.live.Store(true)
		if _, running := s.sources[ti.src]; !running {
			ctx, cancel := context.WithCancel(s.runCtx)
			ti.src.base = ctx
			s.sources[ti.src] = cancel
			starting = append(starting, ti.src)
		}
	}
	// The state is current before its new sources start, so that their
	// first load finds it when it recomputes readiness.
	s.state.Store(st)
	for _, src := range starting {
		s.wg.Go(src.run)
	}
	if prev != nil {
		inUse := map[*keySource]bool{}
		for _, ti := range st.list {
			inUse[ti.src] = true
		}
		for _, ti := range prev.list {
			ti.live.Store(false)
			if !inUse[ti.src] {
				if cancel := s.sources[ti.src]; cancel != nil {
					cancel()
					delete(s.sources, ti.src)
				}
			}
		}
		if s.cache != nil {
			s.cache.purgeDead()
		}
	}
	s.syncHealth()
}

// keysChanged follows every new key set of one issuer: gRPC health
// follows readiness, and cached verifications by that issuer's keys that
// left its set are dropped, leaving every other issuer's alone.
func (s *Server) keysChanged(src *keySource, prev, next *keySet) {
	s.syncHealth()
	if s.cache != nil && prev != nil {
		if n := s.cache.purge(src, next); n > 0 {
			s.log.Info("dropped cached tokens whose key left the JWKS", "entries", n)
		}
	}
}

// keysReady fails while a required issuer has no usable key set.
func (s *Server) keysReady(ctx context.Context) error {
	st := s.state.Load()
	if st == nil {
		return errNoKeys
	}
	var missing []string
	for _, ti := range st.list {
		if ti.required && ti.src.keys().len() == 0 {
			missing = append(missing, ti.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w for issuer %s", errNoKeys, strings.Join(missing, ", "))
	}
	return nil
}
