// Package books is the backend the Tollgate gateway protects: create,
// list, read, replace, update and delete the caller's own books over
// HTTP, stored in SQLite or PostgreSQL.
//
// It contains no authentication at all. It trusts the identity headers
// that only the gateway can set (x-user-id, x-user-roles) and must never
// parse a token or a password, never serve a request that carries no
// identity (it answers 401 rather than guess), and never let one caller
// read, change, delete or even detect another caller's book: someone
// else's book answers exactly as a missing one does.
package books

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/internal/store"
)

// Config configures a Service. Start from DefaultConfig; every field is
// then taken as it is.
type Config struct {
	// DB is where books are kept: a SQLite file path, or a postgres://
	// URL. Required.
	DB string
	// MaxBodyBytes bounds a request body; larger bodies get 413.
	MaxBodyBytes int64
	// ShutdownTimeout bounds Serve's graceful stop.
	ShutdownTimeout time.Duration
	// TracerProvider records a server span per request, continuing the
	// caller's W3C trace context; nil turns tracing off.
	TracerProvider trace.TracerProvider
}

// DefaultShutdownTimeout is DefaultConfig's ShutdownTimeout.
const DefaultShutdownTimeout = 15 * time.Second

// DefaultConfig returns the configuration `tollgate books` starts from:
// a SQLite file under ./data.
func DefaultConfig() Config {
	return Config{
		DB:              filepath.Join("data", "books.db"),
		MaxBodyBytes:    DefaultMaxBodyBytes,
		ShutdownTimeout: DefaultShutdownTimeout,
	}
}

// Service is the books HTTP service.
type Service struct {
	log *slog.Logger
	cfg Config
	// closeOnce makes Close safe to call after Serve closed s.
	closeOnce sync.Once
	closeErr  error
	db        *store.DB
	books     bookStore
	cursors   cursorCodec
	health    *server.Health
	maxBody   int64
	handler   http.Handler
}

// New opens the database in cfg (applying its migrations) and returns the
// service, with its request and database metrics registered on reg (a
// fresh registry when nil). The caller must Close it.
func New(ctx context.Context, cfg Config, log *slog.Logger, reg *prometheus.Registry) (*Service, error) {
	if cfg.DB == "" {
		return nil, errors.New("books: no database configured")
	}
	if cfg.MaxBodyBytes <= 0 {
		return nil, fmt.Errorf("books: MaxBodyBytes must be positive, not %d", cfg.MaxBodyBytes)
	}
	if cfg.ShutdownTimeout <= 0 {
		return nil, fmt.Errorf("books: ShutdownTimeout must be positive, not %v", cfg.ShutdownTimeout)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = server.NewRegistry()
	}
	db, err := store.Open(ctx, cfg.DB, migrations)
	if err != nil {
		return nil, fmt.Errorf("books: %w", err)
	}
	key, err := secret(ctx, db, "cursor", 32)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("books: %w", err)
	}
	if err := reg.Register(collectors.NewDBStatsCollector(db.DB, "books")); err != nil {
		db.Close()
		return nil, fmt.Errorf("books: register database metrics: %w", err)
	}
	s := &Service{
		log:     log,
		cfg:     cfg,
		db:      db,
		books:   newSQLStore(db),
		cursors: cursorCodec{key: key},
		health:  server.NewHealth(map[string]server.Check{"database": db.Ping}),
		maxBody: cfg.MaxBodyBytes,
	}
	s.handler = server.Traced(cfg.TracerProvider, "books", server.Instrument(log, server.NewMetrics(reg), s.routes(reg)))
	log.Info("books ready", "database", string(db.Dialect))
	return s, nil
}

// Handler returns the service's HTTP handler: the books API plus
// GET /healthz, /readyz and /metrics, instrumented (request ids, access
// log, metrics).
func (s *Service) Handler() http.Handler { return s.handler }

// Ready reports whether the service can serve: the database answers and
// the service is not stopping.
func (s *Service) Ready(ctx context.Context) error { return s.health.Ready(ctx) }

// SetStopping makes /readyz fail from now on, so load balancers stop
// sending requests before the server shuts down.
func (s *Service) SetStopping() { s.health.SetStopping() }

// Serve serves the books API, health and metrics on l until ctx ends or
// the listener fails; then it turns readiness off, drains within
// Config.ShutdownTimeout and closes s.
func (s *Service) Serve(ctx context.Context, l net.Listener) error {
	defer s.Close()
	return server.Run(ctx, s.log, s.cfg.ShutdownTimeout, s.SetStopping,
		server.Bound{Name: "books", Unit: server.NewHTTP(s.handler, s.log), Listener: l})
}

// Close closes the database. Call it after the HTTP server has stopped.
func (s *Service) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.db.Close() })
	return s.closeErr
}
