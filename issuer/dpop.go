package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/internal/httpapi"
	"github.com/tollgate-dev/tollgate/internal/store"
)

// DPoP at the token endpoints (RFC 9449 §5): /token and /login take one
// DPoP proof header; with a valid one, the access token carries
// cnf.jkt, the thumbprint of the proof key, and the session (its refresh
// tokens) is bound to that key, so every later refresh must be signed by
// it. Without a proof, tokens are bearer tokens, as before, unless the
// configuration requires DPoP.

// DPoP configures proofs of possession at /token and /login.
type DPoP struct {
	// Algorithms are the proof signature algorithms accepted, all
	// asymmetric (see dpop.DefaultAlgorithms); discovery advertises them.
	Algorithms []string
	// MaxAge is how old a proof's iat may be, MaxFuture how far ahead of
	// the issuer's clock. A proof's jti is remembered that long.
	MaxAge, MaxFuture time.Duration
	// Nonces makes every proof carry a server nonce (RFC 9449 §8): a
	// proof without a current one is answered use_dpop_nonce with a
	// DPoP-Nonce header, and every /token and /login answer carries the
	// current nonce.
	Nonces bool
	// NonceSecret keys the nonces, at least 32 bytes: replicas sharing it
	// accept each other's nonces. Nil means a random secret, for one
	// replica.
	NonceSecret []byte
	// Required refuses a token request without a proof, from any client.
	Required bool
	// RequiredClients are the clients whose token requests must carry a
	// proof (RFC 9449 §5.2's dpop_bound_access_tokens), by client_id.
	RequiredClients []string
}

// DefaultDPoP returns the RFC's proof window, every asymmetric
// algorithm, nonces off and DPoP optional.
func DefaultDPoP() DPoP {
	return DPoP{
		Algorithms: slices.Clone(dpop.DefaultAlgorithms),
		MaxAge:     dpop.DefaultMaxAge,
		MaxFuture:  dpop.DefaultMaxFuture,
	}
}

// dpopReplaySweep is how often the shared replay store deletes expired
// proofs.
const dpopReplaySweep = time.Minute

func (d DPoP) validate(clients []string) error {
	for _, id := range d.RequiredClients {
		if !slices.Contains(clients, id) {
			return fmt.Errorf("DPoP client %q is not one of the clients %q", id, clients)
		}
	}
	if d.NonceSecret != nil && !d.Nonces {
		return errors.New("a DPoP nonce secret is set but nonces are off")
	}
	return nil
}

// newDPoP builds the proof verifier: the replay store is in memory, or,
// when the issuer's database is PostgreSQL, a table in it, so a proof
// accepted by one replica is refused by every other. The shared store
// lives until ctx ends.
func newDPoP(ctx context.Context, cfg Config, dialect store.Dialect) (*dpop.Verifier, error) {
	vc := dpop.DefaultConfig()
	vc.Algorithms = cfg.DPoP.Algorithms
	vc.MaxAge = cfg.DPoP.MaxAge
	vc.MaxFuture = cfg.DPoP.MaxFuture
	vc.Now = cfg.Now
	if cfg.DPoP.Nonces {
		n, err := dpop.NewNonces(cfg.DPoP.NonceSecret, dpop.DefaultNoncePeriod, cfg.Now)
		if err != nil {
			return nil, err
		}
		vc.Nonces = n
	}
	if dialect == store.Postgres {
		r, err := dpop.OpenSQLReplay(ctx, cfg.DB, dpopReplaySweep)
		if err != nil {
			return nil, err
		}
		vc.Replay = r
	}
	return dpop.NewVerifier(vc)
}

// dpopRequired reports whether clientID's token requests must carry a
// proof.
func (s *Service) dpopRequired(clientID string) bool {
	return s.cfg.DPoP.Required || s.dpopClients[clientID]
}

// setNonce gives the client the current server nonce, when nonces are
// on, on every answer of a token endpoint, errors included (§8.2).
func (s *Service) setNonce(w http.ResponseWriter) {
	if n := s.dpop.Nonces(); n != nil {
		w.Header().Set(dpop.NonceHeader, n.Current())
	}
}

// checkProof verifies the DPoP proof of r, a request to the issuer's
// endpoint path, and returns the thumbprint of its key, or "" when r
// carries no proof and none is required. jkt, when set, is the key the
// presented grant is bound to: the proof is then required and must be
// signed by that key. The htu a client signs is the issuer's public URL
// (its iss) plus path, whatever address the request reached the issuer
// at; a token request presents no access token, so ath must be absent.
func (s *Service) checkProof(r *http.Request, path, jkt string, required bool) (string, error) {
	proofs := r.Header.Values(dpop.Header)
	if len(proofs) == 0 {
		if required || jkt != "" {
			return "", errDPoP(fmt.Errorf("%w: no proof", dpop.ErrInvalidProof), "a DPoP proof is required")
		}
		return "", nil
	}
	// Several headers are joined, so that Verify refuses them as one.
	p, err := s.dpop.Verify(r.Context(), strings.Join(proofs, ","), dpop.Request{
		Method: r.Method,
		URL:    s.cfg.IssuerURL + path,
		JKT:    jkt,
	})
	if err != nil {
		return "", errDPoP(err, "")
	}
	return p.JKT, nil
}

// errDPoP maps a proof failure onto its OAuth answer (RFC 9449 §5, §8):
// 400 invalid_dpop_proof, 400 use_dpop_nonce (the DPoP-Nonce header is
// already set), or 503 when the replay store cannot answer, which is not
// the client's fault. desc, when set, replaces the description.
func errDPoP(err error, desc string) error {
	switch {
	case errors.Is(err, dpop.ErrUseNonce):
		e := oauthErr(http.StatusBadRequest, "use_dpop_nonce", "the DPoP proof must carry the nonce in the DPoP-Nonce header")
		e.cause = err
		return e
	case errors.Is(err, dpop.ErrReplayStore):
		e := oauthErr(http.StatusServiceUnavailable, "temporarily_unavailable", "DPoP proofs cannot be checked right now; retry shortly")
		e.header = http.Header{"Retry-After": {"5"}}
		e.cause = err
		return e
	case errors.Is(err, dpop.ErrInvalidProof):
		if desc == "" {
			desc = err.Error()
		}
		e := oauthErr(http.StatusBadRequest, "invalid_dpop_proof", desc)
		e.cause = err
		return e
	}
	return fmt.Errorf("verify DPoP proof: %w", err)
}

// tokenType is the token_type of an access token bound to jkt (RFC 9449
// §5: DPoP), or of a bearer token.
func tokenType(jkt string) string {
	if jkt != "" {
		return dpop.Scheme
	}
	return "Bearer"
}

// checkBoundToken enforces RFC 9449 §7 where the issuer itself accepts an
// access token (POST /logout, public at the gateway): a token bound to a
// key (cnf.jkt) counts only as "Authorization: DPoP" with a proof by that
// key for this request, naming the token in ath; a DPoP-scheme token must
// be bound. A stolen bound token so cannot end its owner's session.
func (s *Service) checkBoundToken(r *http.Request, path, raw, scheme string, claims jwt.Token) error {
	jkt := boundKey(claims)
	if jkt == "" && scheme != dpop.Scheme {
		return nil
	}
	deny := func(code string, cause error) error {
		e := httpapi.Errorf(http.StatusUnauthorized, cause, "token is invalid")
		e.Header = http.Header{"Www-Authenticate": {`Bearer realm="tollgate"`, s.dpopChallenge(code)}}
		return e
	}
	if jkt == "" {
		return deny("invalid_token", errors.New("DPoP scheme with a token that is not bound to a key"))
	}
	if scheme != dpop.Scheme {
		return deny("invalid_token", errors.New("DPoP-bound token presented as a bearer token"))
	}
	_, err := s.dpop.Verify(r.Context(), strings.Join(r.Header.Values(dpop.Header), ","), dpop.Request{
		Method:      r.Method,
		URL:         s.cfg.IssuerURL + path,
		AccessToken: raw,
		JKT:         jkt,
	})
	switch {
	case errors.Is(err, dpop.ErrUseNonce):
		return deny("use_dpop_nonce", err)
	case errors.Is(err, dpop.ErrInvalidProof):
		return deny("invalid_dpop_proof", err)
	case err != nil:
		return errDPoP(err, "")
	}
	return nil
}

// boundKey is the cnf.jkt of an access token, or "".
func boundKey(claims jwt.Token) string {
	v, ok := claims.Get("cnf")
	if !ok {
		return ""
	}
	cnf, _ := v.(map[string]any)
	jkt, _ := cnf["jkt"].(string)
	return jkt
}

// dpopChallenge is the DPoP WWW-Authenticate challenge (RFC 9449 §7.1),
// with an error code when code is set.
func (s *Service) dpopChallenge(code string) string {
	c := `DPoP algs="` + strings.Join(s.dpop.Algorithms(), " ") + `"`
	if code != "" {
		c += `, error="` + code + `"`
	}
	return c
}
