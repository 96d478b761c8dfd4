// Package server is the life of every Tollgate process: HTTP and gRPC
// servers that start together, stop together on SIGINT/SIGTERM with a
// deadline, and report liveness, readiness and metrics.
//
// It must never keep serving traffic while reporting not-ready, nor exit
// before in-flight requests had their chance to finish.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// DefaultShutdownTimeout bounds how long Run waits for in-flight requests.
const DefaultShutdownTimeout = 15 * time.Second

// NewRegistry returns a Prometheus registry with the Go runtime and
// process collectors, one per service so services can share a process.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Check is a readiness probe: nil means ready.
type Check func(ctx context.Context) error

// Health serves /healthz (the process is alive) and /readyz (every check
// passes and the server is not shutting down).
type Health struct {
	mu       sync.Mutex
	checks   map[string]Check
	details  map[string]func() any
	stopping bool
}

// SetDetail adds detail, under name, to every /readyz answer: state a
// probe does not decide on but an operator wants to see.
func (h *Health) SetDetail(name string, detail func() any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.details == nil {
		h.details = map[string]func() any{}
	}
	h.details[name] = detail
}

func (h *Health) detail() map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.details) == 0 {
		return nil
	}
	out := make(map[string]any, len(h.details))
	for k, f := range h.details {
		out[k] = f()
	}
	return out
}

// NewHealth returns a Health with the named readiness checks.
func NewHealth(checks map[string]Check) *Health {
	h := &Health{checks: map[string]Check{}}
	for name, c := range checks {
		h.checks[name] = c
	}
	return h
}

// SetStopping marks the server as shutting down, so /readyz fails and
// load balancers stop sending new requests.
func (h *Health) SetStopping() {
	h.mu.Lock()
	h.stopping = true
	h.mu.Unlock()
}

// Ready runs every check and returns the first failure.
func (h *Health) Ready(ctx context.Context) error {
	h.mu.Lock()
	stopping := h.stopping
	checks := make(map[string]Check, len(h.checks))
	for k, v := range h.checks {
		checks[k] = v
	}
	h.mu.Unlock()
	if stopping {
		return errors.New("shutting down")
	}
	for name, c := range checks {
		if err := c(ctx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// Register adds GET /healthz, GET /readyz and GET /metrics to mux.
func (h *Health) Register(mux *http.ServeMux, reg *prometheus.Registry) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := h.Ready(ctx); err != nil {
			httpapi.Logger(r.Context()).Warn("not ready", "err", err)
			body := map[string]any{"status": "not ready", "reason": err.Error()}
			if d := h.detail(); d != nil {
				body["detail"] = d
			}
			httpapi.WriteJSON(w, http.StatusServiceUnavailable, body)
			return
		}
		body := map[string]any{"status": "ready"}
		if d := h.detail(); d != nil {
			body["detail"] = d
		}
		httpapi.WriteJSON(w, http.StatusOK, body)
	})
	if reg != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	}
}

// Unit is one server Run manages.
type Unit interface {
	// Serve serves on l until Stop; a normal stop returns nil.
	Serve(l net.Listener) error
	// Stop drains in-flight work within ctx, then stops.
	Stop(ctx context.Context) error
}

// HTTP adapts an *http.Server to a Unit.
type HTTP struct{ *http.Server }

// NewHTTP returns an HTTP unit serving h with sane timeouts, so slow
// clients cannot hold connections forever.
func NewHTTP(h http.Handler, log *slog.Logger) HTTP {
	return HTTP{&http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
}

// Serve implements Unit.
func (s HTTP) Serve(l net.Listener) error {
	if err := s.Server.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Stop implements Unit.
func (s HTTP) Stop(ctx context.Context) error { return s.Server.Shutdown(ctx) }

// GRPC adapts a *grpc.Server to a Unit.
type GRPC struct{ *grpc.Server }

// Serve implements Unit.
func (s GRPC) Serve(l net.Listener) error {
	if err := s.Server.Serve(l); !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// Stop implements Unit: GracefulStop, then a hard Stop at the deadline.
func (s GRPC) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.Server.GracefulStop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Server.Stop()
		return ctx.Err()
	}
}

// WaitReady polls ready every interval until it passes, returning nil,
// or until ctx ends, returning the last reason it failed, named by name.
func WaitReady(ctx context.Context, name string, interval time.Duration, ready Check) error {
	for {
		last := ready(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", name, last)
		case <-time.After(interval):
		}
	}
}

// Listen opens a TCP listener on addr, wrapping the error with name.
func Listen(name, addr string) (net.Listener, error) {
	return ListenNetwork(name, "tcp", addr)
}

// ListenNetwork is Listen on a given network ("tcp4" binds IPv4 only).
func ListenNetwork(name, network, addr string) (net.Listener, error) {
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	return l, nil
}

// Bound pairs a Unit with the listener it serves on.
type Bound struct {
	Name     string
	Unit     Unit
	Listener net.Listener
}

// Run serves every unit until ctx is done (the caller wires ctx to
// SIGINT/SIGTERM with signal.NotifyContext) or one of them fails; then it
// calls beforeStop (flip health to not-serving), and stops all units
// within timeout. It returns the first serve error, if any.
func Run(ctx context.Context, log *slog.Logger, timeout time.Duration, beforeStop func(), units ...Bound) error {
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	errc := make(chan error, len(units))
	for _, u := range units {
		log.Info("listening", "server", u.Name, "addr", u.Listener.Addr().String())
		go func() {
			if err := u.Unit.Serve(u.Listener); err != nil {
				errc <- fmt.Errorf("%s: %w", u.Name, err)
				return
			}
			errc <- nil
		}()
	}
	var first error
	pending := len(units)
	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx))
	case first = <-errc:
		// The caller reports the failure; stopping the others is ours.
		pending--
	}
	if beforeStop != nil {
		beforeStop()
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, u := range units {
		wg.Go(func() {
			if err := u.Unit.Stop(stopCtx); err != nil {
				log.Warn("stop did not finish cleanly", "server", u.Name, "err", err)
			}
		})
	}
	wg.Wait()
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}
