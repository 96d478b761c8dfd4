package books

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// routes is the whole API on one screen.
func (s *Service) routes(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /book", s.authed(s.create)) // the tutorial's path
	mux.Handle("POST /books", s.authed(s.create))
	mux.Handle("GET /books", s.authed(s.list))
	mux.Handle("GET /books/{id}", s.authed(s.get))
	mux.Handle("PUT /books/{id}", s.authed(s.replace))
	mux.Handle("PATCH /books/{id}", s.authed(s.update))
	mux.Handle("DELETE /books/{id}", s.authed(s.delete))
	s.health.Register(mux, reg)
	return jsonFallback(mux)
}

// probeMethods are the methods tried to fill a 405's Allow header.
var probeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// jsonFallback serves mux, answering what no route matches with a JSON
// 404, or a JSON 405 with an Allow header when the path exists under
// other methods, instead of ServeMux's plain-text pages.
func jsonFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		var allow []string
		for _, m := range probeMethods {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) == 0 {
			httpapi.NotFound(w, r)
			return
		}
		e := httpapi.Errorf(http.StatusMethodNotAllowed, nil, "method %s is not allowed here; allowed: %s", r.Method, strings.Join(allow, ", "))
		e.Header = http.Header{"Allow": {strings.Join(allow, ", ")}}
		httpapi.WriteError(w, r, e)
	})
}
