package authz

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// HeaderRemove is the response header through which Envoy's http_service
// mode learns which request headers to remove before going upstream.
const HeaderRemove = "x-envoy-auth-headers-to-remove"

// headerRemoveKey is HeaderRemove in canonical form, so setting it costs
// no canonicalization per request (the identity's own header names are
// canonical already).
var headerRemoveKey = http.CanonicalHeaderKey(HeaderRemove)

// serveForwardAuth answers a forward-auth subrequest from Envoy's
// http_service mode, nginx auth_request, Traefik ForwardAuth or Caddy
// forward_auth with the same decision gRPC Check makes: 200 with the
// identity headers, or 401/403/503 with a challenge and a JSON body.
// The policy comes in x-tollgate-* headers that only the proxy may set.
func (s *Server) serveForwardAuth(w http.ResponseWriter, r *http.Request) {
	var d decision
	start := time.Now()
	ctx := r.Context()
	if s.tracer != nil {
		var span trace.Span
		ctx, span = s.startForwardAuthSpan(ctx, r.Header)
		defer func() { s.endCheckSpan(span, d) }()
	}
	pol, polErr := s.policyFromHeaders(r.Header)
	method, path := originalRequest(r)
	ri := requestInfo{method: method, path: path, host: forwardedHost(r), scheme: forwardedProto(r), headers: httpHeaders(r.Header)}
	d = s.decide(ctx, httpHeaders(r.Header), &ri, pol, polErr)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if d.outcome() == allowed {
		for _, kv := range d.id.allow.fwd {
			h[kv[0]] = []string{kv[1]}
		}
		h.Set(headerRemoveKey, d.id.allow.removeFA)
		w.WriteHeader(http.StatusOK)
	} else {
		dn := denialFor(d)
		challenges, nonce := s.challenges(d)
		if len(challenges) > 0 {
			h["Www-Authenticate"] = challenges
		} else {
			h.Set("Retry-After", retryAfter)
		}
		if nonce {
			h.Set(dpop.NonceHeader, s.dpop.Nonces().Current())
		}
		httpapi.WriteJSON(w, dn.status, map[string]string{"message": dn.message})
	}
	s.record(ctx, protoHTTP, d, time.Since(start), httpapi.RequestID(ctx), method, path)
}

// httpHeaders reads forward-auth request headers the way Envoy presents
// them in a CheckRequest: repeated headers joined with ",".
type httpHeaders http.Header

func (h httpHeaders) header(name string) (string, bool) {
	vs := http.Header(h).Values(name)
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

// policyFromHeaders reads the policy from x-tollgate-<key> headers. As
// with context_extensions, an unknown key or a bad value is an error, and
// so is a repeated header: a client's copy next to the proxy's must not
// leave the proxy's requirement ambiguous.
func (s *Server) policyFromHeaders(h http.Header) (policy, error) {
	var p policy
	for k, vs := range h {
		lk := strings.ToLower(k)
		key, ok := strings.CutPrefix(lk, policyHeaderPrefix)
		if !ok {
			continue
		}
		if len(vs) != 1 {
			return policy{}, fmt.Errorf("%w: %s given %d times", errBadPolicy, lk, len(vs))
		}
		if err := s.setPolicy(&p, key, vs[0]); err != nil {
			return policy{}, err
		}
	}
	return p, nil
}

// originalRequest returns the method and URI of the request being
// authorized: nginx passes them in X-Original-Method/X-Original-URI,
// Traefik and Caddy in X-Forwarded-Method/X-Forwarded-Uri, and Envoy's
// http_service appends the original path to the /auth path prefix.
func originalRequest(r *http.Request) (method, uri string) {
	for _, p := range [...]struct{ method, uri string }{
		{"X-Original-Method", "X-Original-Uri"},
		{"X-Forwarded-Method", "X-Forwarded-Uri"},
	} {
		if u := r.Header.Get(p.uri); u != "" {
			m := r.Header.Get(p.method)
			if m == "" {
				m = r.Method
			}
			return m, u
		}
	}
	uri = strings.TrimPrefix(r.URL.RequestURI(), "/auth")
	if uri == "" || uri[0] != '/' {
		uri = "/" + uri
	}
	return r.Method, uri
}

// forwardedHost is the host of the request being authorized: the one a
// proxy passed in X-Forwarded-Host, else the subrequest's own Host, which
// nginx, Envoy and Caddy copy from the original request.
func forwardedHost(r *http.Request) string {
	if h := r.Header.Get("X-Forwarded-Host"); h != "" {
		return h
	}
	return r.Host
}

// forwardedProto is the scheme of the request being authorized: the one
// the proxy passed in X-Forwarded-Proto, else that of the subrequest.
// Only a DPoP proof's htu uses it, and a configured public origin for
// the host takes its place.
func forwardedProto(r *http.Request) string {
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		p, _, _ = strings.Cut(p, ",")
		return strings.ToLower(strings.TrimSpace(p))
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// all returns the request headers by lowercase name, repeats joined
// with ",", as a CEL policy sees them.
func (h httpHeaders) all() map[string]string {
	m := make(map[string]string, len(h))
	for k, vs := range h {
		m[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	return m
}
