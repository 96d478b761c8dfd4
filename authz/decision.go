package authz

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate-dev/tollgate/internal/dpop"
)

// outcome is the HTTP-level result of a check.
type outcome uint8

const (
	allowed          outcome = iota // 200
	unauthenticated                 // 401: no usable token
	permissionDenied                // 403: a valid token, not enough for the route
	unavailable                     // 503: no key set to verify with
	numOutcomes
)

func (o outcome) String() string {
	switch o {
	case allowed:
		return "allow"
	case unauthenticated, permissionDenied, unavailable:
		return "deny"
	}
	return "unknown"
}

// httpStatus is the status a client sees for o.
func (o outcome) httpStatus() int {
	switch o {
	case allowed:
		return http.StatusOK
	case unauthenticated:
		return http.StatusUnauthorized
	case permissionDenied:
		return http.StatusForbidden
	}
	return http.StatusServiceUnavailable
}

// reason says why a check ended as it did. The set is closed, so it can
// label metrics; the client never sees it, only the log and metrics do.
type reason uint8

const (
	reasonVerified reason = iota
	reasonCached
	reasonNoToken
	reasonTooLarge
	reasonMalformed
	reasonDuplicateKey
	reasonAlgNotAllowed
	reasonCritHeader
	reasonMissingKid
	reasonUnknownKid
	reasonAlgMismatch
	reasonBadSignature
	reasonMissingClaim
	reasonExpired
	reasonNotYetValid
	reasonIssuedInFuture
	reasonLongLived
	reasonBadIssuer
	reasonBadAudience
	reasonBadClaims
	reasonNoKeys
	reasonBadPolicy
	reasonMissingRole
	reasonRevoked
	reasonRevocationsStale
	reasonMissingScope
	reasonWrongIssuer
	reasonPolicyDenied
	reasonUnsafeClaims
	reasonDPoPBoundAsBearer
	reasonDPoPUnbound
	reasonDPoPRequired
	reasonDPoPNoProof
	reasonDPoPInvalidProof
	reasonDPoPReplayed
	reasonDPoPKeyMismatch
	reasonDPoPTokenHash
	reasonDPoPNonce
	reasonDPoPReplayStore
	numReasons
)

var reasons = [numReasons]struct {
	name    string
	outcome outcome
}{
	reasonVerified:       {"verified", allowed},
	reasonCached:         {"cached", allowed},
	reasonNoToken:        {"no_token", unauthenticated},
	reasonTooLarge:       {"too_large", unauthenticated},
	reasonMalformed:      {"malformed", unauthenticated},
	reasonDuplicateKey:   {"duplicate_key", unauthenticated},
	reasonAlgNotAllowed:  {"alg_not_allowed", unauthenticated},
	reasonCritHeader:     {"crit_header", unauthenticated},
	reasonMissingKid:     {"missing_kid", unauthenticated},
	reasonUnknownKid:     {"unknown_kid", unauthenticated},
	reasonAlgMismatch:    {"alg_mismatch", unauthenticated},
	reasonBadSignature:   {"bad_signature", unauthenticated},
	reasonMissingClaim:   {"missing_claim", unauthenticated},
	reasonExpired:        {"expired", unauthenticated},
	reasonNotYetValid:    {"not_yet_valid", unauthenticated},
	reasonIssuedInFuture: {"issued_in_future", unauthenticated},
	reasonLongLived:      {"lifetime_too_long", unauthenticated},
	reasonBadIssuer:      {"bad_issuer", unauthenticated},
	reasonBadAudience:    {"bad_audience", unauthenticated},
	reasonBadClaims:      {"bad_claims", unauthenticated},
	reasonNoKeys:         {"no_keys", unavailable},
	reasonBadPolicy:      {"bad_policy", permissionDenied},
	reasonMissingRole:    {"missing_role", permissionDenied},
	// Revoked tokens get the answer every invalid token gets; only the
	// log and the metrics tell them apart.
	reasonRevoked:          {"revoked", unauthenticated},
	reasonRevocationsStale: {"revocations_stale", unauthenticated},
	reasonMissingScope:     {"missing_scope", permissionDenied},
	reasonWrongIssuer:      {"wrong_issuer", permissionDenied},
	reasonPolicyDenied:     {"policy_denied", permissionDenied},
	reasonUnsafeClaims:     {"unsafe_claims", permissionDenied},
	// DPoP (RFC 9449 §7): a bound token without its proof, a proof that
	// fails, a token under the wrong scheme.
	reasonDPoPBoundAsBearer: {"dpop_bound_as_bearer", unauthenticated},
	reasonDPoPUnbound:       {"dpop_unbound_token", unauthenticated},
	reasonDPoPRequired:      {"dpop_required", unauthenticated},
	reasonDPoPNoProof:       {"dpop_no_proof", unauthenticated},
	reasonDPoPInvalidProof:  {"dpop_invalid_proof", unauthenticated},
	reasonDPoPReplayed:      {"dpop_replayed", unauthenticated},
	reasonDPoPKeyMismatch:   {"dpop_key_mismatch", unauthenticated},
	reasonDPoPTokenHash:     {"dpop_ath_mismatch", unauthenticated},
	reasonDPoPNonce:         {"dpop_nonce", unauthenticated},
	// The replay store could not answer: nothing is known to be wrong
	// with the proof, so it is a 503 like a missing key set.
	reasonDPoPReplayStore: {"dpop_replay_unavailable", unavailable},
}

func (r reason) String() string { return reasons[r].name }

func (r reason) outcome() outcome { return reasons[r].outcome }

// failureReason classifies a verification error. Signature problems are
// looked at before claims problems, so an expired token with a bad
// signature is a bad signature, never merely "expired".
func failureReason(err error) reason {
	switch {
	case errors.Is(err, errNotCompact), errors.Is(err, errBadJSON), errors.Is(err, errNotNumericDate):
		return reasonMalformed
	case errors.Is(err, errDuplicateMember):
		return reasonDuplicateKey
	case errors.Is(err, errAlgNotAllowed):
		return reasonAlgNotAllowed
	case errors.Is(err, errCritHeader):
		return reasonCritHeader
	case errors.Is(err, errMissingKid):
		return reasonMissingKid
	case errors.Is(err, errNoKeys):
		return reasonNoKeys
	case errors.Is(err, errUnknownKid):
		return reasonUnknownKid
	case errors.Is(err, errAlgMismatch):
		return reasonAlgMismatch
	case errors.Is(err, errUnsafeClaims):
		return reasonUnsafeClaims
	case errors.Is(err, errBadClaims):
		return reasonBadClaims
	case errors.Is(err, errTooLong):
		return reasonLongLived
	case errors.Is(err, jwt.ErrTokenMalformed):
		return reasonMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// golang-jwt knows no such algorithm ("None", "HS999") or none
		// was given; the keyfunc's own errors were matched above.
		return reasonAlgNotAllowed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return reasonBadSignature
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return reasonMissingClaim
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return reasonBadIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return reasonBadAudience
	case errors.Is(err, jwt.ErrTokenExpired):
		return reasonExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return reasonNotYetValid
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return reasonIssuedInFuture
	}
	return reasonBadClaims
}

// decision is the result of one check.
type decision struct {
	reason reason
	id     *identity // set when the token verified, even if the policy then denied
	route  string
	err    error // detail for the log only
	// dpopScheme: the token came as Authorization: DPoP; dpopOnly: the
	// route requires DPoP. Both shape the challenges of a denial.
	dpopScheme, dpopOnly bool
}

func (d decision) outcome() outcome { return d.reason.outcome() }

// findToken returns the token from the first configured header that has
// one, and the scheme it came with. An Authorization header with another
// scheme (Basic, say) is not a token and the search goes on; "Bearer" or
// "DPoP" with nothing usable after it is a token that will fail
// verification. found is false when no header carried a token at all.
func (s *Server) findToken(hs headerSource) (tok string, scheme uint8, found bool) {
	for _, h := range s.cfg.TokenHeaders {
		v, ok := hs.header(h)
		if !ok {
			continue
		}
		if h != "authorization" {
			return v, schemeHeader, true
		}
		sch, rest, _ := strings.Cut(v, " ")
		switch {
		case strings.EqualFold(sch, "bearer"):
			scheme = schemeBearer
		case strings.EqualFold(sch, dpop.Scheme):
			scheme = schemeDPoP
		default:
			continue
		}
		return strings.TrimLeft(rest, " "), scheme, true
	}
	return "", schemeBearer, false
}

// decide is the one decision procedure behind gRPC Check and HTTP
// forward-auth: policy, token, cache, verification, then the policy of
// the file's matching route (or its default) and the request's own
// policy, both of which must allow.
func (s *Server) decide(ctx context.Context, hs headerSource, req *requestInfo, pol policy, polErr error) decision {
	d := decision{route: pol.route}
	if polErr != nil {
		d.reason, d.err = reasonBadPolicy, polErr
		return d
	}
	st := s.state.Load()
	filePol := st.filePolicy(&d, req)
	if filePol != nil {
		d.dpopOnly = filePol.dpop
	}
	d.dpopOnly = d.dpopOnly || pol.dpop
	tok, scheme, found := s.findToken(hs)
	d.dpopScheme = scheme == schemeDPoP
	if !found {
		d.reason = reasonNoToken
		return d
	}
	if len(tok) > MaxTokenBytes {
		d.reason = reasonTooLarge
		return d
	}
	id, r, err := s.identify(ctx, st, tok)
	if err != nil {
		d.reason, d.err = r, err
		return d
	}
	// Revocations are looked at after the cache, on every check, so a
	// cached token is refused as soon as the list names it.
	// The feed is Tollgate's issuer's: it says nothing of other issuers'
	// tokens.
	if rv := s.revocations; rv != nil && id.issuer.iss == s.cfg.Issuer {
		if rv.set().revoked(id.issuer.iss, id) {
			d.reason, d.err = reasonRevoked, errors.New("token is revoked")
			return d
		}
		if rv.staleDenies(id) {
			d.reason, d.err = reasonRevocationsStale, errors.New("revocation feed is stale and the token predates its last good fetch")
			return d
		}
	}
	d.id, d.reason = id, r
	// The proof is new on every request, so it is verified on every
	// check, the token's cached or not. A bearer token on a route that
	// does not require DPoP costs nothing here.
	if id.jkt != "" || d.dpopScheme || d.dpopOnly {
		if r, err := s.checkDPoP(ctx, st, hs, req, tok, scheme, id, d.dpopOnly); err != nil {
			d.reason, d.err = r, err
			return d
		}
	}
	if filePol != nil {
		if r, err := filePol.evaluate(id, req); err != nil {
			d.reason, d.err = r, err
			return d
		}
	}
	if r, err := pol.evaluate(id, req); err != nil {
		d.reason, d.err = r, err
	}
	return d
}

// filePolicy returns the configuration file's policy for req (its
// matching route, or its default), nil when the file sets none, and
// names d's route after it unless the request's own policy named one.
func (st *trustState) filePolicy(d *decision, req *requestInfo) *policy {
	if !st.hasRoutes {
		return nil
	}
	p := st.routePolicy(req.method, req.host, req.path)
	if d.route == "" {
		d.route = p.route
	}
	return p
}

// identify returns the identity of a token from the cache or by full
// verification, caching a fresh verification. A cached identity counts
// only while its issuer is still configured as it was and the key that
// verified it is still in that issuer's key set.
func (s *Server) identify(ctx context.Context, st *trustState, tok string) (*identity, reason, error) {
	if s.cache == nil {
		id, _, err := s.verifyFresh(ctx, st, tok)
		if err != nil {
			return nil, failureReason(err), err
		}
		return id, reasonVerified, nil
	}
	h := sha256.Sum256([]byte(tok))
	now := s.now()
	if id, ok := s.cache.get(&h, now); ok {
		s.metrics.cacheHits.Inc()
		return id, reasonCached, nil
	}
	s.metrics.cacheMisses.Inc()
	id, key, err := s.verifyFresh(ctx, st, tok)
	if err != nil {
		return nil, failureReason(err), err
	}
	// Cache until exp, not exp+leeway: after exp a token must verify
	// afresh, and the leeway is the verifier's business.
	if id.exp.After(now) {
		s.cache.put(&h, id, key, id.exp)
	}
	return id, reasonVerified, nil
}

// verifyFresh verifies tok and logs the mapped headers it had to leave
// out.
func (s *Server) verifyFresh(ctx context.Context, st *trustState, tok string) (*identity, *verifyKey, error) {
	id, key, err := st.verify(ctx, tok)
	if err == nil && len(id.omitted) > 0 {
		s.log.Warn("mapped headers omitted", "issuer", id.issuer.name, "sub", id.sub, "omitted", id.omitted)
	}
	return id, key, err
}
