package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/server"
)

// authzFlags are the settings of `tollgate authz`.
type authzFlags struct {
	log             logFlags
	grpcAddr        string
	httpAddr        string
	issuer          string
	jwksURL         string
	audience        string
	algs            string
	tokenHeaders    string
	leeway          time.Duration
	maxLifetime     time.Duration
	cacheSize       int
	minRefresh      time.Duration
	maxRefresh      time.Duration
	refetch         time.Duration
	fetchTimeout    time.Duration
	shutdownTimeout time.Duration
}

func (f *authzFlags) register(fs *flagSet) {
	f.log.register(fs)
	fs.String(&f.grpcAddr, "grpc-addr", "TOLLGATE_AUTHZ_GRPC_ADDR", ":9001", "gRPC listen address (ext_authz Check, health, reflection)")
	fs.String(&f.httpAddr, "http-addr", "TOLLGATE_AUTHZ_HTTP_ADDR", ":9002", "HTTP listen address (forward-auth at /auth, /healthz, /readyz, /metrics)")
	fs.String(&f.issuer, "issuer", "TOLLGATE_AUTHZ_ISSUER", "http://localhost:8080", "expected iss claim, and the base URL of OpenID discovery")
	fs.String(&f.jwksURL, "jwks-url", "TOLLGATE_AUTHZ_JWKS_URL", "", "JWKS URL (default: jwks_uri from <issuer>/.well-known/openid-configuration)")
	fs.String(&f.audience, "audience", "TOLLGATE_AUTHZ_AUDIENCE", authz.DefaultAudience, "audience that must be in the aud claim")
	fs.String(&f.algs, "algs", "TOLLGATE_AUTHZ_ALGS", strings.Join(authz.DefaultAlgorithms, ","), "comma-separated signature algorithm allowlist")
	fs.String(&f.tokenHeaders, "token-headers", "TOLLGATE_AUTHZ_TOKEN_HEADERS", strings.Join(authz.DefaultTokenHeaders, ","), "comma-separated headers searched for a token, in order (authorization takes a Bearer token)")
	fs.Duration(&f.leeway, "leeway", "TOLLGATE_AUTHZ_LEEWAY", authz.DefaultLeeway, "clock skew allowed on exp, nbf and iat")
	fs.Duration(&f.maxLifetime, "max-token-lifetime", "TOLLGATE_AUTHZ_MAX_TOKEN_LIFETIME", authz.DefaultMaxTokenLifetime, "longest token lifetime accepted (exp - iat, or exp - now without iat)")
	fs.Int(&f.cacheSize, "cache-size", "TOLLGATE_AUTHZ_CACHE_SIZE", authz.DefaultCacheSize, "verified tokens cached (0 disables the cache)")
	fs.Duration(&f.minRefresh, "jwks-min-refresh", "TOLLGATE_AUTHZ_JWKS_MIN_REFRESH", authz.DefaultMinRefresh, "shortest background JWKS refresh interval, whatever the issuer's Cache-Control says")
	fs.Duration(&f.maxRefresh, "jwks-max-refresh", "TOLLGATE_AUTHZ_JWKS_MAX_REFRESH", authz.DefaultMaxRefresh, "longest background JWKS refresh interval (used when the issuer sends no max-age)")
	fs.Duration(&f.refetch, "jwks-refetch-interval", "TOLLGATE_AUTHZ_JWKS_REFETCH_INTERVAL", authz.DefaultRefetchInterval, "least time between JWKS fetches caused by tokens with an unknown kid")
	fs.Duration(&f.fetchTimeout, "jwks-fetch-timeout", "TOLLGATE_AUTHZ_JWKS_FETCH_TIMEOUT", authz.DefaultFetchTimeout, "timeout of one discovery or JWKS request")
	fs.Duration(&f.shutdownTimeout, "shutdown-timeout", "TOLLGATE_SHUTDOWN_TIMEOUT", server.DefaultShutdownTimeout, "how long to wait for in-flight requests at shutdown")
}

// config turns the flags into an authz.Config.
func (f *authzFlags) config() (authz.Config, error) {
	cfg := authz.Config{
		Issuer:          f.issuer,
		JWKSURL:         f.jwksURL,
		Audience:        f.audience,
		Algorithms:      authzList(f.algs),
		TokenHeaders:    authzList(f.tokenHeaders),
		Leeway:          f.leeway,
		CacheSize:       f.cacheSize,
		MinRefresh:      f.minRefresh,
		MaxRefresh:      f.maxRefresh,
		RefetchInterval: f.refetch,
		FetchTimeout:    f.fetchTimeout,
	}
	cfg.MaxTokenLifetime = f.maxLifetime
	// In authz.Config a zero duration means "the default"; on the
	// command line it would silently mean something else, so refuse it.
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"-jwks-min-refresh", f.minRefresh},
		{"-jwks-max-refresh", f.maxRefresh},
		{"-jwks-refetch-interval", f.refetch},
		{"-jwks-fetch-timeout", f.fetchTimeout},
		{"-max-token-lifetime", f.maxLifetime},
	} {
		if d.v <= 0 {
			return cfg, fmt.Errorf("%s must be positive, not %v", d.name, d.v)
		}
	}
	if f.audience == "" {
		return cfg, fmt.Errorf("-audience must not be empty")
	}
	return cfg, nil
}

// authzList splits a comma-separated flag value, dropping empty items;
// nothing at all gives an empty, non-nil list (which authz refuses).
func authzList(s string) []string {
	out := []string{}
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func runAuthz(ctx context.Context, args []string) error {
	return serveAuthz(ctx, args, nil)
}

// serveAuthz is runAuthz, telling onListen (when not nil) the addresses
// it listens on, so a test can run the command on ephemeral ports.
func serveAuthz(ctx context.Context, args []string, onListen func(grpcAddr, httpAddr net.Addr)) error {
	fs := newFlagSet("authz")
	var f authzFlags
	f.register(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	log, err := f.log.logger("authz")
	if err != nil {
		return err
	}
	cfg, err := f.config()
	if err != nil {
		return err
	}
	reg := server.NewRegistry()
	srv, err := authz.New(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer srv.Close()
	gs := grpc.NewServer(authz.ServerOptions()...)
	srv.RegisterGRPC(gs)
	gl, err := server.Listen("authz gRPC", f.grpcAddr)
	if err != nil {
		return err
	}
	hl, err := server.Listen("authz HTTP", f.httpAddr)
	if err != nil {
		gl.Close()
		return err
	}
	if onListen != nil {
		onListen(gl.Addr(), hl.Addr())
	}
	// SetStopping flips gRPC health to NOT_SERVING and /readyz to 503
	// before the servers drain (GracefulStop, Shutdown).
	return server.Run(ctx, log, f.shutdownTimeout, srv.SetStopping,
		server.Bound{Name: "authz gRPC", Unit: server.GRPC{Server: gs}, Listener: gl},
		server.Bound{Name: "authz HTTP", Unit: server.NewHTTP(srv.HTTPHandler(), log), Listener: hl},
	)
}
