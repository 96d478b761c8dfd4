package books

import (
	"net/http"

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
	return httpapi.Fallback(mux)
}
