package authz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/internal/dpop"
)

// DPoP (RFC 9449 §7) at the gate: a token bound to a key (cnf.jkt) is
// accepted only under the DPoP scheme with a proof by that key for this
// very request. The proof is new on every request, so it is verified on
// every check, cached token or not; a bearer token on a route without
// dpop: required never reaches any of this.

// Token schemes: how the token was presented.
const (
	schemeBearer uint8 = iota // Authorization: Bearer
	schemeDPoP                // Authorization: DPoP
	schemeHeader              // a bare token in x-access-tokens or the like
)

// policyDPoP is the policy key that makes a route refuse bearer tokens.
const (
	policyDPoP   = "dpop"
	dpopRequired = "required"
)

// DPoP defaults.
const (
	DefaultDPoPReplayCapacity = dpop.DefaultReplayCapacity
	// dpopReplaySweep is how often the shared replay store deletes
	// expired proofs.
	dpopReplaySweep = time.Minute
)

// DefaultDPoPAlgorithms are the proof algorithms accepted by default.
var DefaultDPoPAlgorithms = dpop.DefaultAlgorithms

// newDPoP builds the proof verifier cfg describes: its replay store (in
// memory, or the shared PostgreSQL one, which lives until ctx ends) and
// its nonces.
func newDPoP(ctx context.Context, cfg Config, now func() time.Time) (*dpop.Verifier, *dpop.SQLReplay, error) {
	dc := dpop.Config{
		Algorithms: cfg.DPoPAlgorithms,
		MaxAge:     cfg.DPoPMaxAge,
		MaxFuture:  cfg.DPoPMaxFuture,
		Now:        now,
	}
	if cfg.DPoPNonces {
		var secret []byte
		if cfg.DPoPNonceSecretFile != "" {
			b, err := dpop.ReadNonceSecret(cfg.DPoPNonceSecretFile)
			if err != nil {
				return nil, nil, err
			}
			secret = b
		}
		n, err := dpop.NewNonces(secret, cfg.DPoPNoncePeriod, now)
		if err != nil {
			return nil, nil, fmt.Errorf("dpop nonces: %w", err)
		}
		dc.Nonces = n
	}
	var sql *dpop.SQLReplay
	if cfg.DPoPReplayDSN != "" {
		r, err := dpop.OpenSQLReplay(ctx, cfg.DPoPReplayDSN, dpopReplaySweep)
		if err != nil {
			return nil, nil, err
		}
		sql, dc.Replay = r, r
	} else {
		dc.Replay = dpop.NewMemoryReplay(cfg.DPoPReplayCapacity)
	}
	v, err := dpop.NewVerifier(dc)
	if err != nil {
		return nil, nil, err
	}
	return v, sql, nil
}

// dpopReady is the readiness check of the shared replay store.
func (s *Server) dpopReady(ctx context.Context) error {
	if s.dpopSQL == nil {
		return errors.New("shared DPoP replay store is not open")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.dpopSQL.Ping(ctx)
}

// checkDPoP applies RFC 9449 §7 to a verified identity presented under
// scheme: a bound token needs the DPoP scheme and one valid proof by its
// key for this request; an unbound one may not use the DPoP scheme, nor
// any scheme on a route that requires DPoP. It returns reasonVerified
// when the request may go on.
func (s *Server) checkDPoP(ctx context.Context, st *trustState, hs headerSource, req *requestInfo, tok string, scheme uint8, id *identity, required bool) (reason, error) {
	if id.jkt == "" {
		switch {
		case scheme == schemeDPoP:
			return reasonDPoPUnbound, errors.New("token has no cnf.jkt but was presented with the DPoP scheme")
		case required:
			return reasonDPoPRequired, errors.New("route requires a DPoP-bound token")
		}
		// A bearer token with a stray DPoP header: the proof is ignored
		// (RFC 9449 §7.2 leaves it to the resource server).
		return reasonVerified, nil
	}
	if scheme != schemeDPoP {
		return reasonDPoPBoundAsBearer, errors.New("DPoP-bound token presented without the DPoP scheme")
	}
	proof, ok := hs.header(dpop.Header)
	if !ok {
		return reasonDPoPNoProof, errors.New("DPoP-bound token without a DPoP proof")
	}
	_, err := s.dpop.Verify(ctx, proof, dpop.Request{Method: req.method, URL: st.requestURL(req), AccessToken: tok, JKT: id.jkt})
	switch {
	case err == nil:
		return reasonVerified, nil
	case errors.Is(err, dpop.ErrReplayStore):
		return reasonDPoPReplayStore, err
	case errors.Is(err, dpop.ErrUseNonce):
		return reasonDPoPNonce, err
	case errors.Is(err, dpop.ErrReplayed):
		return reasonDPoPReplayed, err
	case errors.Is(err, dpop.ErrKeyMismatch):
		return reasonDPoPKeyMismatch, err
	case errors.Is(err, dpop.ErrTokenHash):
		return reasonDPoPTokenHash, err
	}
	return reasonDPoPInvalidProof, err
}

// requestURL is the URL the client sent the request to, as a proof's htu
// names it: the configured public origin of the request's host when
// there is one (TLS ended before the gateway), else the scheme and host
// the gateway saw; the path without query and fragment.
func (st *trustState) requestURL(req *requestInfo) string {
	path, _, _ := strings.Cut(req.path, "?")
	path, _, _ = strings.Cut(path, "#")
	if o := st.publicOrigin(req.host); o != "" {
		return o + path
	}
	scheme := req.scheme
	if scheme == "" {
		scheme = "http"
	}
	return scheme + "://" + req.host + path
}

// publicOrigin returns the origin configured for host (as the request
// names it, port and all, or without its port), or "".
func (st *trustState) publicOrigin(host string) string {
	if len(st.origins) == 0 {
		return ""
	}
	h := strings.ToLower(host)
	if o, ok := st.origins[h]; ok {
		return o
	}
	if name, _, err := net.SplitHostPort(h); err == nil {
		return st.origins[name]
	}
	return ""
}

// checkOrigins checks a host-to-origin map and returns it with its hosts
// lowercased and its origins normalised (no default port, no trailing
// slash).
func checkOrigins(m map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(m))
	var errs []error
	for h, o := range m {
		lh := strings.ToLower(strings.TrimSpace(h))
		if lh == "" || strings.ContainsAny(lh, "/?#@ ") || !printableASCII(lh, false) {
			errs = append(errs, fmt.Errorf("dpop public origin: %q is not a host[:port]", h))
			continue
		}
		norm, err := checkOrigin(o)
		if err != nil {
			errs = append(errs, fmt.Errorf("dpop public origin for %q: %w", h, err))
			continue
		}
		out[lh] = norm
	}
	return out, errors.Join(errs...)
}

// checkOrigin accepts scheme://host[:port] (http or https) and returns it
// normalised as htu is.
func checkOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("%q is not an origin (http or https://host[:port], nothing after it)", o)
	}
	n, err := dpop.NormalizeURL(o)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(n, "/"), nil
}

// ParsePublicOrigins reads HOST=ORIGIN settings (the -dpop-public-origin
// flag) into a map.
func ParsePublicOrigins(items []string) (map[string]string, error) {
	m := map[string]string{}
	for _, it := range items {
		h, o, ok := strings.Cut(it, "=")
		if !ok || h == "" || o == "" {
			return nil, fmt.Errorf("dpop public origin %q is not HOST=ORIGIN (books.example.com=https://books.example.com)", it)
		}
		m[h] = o
	}
	return m, nil
}

// cnfJKT reads the DPoP binding out of a token's claims: "" when there is
// no cnf, the thumbprint when cnf is an object with a string jkt, an
// error for anything else (a binding authz cannot enforce must not be
// dropped).
func cnfJKT(raw map[string]any) (string, error) {
	v, ok := raw["cnf"]
	if !ok {
		return "", nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return "", fmt.Errorf("%w: cnf is not an object", errBadClaims)
	}
	jkt, ok := obj["jkt"].(string)
	if !ok || jkt == "" || len(jkt) > 128 || !printableASCII(jkt, false) {
		return "", fmt.Errorf("%w: cnf has no usable string jkt", errBadClaims)
	}
	return jkt, nil
}

// dpopChallenges are the WWW-Authenticate values of the DPoP scheme, one
// per error code, built once in New.
type dpopChallenges struct {
	plain, invalidToken, invalidProof, useNonce, insufficientScope string
}

func newDPoPChallenges(algs []string) dpopChallenges {
	base := `DPoP algs="` + strings.Join(algs, " ") + `"`
	return dpopChallenges{
		plain:             base,
		invalidToken:      base + `, error="invalid_token"`,
		invalidProof:      base + `, error="invalid_dpop_proof"`,
		useNonce:          base + `, error="use_dpop_nonce"`,
		insufficientScope: base + `, error="insufficient_scope"`,
	}
}

// challenges returns the WWW-Authenticate values of a denied decision
// and whether a DPoP-Nonce goes with them. A route that also accepts
// bearer tokens offers the Bearer challenge as well, as its own header;
// a dpop: required route offers only DPoP.
func (s *Server) challenges(d decision) (out []string, nonce bool) {
	dn := denialFor(d)
	if dn.challenge == "" {
		return nil, false // 503
	}
	c := &s.dpopCh
	dp := ""
	bearer := denyNoToken.challenge
	switch d.reason {
	case reasonNoToken:
		dp = c.plain
	case reasonDPoPBoundAsBearer:
		dp, bearer = c.invalidToken, denyInvalid.challenge
	case reasonDPoPUnbound, reasonDPoPRequired:
		dp = c.invalidToken
	case reasonDPoPNonce:
		dp = c.useNonce
	case reasonDPoPNoProof, reasonDPoPInvalidProof, reasonDPoPReplayed, reasonDPoPKeyMismatch, reasonDPoPTokenHash:
		dp = c.invalidProof
	default:
		if !d.dpopScheme && !d.dpopOnly {
			return []string{dn.challenge}, false
		}
		if dn == denyForbidden {
			return []string{c.insufficientScope}, false
		}
		dp = c.invalidToken
	}
	out = []string{dp}
	if d.dpopOnly {
		return out, s.dpop.Nonces() != nil
	}
	if d.reason == reasonNoToken {
		out = []string{bearer, dp}
	} else {
		out = append(out, bearer)
	}
	return out, s.dpop.Nonces() != nil
}

// proofProblem reports whether r is a refusal of the DPoP proof, not of
// the token: invalid_dpop_proof or use_dpop_nonce.
func (r reason) proofProblem() bool {
	switch r {
	case reasonDPoPNoProof, reasonDPoPInvalidProof, reasonDPoPReplayed, reasonDPoPKeyMismatch, reasonDPoPTokenHash, reasonDPoPNonce:
		return true
	}
	return false
}
