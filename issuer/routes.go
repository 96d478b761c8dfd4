package issuer

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
	"github.com/tollgate-dev/tollgate/internal/server"
)

// maxHeaderBytes bounds the request headers the issuer reads, well below
// the server's own limit, so oversized headers get a JSON 431.
const maxHeaderBytes = 16 << 10

// routes is the issuer's HTTP API in one screen.
func (s *Service) routes(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	handle := func(method, path string, h httpapi.HandlerFunc) {
		mux.Handle(method+" "+path, httpapi.Handle(h))
	}
	handle("POST", "/register", s.register)
	// A DPoP proof error at /login is answered as at /token.
	handle("POST", "/login", oauthErrors(s.login))
	// The tutorial's clients log in with a plain GET
	// (curl http://alain:secret@host/login); the answer is no-store.
	handle("GET", "/login", oauthErrors(s.login))
	handle("GET", "/users", s.listUsers)
	handle("POST", "/token", oauthHandler(s.token))
	handle("POST", "/revoke", oauthHandler(s.revoke))
	handle("POST", "/logout", s.logout)
	handle("POST", "/users/{id}/revoke", s.revokeUser)
	// Internal: followed by authz, never routed at the gateway.
	handle("GET", "/revocations", s.revocations)
	handle("GET", "/.well-known/jwks.json", s.jwks)
	handle("GET", "/.well-known/openid-configuration", s.openIDConfiguration)
	s.health.Register(mux, reg)
	return server.Instrument(s.log, server.NewMetrics(reg), limitHeaders(httpapi.Fallback(mux)))
}

// limitHeaders answers a request whose headers exceed maxHeaderBytes with
// a JSON 431 before any handler reads them.
func limitHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := len(r.RequestURI)
		for k, vs := range r.Header {
			for _, v := range vs {
				n += len(k) + len(v) + 4
			}
		}
		if n > maxHeaderBytes {
			httpapi.WriteError(w, r, httpapi.Errorf(http.StatusRequestHeaderFieldsTooLarge, nil,
				"request headers are larger than %d bytes", maxHeaderBytes))
			return
		}
		h.ServeHTTP(w, r)
	})
}
