package main

import (
	"context"
	"net"
	"os"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/internal/telemetry"
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
	revocationsURL  string
	revInterval     time.Duration
	revMaxAge       time.Duration
	revStale        string
	configFile      string
	reloadInterval  time.Duration
	logBuffer       int
	logAllowSample  int
	explain         bool

	dpopAlgs          string
	dpopMaxAge        time.Duration
	dpopMaxFuture     time.Duration
	dpopReplayCap     int
	dpopReplayDSN     string
	dpopNonces        bool
	dpopNonceSecret   string
	dpopNoncePeriod   time.Duration
	dpopPublicOrigins []string
}

func (f *authzFlags) register(fs *flagSet) {
	d := authz.DefaultConfig()
	f.log.register(fs)
	fs.String(&f.grpcAddr, "grpc-addr", "TOLLGATE_AUTHZ_GRPC_ADDR", "127.0.0.1:9001", "gRPC listen address (ext_authz Check, health, reflection); \":9001\" for every interface")
	fs.String(&f.httpAddr, "http-addr", "TOLLGATE_AUTHZ_HTTP_ADDR", "127.0.0.1:9002", "HTTP listen address (forward-auth at /auth, /healthz, /readyz, /metrics); \":9002\" for every interface")
	fs.String(&f.issuer, "issuer", "TOLLGATE_AUTHZ_ISSUER", "http://localhost:8080", "expected iss claim, and the base URL of OpenID discovery")
	fs.String(&f.jwksURL, "jwks-url", "TOLLGATE_AUTHZ_JWKS_URL", "", "JWKS URL (default: jwks_uri from <issuer>/.well-known/openid-configuration)")
	fs.String(&f.audience, "audience", "TOLLGATE_AUTHZ_AUDIENCE", d.Audience, "audience that must be in the aud claim")
	fs.String(&f.algs, "algs", "TOLLGATE_AUTHZ_ALGS", strings.Join(d.Algorithms, ","), "comma-separated signature algorithm allowlist")
	fs.String(&f.tokenHeaders, "token-headers", "TOLLGATE_AUTHZ_TOKEN_HEADERS", strings.Join(d.TokenHeaders, ","), "comma-separated headers searched for a token, in order (authorization takes a Bearer token)")
	fs.Duration(&f.leeway, "leeway", "TOLLGATE_AUTHZ_LEEWAY", d.Leeway, "clock skew allowed on exp, nbf and iat")
	fs.Duration(&f.maxLifetime, "max-token-lifetime", "TOLLGATE_AUTHZ_MAX_TOKEN_LIFETIME", d.MaxTokenLifetime, "longest token lifetime accepted (exp - iat, or exp - now without iat)")
	fs.Int(&f.cacheSize, "cache-size", "TOLLGATE_AUTHZ_CACHE_SIZE", d.CacheSize, "verified tokens cached (0 disables the cache)")
	fs.Duration(&f.minRefresh, "jwks-min-refresh", "TOLLGATE_AUTHZ_JWKS_MIN_REFRESH", d.MinRefresh, "shortest background JWKS refresh interval, whatever the issuer's Cache-Control says")
	fs.Duration(&f.maxRefresh, "jwks-max-refresh", "TOLLGATE_AUTHZ_JWKS_MAX_REFRESH", d.MaxRefresh, "longest background JWKS refresh interval (used when the issuer sends no max-age)")
	fs.Duration(&f.refetch, "jwks-refetch-interval", "TOLLGATE_AUTHZ_JWKS_REFETCH_INTERVAL", d.RefetchInterval, "least time between JWKS fetches caused by tokens with an unknown kid")
	fs.Duration(&f.fetchTimeout, "jwks-fetch-timeout", "TOLLGATE_AUTHZ_JWKS_FETCH_TIMEOUT", d.FetchTimeout, "timeout of one discovery or JWKS request")
	fs.String(&f.configFile, "config", "TOLLGATE_AUTHZ_CONFIG", "", "YAML file of trusted issuers, routes and a default policy, reloaded when it changes (replaces -issuer, -jwks-url, -audience)")
	fs.Duration(&f.reloadInterval, "config-reload-interval", "TOLLGATE_AUTHZ_CONFIG_RELOAD_INTERVAL", d.ReloadInterval, "how often the -config file is checked for a change")
	fs.Duration(&f.shutdownTimeout, "shutdown-timeout", "TOLLGATE_SHUTDOWN_TIMEOUT", d.ShutdownTimeout, "how long to wait for in-flight requests at shutdown")
	fs.String(&f.revocationsURL, "revocations-url", "TOLLGATE_AUTHZ_REVOCATIONS_URL", d.RevocationsURL, "the issuer's revocation feed, reached directly (http://issuer:8081/revocations); empty: revocations are not followed")
	fs.Duration(&f.revInterval, "revocations-interval", "TOLLGATE_AUTHZ_REVOCATIONS_INTERVAL", d.RevocationsInterval, "how often the revocation feed is fetched")
	fs.Duration(&f.revMaxAge, "revocations-max-age", "TOLLGATE_AUTHZ_REVOCATIONS_MAX_AGE", d.RevocationsMaxAge, "age of the last good feed fetch after which -revocations-stale applies")
	fs.String(&f.revStale, "revocations-stale", "TOLLGATE_AUTHZ_REVOCATIONS_STALE", d.RevocationsStale, "when the feed is older than -revocations-max-age: serve (decide with the last good list) or deny (refuse tokens issued before the last good fetch)")
	fs.Int(&f.logBuffer, "log-buffer", "TOLLGATE_AUTHZ_LOG_BUFFER", d.LogBuffer, "decision log lines buffered for asynchronous writing; a full buffer drops and counts (0 writes each line within its check)")
	fs.Int(&f.logAllowSample, "log-allow-sample", "TOLLGATE_AUTHZ_LOG_ALLOW_SAMPLE", d.LogAllowSample, "log one allow decision in N (1 every allow, 0 none); denials are always logged")
	fs.String(&f.dpopAlgs, "dpop-algorithms", "TOLLGATE_AUTHZ_DPOP_ALGORITHMS", strings.Join(d.DPoPAlgorithms, ","), "comma-separated DPoP proof signature algorithm allowlist")
	fs.Duration(&f.dpopMaxAge, "dpop-max-age", "TOLLGATE_AUTHZ_DPOP_MAX_AGE", d.DPoPMaxAge, "how old a DPoP proof's iat may be")
	fs.Duration(&f.dpopMaxFuture, "dpop-max-future", "TOLLGATE_AUTHZ_DPOP_MAX_FUTURE", d.DPoPMaxFuture, "how far ahead of this clock a DPoP proof's iat may be")
	fs.Int(&f.dpopReplayCap, "dpop-replay-capacity", "TOLLGATE_AUTHZ_DPOP_REPLAY_CAPACITY", d.DPoPReplayCapacity, "DPoP proofs remembered in memory against replay, per replica (when -dpop-replay-dsn is empty)")
	fs.String(&f.dpopReplayDSN, "dpop-replay-dsn", "TOLLGATE_AUTHZ_DPOP_REPLAY_DSN", "", "postgres:// URL of a DPoP replay store shared by every replica (default: per replica memory)")
	fs.Bool(&f.dpopNonces, "dpop-nonces", "TOLLGATE_AUTHZ_DPOP_NONCES", d.DPoPNonces, "require a server nonce in every DPoP proof (RFC 9449 §8)")
	fs.String(&f.dpopNonceSecret, "dpop-nonce-secret-file", "TOLLGATE_AUTHZ_DPOP_NONCE_SECRET_FILE", "", "file holding the DPoP nonce key (at least 32 bytes), the same for every replica (default: random, one replica)")
	fs.Duration(&f.dpopNoncePeriod, "dpop-nonce-period", "TOLLGATE_AUTHZ_DPOP_NONCE_PERIOD", d.DPoPNoncePeriod, "how often the DPoP nonce changes (a nonce is valid one to two periods)")
	fs.Repeated(&f.dpopPublicOrigins, "dpop-public-origin", "TOLLGATE_AUTHZ_DPOP_PUBLIC_ORIGINS", "HOST=ORIGIN: the origin clients use for a request host where TLS ends before the gateway (books.example.com=https://books.example.com), compared with a DPoP proof's htu; repeat per host")
	fs.Bool(&f.explain, "explain", "TOLLGATE_AUTHZ_EXPLAIN", d.Explain, "answer POST /explain on the HTTP port (tollgate authz explain -authz URL); never expose it beyond operators")
}

// config turns the flags into an authz.Config, refusing what authz.New
// would refuse.
func (f *authzFlags) config() (authz.Config, error) {
	cfg := authz.DefaultConfig()
	cfg.Issuer = f.issuer
	cfg.JWKSURL = f.jwksURL
	cfg.Audience = f.audience
	cfg.Algorithms = authzList(f.algs)
	cfg.TokenHeaders = authzList(f.tokenHeaders)
	cfg.Leeway = f.leeway
	cfg.MaxTokenLifetime = f.maxLifetime
	cfg.CacheSize = f.cacheSize
	cfg.MinRefresh = f.minRefresh
	cfg.MaxRefresh = f.maxRefresh
	cfg.RefetchInterval = f.refetch
	cfg.FetchTimeout = f.fetchTimeout
	cfg.ShutdownTimeout = f.shutdownTimeout
	cfg.RevocationsURL = f.revocationsURL
	cfg.RevocationsInterval = f.revInterval
	cfg.RevocationsMaxAge = f.revMaxAge
	cfg.RevocationsStale = f.revStale
	cfg.ConfigFile = f.configFile
	cfg.ReloadInterval = f.reloadInterval
	cfg.LogBuffer = f.logBuffer
	cfg.LogAllowSample = f.logAllowSample
	cfg.Explain = f.explain
	cfg.DPoPAlgorithms = authzList(f.dpopAlgs)
	cfg.DPoPMaxAge = f.dpopMaxAge
	cfg.DPoPMaxFuture = f.dpopMaxFuture
	cfg.DPoPReplayCapacity = f.dpopReplayCap
	cfg.DPoPReplayDSN = f.dpopReplayDSN
	cfg.DPoPNonces = f.dpopNonces
	cfg.DPoPNonceSecretFile = f.dpopNonceSecret
	cfg.DPoPNoncePeriod = f.dpopNoncePeriod
	if len(f.dpopPublicOrigins) > 0 {
		origins, err := authz.ParsePublicOrigins(f.dpopPublicOrigins)
		if err != nil {
			return cfg, err
		}
		cfg.DPoPPublicOrigins = origins
	}
	return cfg, cfg.Validate()
}

// authzList splits a comma-separated flag value, dropping empty items;
// nothing at all gives an empty list (which authz refuses).
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
	if len(args) > 0 && args[0] == "explain" {
		return runExplain(ctx, args[1:], os.Stdin, os.Stdout)
	}
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
	tr, err := tracingFromEnv(os.Environ())
	if err != nil {
		return err
	}
	defer flushTracing(tr)
	reg := server.NewRegistry()
	if cfg.TracerProvider, err = tr.Provider(ctx, serviceName(telemetry.ServiceAuthz), reg); err != nil {
		return err
	}
	srv, err := authz.New(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	gl, err := server.Listen("authz gRPC", f.grpcAddr)
	if err != nil {
		srv.Close()
		return err
	}
	hl, err := server.Listen("authz HTTP", f.httpAddr)
	if err != nil {
		gl.Close()
		srv.Close()
		return err
	}
	if onListen != nil {
		onListen(gl.Addr(), hl.Addr())
	}
	return srv.Serve(ctx, gl, hl)
}
