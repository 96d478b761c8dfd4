package authz

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// ExplainRequest asks why a token would be allowed or denied: the token,
// and the request and route policy it would come with.
type ExplainRequest struct {
	Token  string            `json:"token"`
	Method string            `json:"method,omitempty"`
	Path   string            `json:"path,omitempty"`
	Host   string            `json:"host,omitempty"`   // for authz-side routes that match on the host
	Policy map[string]string `json:"policy,omitempty"` // context_extensions, e.g. {"require": "admin"}
}

// Explanation is one decision in an operator's terms. It never repeats
// the token; the claims are those of a token whose signature verified.
type Explanation struct {
	Request  string            `json:"request,omitempty"` // method and path (without the query) as given
	Decision string            `json:"decision"`          // allow or deny
	Reason   string            `json:"reason"`            // e.g. "expired 3m12s ago"
	Code     string            `json:"code"`              // the reason label of tollgate_authz_checks_total
	Status   int               `json:"status"`            // what the client would get
	Issuer   string            `json:"issuer,omitempty"`
	Claims   map[string]any    `json:"claims,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"` // what an allow sets for the upstream
	Removes  []string          `json:"removes,omitempty"` // what an allow removes
}

// maxExplainBody bounds a POST /explain body.
const maxExplainBody = 64 << 10

// Explain decides req as a check would, without the cache, the metrics
// or the decision log, and says why. A token naming an unknown kid may
// still make the key source refetch, within its usual rate limit.
func (s *Server) Explain(ctx context.Context, req ExplainRequest) Explanation {
	tok := strings.TrimSpace(req.Token)
	if scheme, rest, ok := strings.Cut(tok, " "); ok && strings.EqualFold(scheme, "bearer") {
		tok = strings.TrimSpace(rest)
	}
	pol, polErr := s.parsePolicy(req.Policy)
	d := decision{route: pol.route}
	ri := requestInfo{method: req.Method, path: req.Path, host: req.Host}
	// The configuration file's matching route (or default) applies as in
	// a check, beside the request's own policy.
	st := s.state.Load()
	filePol := st.filePolicy(&d, &ri)
	var verr error
	switch {
	case polErr != nil:
		d.reason, d.err = reasonBadPolicy, polErr
	case tok == "":
		d.reason = reasonNoToken
	case len(tok) > MaxTokenBytes:
		d.reason = reasonTooLarge
	default:
		id, _, err := st.verify(ctx, tok)
		if err != nil {
			d.reason, verr = failureReason(err), err
			break
		}
		d.id, d.reason = id, reasonVerified
		if filePol != nil {
			if r, err := filePol.evaluate(id, &ri); err != nil {
				d.reason, d.err = r, err
				break
			}
		}
		if r, err := pol.evaluate(id, &ri); err != nil {
			d.reason, d.err = r, err
		}
	}
	o := d.outcome()
	e := Explanation{Decision: o.String(), Code: d.reason.String(), Status: o.httpStatus()}
	if req.Method != "" || req.Path != "" {
		path, _, _ := strings.Cut(req.Path, "?")
		e.Request = strings.TrimSpace(truncate(req.Method, 16) + " " + truncate(path, 256))
	}
	hdr, c := peek(tok)
	e.Reason = s.explainReason(d, verr, hdr, c, req.Policy)
	if signatureVerified(d.reason) && c != nil {
		e.Issuer = s.cfg.Issuer
		if d.id != nil {
			e.Issuer = d.id.issuer.iss
		}
		e.Claims = usedClaims(c)
	}
	if o == allowed {
		e.Headers = map[string]string{}
		for _, h := range d.id.allow.fwd {
			e.Headers[strings.ToLower(h[0])] = h[1]
		}
		e.Removes = slices.Clone(d.id.allow.remove)
	}
	return e
}

// signatureVerified reports whether a decision with reason r got past
// the signature (golang-jwt checks it before any claim).
func signatureVerified(r reason) bool {
	switch r {
	case reasonVerified, reasonCached, reasonMissingRole, reasonExpired, reasonNotYetValid,
		reasonIssuedInFuture, reasonBadIssuer, reasonBadAudience, reasonMissingClaim:
		return true
	}
	return false
}

// peek reads a token's header and claims without verifying anything,
// only to describe a decision already made; nil when it cannot be read.
func peek(tok string) (map[string]any, *claims) {
	var c claims
	t, _, err := jwt.NewParser().ParseUnverified(tok, &c)
	if err != nil {
		return nil, nil
	}
	return t.Header, &c
}

// usedClaims are the claims a decision reads, for the explanation.
func usedClaims(c *claims) map[string]any {
	m := map[string]any{"sub": c.Subject, "iss": c.Issuer, "aud": []string(c.Audience)}
	if c.Name != "" {
		m["name"] = c.Name
	}
	if c.Roles != nil {
		m["roles"] = c.Roles
	}
	for k, t := range map[string]*jwt.NumericDate{"exp": c.ExpiresAt, "nbf": c.NotBefore, "iat": c.IssuedAt} {
		if t != nil {
			m[k] = t.UTC().Format(time.RFC3339)
		}
	}
	if c.ID != "" {
		m["jti"] = c.ID
	}
	return m
}

// explainReason says why d came out as it did, in words an operator can
// act on; it names the token's kid, alg and claims, never the token.
func (s *Server) explainReason(d decision, verr error, hdr map[string]any, c *claims, pol map[string]string) string {
	now := s.now()
	ago := func(t time.Time) string { return now.Sub(t).Round(time.Second).String() }
	in := func(t time.Time) string { return t.Sub(now).Round(time.Second).String() }
	kid, _ := hdr["kid"].(string)
	alg, _ := hdr["alg"].(string)
	kid, alg = truncate(kid, 64), truncate(alg, 32)
	switch d.reason {
	case reasonVerified, reasonCached:
		msg := fmt.Sprintf("signature by key %q (%s) verified", kid, alg)
		if d.id != nil {
			msg += fmt.Sprintf("; expires in %s", in(d.id.exp))
		}
		if r := pol["require"]; r != "" {
			msg += "; has the required role " + r
		}
		return msg
	case reasonNoToken:
		return "no token given"
	case reasonTooLarge:
		return fmt.Sprintf("token is over %d bytes", MaxTokenBytes)
	case reasonBadPolicy:
		return "route policy is not understood, so every request on it is denied: " + d.err.Error()
	case reasonMissingRole:
		have := "none"
		if d.id != nil && len(d.id.roles) > 0 {
			have = strings.Join(d.id.roles, ", ")
		}
		if r := pol["require"]; r != "" {
			return fmt.Sprintf("%s (the route requires %s; the token has: %s)", d.err.Error(), r, have)
		}
		where := "authz's configuration file"
		if d.route != "" {
			where = fmt.Sprintf("authz's route %q", d.route)
		}
		return fmt.Sprintf("%s (%s; the token has: %s)", d.err.Error(), where, have)
	case reasonExpired:
		if c != nil && c.ExpiresAt != nil {
			return fmt.Sprintf("expired %s ago (at %s; leeway %s)", ago(c.ExpiresAt.Time), c.ExpiresAt.UTC().Format(time.RFC3339), s.cfg.Leeway)
		}
	case reasonNotYetValid:
		if c != nil && c.NotBefore != nil {
			return fmt.Sprintf("not valid for another %s (nbf %s; leeway %s)", in(c.NotBefore.Time), c.NotBefore.UTC().Format(time.RFC3339), s.cfg.Leeway)
		}
	case reasonIssuedInFuture:
		if c != nil && c.IssuedAt != nil {
			return fmt.Sprintf("issued %s in the future (iat %s; leeway %s): check the clocks", in(c.IssuedAt.Time), c.IssuedAt.UTC().Format(time.RFC3339), s.cfg.Leeway)
		}
	case reasonBadIssuer:
		if c != nil {
			return fmt.Sprintf("iss is %q, want %q", truncate(c.Issuer, 128), s.cfg.Issuer)
		}
	case reasonBadAudience:
		if c != nil {
			return fmt.Sprintf("aud is %q, want it to include %q", []string(c.Audience), s.cfg.Audience)
		}
	case reasonUnknownKid:
		return fmt.Sprintf("kid %q not in the issuer's key set (%s)", kid, s.keySetSummary(now))
	case reasonNoKeys:
		return "no usable key set is loaded yet, so nothing verifies (" + s.keySetSummary(now) + ")"
	case reasonAlgNotAllowed:
		return fmt.Sprintf("alg %q is not in the allowlist (%s)", alg, strings.Join(s.cfg.Algorithms, ", "))
	case reasonAlgMismatch:
		return fmt.Sprintf("token says alg %s, but key %q is for another algorithm", alg, kid)
	case reasonBadSignature:
		return fmt.Sprintf("signature does not verify with key %q (%s): the token was altered or signed by another key", kid, alg)
	case reasonMissingKid:
		return "token header has no kid"
	case reasonCritHeader:
		return "token header has crit extensions, which are refused"
	}
	if verr != nil {
		return d.reason.String() + ": " + verr.Error()
	}
	return d.reason.String()
}

// keySetSummary says how many keys are loaded and how old they are.
func (s *Server) keySetSummary(now time.Time) string {
	var n int
	var at int64
	for _, ti := range s.state.Load().list {
		n += ti.src.keys().len()
		at = max(at, ti.src.loadedAt.Load())
	}
	if at == 0 {
		return fmt.Sprintf("%d keys, never fetched", n)
	}
	return fmt.Sprintf("%d keys, refreshed %s ago", n, now.Sub(time.Unix(0, at)).Round(time.Second))
}

// serveExplain answers POST /explain with the Explanation of the JSON
// ExplainRequest in the body.
func (s *Server) serveExplain(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	var req ExplainRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxExplainBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		httpapi.WriteJSON(w, http.StatusBadRequest, map[string]string{"message": "body must be a JSON object {\"token\": ..., \"method\": ..., \"path\": ..., \"policy\": {...}} of at most 64 KiB"})
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, s.Explain(r.Context(), req))
}
