// Package authz is Tollgate's authorization server: Envoy's ext_authz
// gRPC Check and an HTTP forward-auth endpoint, both deciding with one
// procedure. It verifies the caller's JWT against the issuer's JWKS,
// applies the route's policy, and answers either OK with identity headers
// for the upstream or an RFC 6750 denial.
//
// It must never let a request through on doubt: a token it cannot fully
// verify, a policy it does not understand, or a key set it does not have
// is a denial, and a denial is always a CheckResponse, never a gRPC error
// (which Envoy might be configured to let through). It never trusts a key
// or algorithm named by a token, never logs a token, and never sends the
// upstream an identity header the client chose.
package authz

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/internal/httpapi"
	"github.com/tollgate-dev/tollgate/internal/server"
)

// AuthorizationService is the gRPC service name Envoy calls, also the
// name its health is reported under.
const AuthorizationService = "envoy.service.auth.v3.Authorization"

// Server is the authz service: the key source, the verifier, the token
// cache, and the gRPC and HTTP front ends over them.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	cache    *tokenCache
	programs *celPrograms
	// revocations is nil when no feed is configured.
	revocations *revocations
	health      *health.Server
	ready       *server.Health
	reg         *prometheus.Registry
	now         func() time.Time
	tracer      trace.Tracer // nil: tracing off
	// decisions is the logger of the per-check lines: log itself, or
	// log through logs (asynchronous) when LogBuffer > 0.
	decisions *slog.Logger
	logs      *logQueue
	allowSeq  atomic.Uint64

	// state is the current trusted issuers and routes, replaced whole by
	// a reload of the configuration file.
	state    atomic.Pointer[trustState]
	runCtx   context.Context
	reloadMu sync.Mutex                        // serialises commits
	sources  map[*keySource]context.CancelFunc // running key sources

	// dpop verifies DPoP proofs; dpopSQL is its shared replay store,
	// nil when proofs are remembered in memory; dpopCh are its
	// challenges.
	dpop    *dpop.Verifier
	dpopSQL *dpop.SQLReplay
	dpopCh  dpopChallenges

	httpOnce    sync.Once
	httpHandler http.Handler

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.Mutex
	closed  bool
}

// New validates cfg (reading Config.ConfigFile, if set) and starts
// loading every issuer's key set in the background. The server answers
// checks at once, but is not ready (gRPC health NOT_SERVING, Ready
// failing) until every required issuer has a key set with a usable key;
// until then its tokens are denied with 503. ctx bounds nothing after
// New returns; Close stops the background work.
func New(ctx context.Context, cfg Config, log *slog.Logger, reg *prometheus.Registry) (*Server, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	fc := fileConfig{Issuers: cfg.Issuers, Routes: cfg.Routes, Default: cfg.DefaultPolicy}
	var file *configFile
	if cfg.ConfigFile != "" {
		if file, err = readConfigFile(cfg.ConfigFile); err != nil {
			return nil, err
		}
		fc = file.cfg
	} else if len(fc.Issuers) == 0 {
		fc.Issuers = []IssuerConfig{cfg.singleIssuer()}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{
		cfg:      cfg,
		log:      log,
		cache:    newTokenCache(cfg.CacheSize),
		programs: newCELPrograms(),
		health:   health.NewServer(),
		reg:      reg,
		now:      time.Now,
		sources:  map[*keySource]context.CancelFunc{},
		tracer:   newTracer(cfg.TracerProvider),
	}
	s.metrics = newMetrics(reg, func() int {
		if s.cache == nil {
			return 0
		}
		return s.cache.len()
	}, s.revocationGauges)
	reg.MustRegister(jwksCollector{s})
	s.decisions = log
	if cfg.LogBuffer > 0 {
		s.logs = newLogQueue(cfg.LogBuffer, s.metrics.logsDropped)
		s.decisions = slog.New(asyncHandler{next: log.Handler(), q: s.logs})
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(AuthorizationService, healthpb.HealthCheckResponse_NOT_SERVING)
	checks := map[string]server.Check{"jwks": s.keysReady}
	if cfg.DPoPReplayDSN != "" {
		checks["dpop_replay"] = s.dpopReady
	}
	s.ready = server.NewHealth(checks)
	st, err := s.buildState(fc, nil)
	if err != nil {
		if file != nil {
			err = file.locate(err)
		}
		return nil, fmt.Errorf("authz config: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.dpop, s.dpopSQL, err = newDPoP(runCtx, cfg, func() time.Time { return s.now() })
	if err != nil {
		cancel()
		return nil, fmt.Errorf("authz config: %w", err)
	}
	s.dpopCh = newDPoPChallenges(s.dpop.Algorithms())
	s.runCtx, s.cancel = runCtx, cancel
	s.commit(st)
	if file != nil {
		s.wg.Go(func() { s.watch(runCtx, file) })
	}
	if cfg.RevocationsURL != "" {
		s.revocations = newRevocations(cfg, log, s.metrics, func() time.Time { return s.now() })
		s.ready.SetDetail("revocations", s.revocations.detail)
		s.wg.Go(func() { s.revocations.run(runCtx) })
	}
	return s, nil
}

// syncHealth sets gRPC health from readiness, the one source of both:
// SERVING exactly when Ready passes.
func (s *Server) syncHealth() {
	st := healthpb.HealthCheckResponse_SERVING
	if s.Ready(context.Background()) != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(AuthorizationService, st)
}

// Ready reports whether the server can verify tokens: a key set with at
// least one usable key is loaded and the server is not stopping. gRPC
// health and /readyz both answer from it.
func (s *Server) Ready(ctx context.Context) error { return s.ready.Ready(ctx) }

// SetStopping turns gRPC health to NOT_SERVING and /readyz to failing,
// so load balancers and Envoy's health checks move away before the
// servers stop. Checks are still answered until then.
func (s *Server) SetStopping() {
	s.ready.SetStopping()
	s.syncHealth()
}

// Serve answers Check on grpcL and forward-auth, health and metrics on
// httpL until ctx ends or a listener fails; then it turns readiness off,
// drains both servers within Config.ShutdownTimeout and closes s.
func (s *Server) Serve(ctx context.Context, grpcL, httpL net.Listener) error {
	defer s.Close()
	gs := grpc.NewServer(ServerOptions()...)
	s.RegisterGRPC(gs)
	return server.Run(ctx, s.log, s.cfg.ShutdownTimeout, s.SetStopping,
		server.Bound{Name: "authz gRPC", Unit: server.GRPC{Server: gs}, Listener: grpcL},
		server.Bound{Name: "authz HTTP", Unit: server.NewHTTP(s.HTTPHandler(), s.log), Listener: httpL},
	)
}

// Close stops the background key refresh (after SetStopping). It does
// not stop servers the caller registered s on.
func (s *Server) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.SetStopping()
	s.cancel()
	s.wg.Wait()
	s.cfg.HTTPClient.CloseIdleConnections()
	if s.logs != nil {
		s.logs.close()
	}
	return nil
}

// RegisterGRPC registers the Authorization service, the gRPC health
// service (tracking readiness, under "" and AuthorizationService) and
// server reflection on gs.
func (s *Server) RegisterGRPC(gs *grpc.Server) {
	authv3.RegisterAuthorizationServer(gs, s)
	healthpb.RegisterHealthServer(gs, s.health)
	reflection.Register(gs)
}

// ServerOptions are the gRPC server options authz runs with. They accept
// the keepalive pings Envoy may send on its long-lived connection and
// close connections whose peer has vanished.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    time.Minute,
			Timeout: 20 * time.Second,
		}),
		grpc.MaxRecvMsgSize(8 << 20),
	}
}

// HTTPHandler returns the handler for the authz HTTP port: forward-auth
// at /auth (and /auth/..., for Envoy's http_service path_prefix), and
// /healthz, /readyz and /metrics.
// Every call returns the same handler.
func (s *Server) HTTPHandler() http.Handler {
	s.httpOnce.Do(func() {
		mux := http.NewServeMux()
		fa := http.HandlerFunc(s.serveForwardAuth)
		mux.Handle("/auth", fa)
		mux.Handle("/auth/", fa)
		if s.cfg.Explain {
			mux.HandleFunc("POST /explain", s.serveExplain)
		}
		s.ready.Register(mux, s.reg)
		mux.HandleFunc("/", httpapi.NotFound)
		s.httpHandler = server.Instrument(s.log, server.NewMetrics(s.reg), mux)
	})
	return s.httpHandler
}
