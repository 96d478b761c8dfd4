package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/internal/telemetry"
	"github.com/tollgate-dev/tollgate/internal/dpop"
	"github.com/tollgate-dev/tollgate/issuer"
)

// issuerFlags are the settings of `tollgate issuer`.
type issuerFlags struct {
	log               logFlags
	addr              string
	dataDir           string
	db                string
	issuerURL         string
	audience          string
	alg               string
	keyDir            string
	keyDelay          time.Duration
	keyPoll           time.Duration
	tokenTTL          time.Duration
	jwksMaxAge        time.Duration
	registration      bool
	adminUsers        string
	adminName         string
	adminPasswordFile string
	adminPassword     string
	trustedProxies    string
	trustedHops       int
	argon2Memory      int
	argon2Iterations  int
	argon2Parallelism int
	maxHashes         int
	refresh           bool
	sessionIdleTTL    time.Duration
	sessionMaxTTL     time.Duration
	clients           string
	shutdownTimeout   time.Duration

	dpopAlgorithms      string
	dpopMaxAge          time.Duration
	dpopMaxFuture       time.Duration
	dpopNonces          bool
	dpopNonceSecretFile string
	dpopRequired        bool
	dpopClients         string
}

func (f *issuerFlags) register(fs *flagSet) {
	d := issuer.DefaultConfig()
	f.log.register(fs)
	fs.String(&f.addr, "addr", "TOLLGATE_ISSUER_ADDR", "127.0.0.1:8081", "listen address (\":8081\" for every interface: only the gateway should reach the issuer)")
	fs.String(&f.dataDir, "data-dir", "TOLLGATE_DATA_DIR", d.DataDir, "data directory (SQLite database, generated key)")
	fs.String(&f.db, "db", "TOLLGATE_ISSUER_DB", "", "database: a SQLite file path or a postgres:// URL (default <data-dir>/issuer.db)")
	fs.String(&f.issuerURL, "issuer-url", "TOLLGATE_ISSUER_URL", d.IssuerURL, "the iss claim: the issuer's URL as clients reach it")
	fs.String(&f.audience, "audience", "TOLLGATE_AUDIENCE", d.Audience, "the aud claim")
	fs.String(&f.alg, "alg", "TOLLGATE_SIGNING_ALG", d.SigningAlg, "signing algorithm: ES256, RS256 or EdDSA")
	fs.String(&f.keyDir, "key-dir", "TOLLGATE_KEY_DIR", d.KeyDir, "directory of PEM private keys, watched for rotation (default: generate one key into <data-dir>/keys once)")
	fs.Duration(&f.keyDelay, "key-activation-delay", "TOLLGATE_KEY_ACTIVATION_DELAY", d.KeyActivationDelay, "how long a new key is published before it signs (longer than JWKS caches live; 0 signs at once)")
	fs.Duration(&f.keyPoll, "key-poll-interval", "TOLLGATE_KEY_POLL_INTERVAL", d.KeyPollInterval, "how often the key directory is checked for changes")
	fs.Duration(&f.tokenTTL, "token-ttl", "TOLLGATE_TOKEN_TTL", d.TokenTTL, "token lifetime")
	fs.Duration(&f.jwksMaxAge, "jwks-max-age", "TOLLGATE_JWKS_MAX_AGE", d.JWKSMaxAge, "Cache-Control max-age of the JWKS and discovery documents (0: no caching)")
	fs.Bool(&f.registration, "registration", "TOLLGATE_REGISTRATION", !d.DisableRegistration, "allow POST /register")
	fs.String(&f.adminUsers, "admin-users", "TOLLGATE_ADMIN_USERS", "", "comma-separated user names that hold the admin role")
	fs.String(&f.adminName, "admin-name", "TOLLGATE_ADMIN_NAME", d.AdminName, "admin user created (or its password reset) at start when an admin password is given")
	fs.String(&f.adminPasswordFile, "admin-password-file", "TOLLGATE_ADMIN_PASSWORD_FILE", "", "file holding the admin user's password")
	fs.String(&f.adminPassword, "admin-password", "TOLLGATE_ADMIN_PASSWORD", "", "the admin user's password (prefer -admin-password-file: a flag shows in ps)")
	fs.String(&f.trustedProxies, "trusted-proxies", "TOLLGATE_ISSUER_TRUSTED_PROXIES", prefixList(d.TrustedProxies), "comma-separated CIDRs of the peers whose X-Forwarded-For is read to find the client (for login throttling); empty trusts none")
	fs.Int(&f.trustedHops, "trusted-hops", "TOLLGATE_ISSUER_TRUSTED_HOPS", d.TrustedHops, "proxies that append to X-Forwarded-For in front of the issuer, the gateway included: the client is that many entries from the right (2 behind a load balancer that appends too)")
	fs.Int(&f.argon2Memory, "argon2-memory", "TOLLGATE_ARGON2_MEMORY", int(d.Argon2.Memory), "argon2id memory cost in KiB (at least 19456)")
	fs.Int(&f.argon2Iterations, "argon2-iterations", "TOLLGATE_ARGON2_ITERATIONS", int(d.Argon2.Iterations), "argon2id iterations (at least 2)")
	fs.Int(&f.argon2Parallelism, "argon2-parallelism", "TOLLGATE_ARGON2_PARALLELISM", int(d.Argon2.Parallelism), "argon2id parallelism (at least 1)")
	fs.Int(&f.maxHashes, "max-concurrent-hashes", "TOLLGATE_MAX_CONCURRENT_HASHES", d.MaxConcurrentHashes, "password hashes computed at once (2 per CPU here), each holding -argon2-memory; 4 more requests per slot may wait")
	fs.Bool(&f.refresh, "refresh", "TOLLGATE_REFRESH", !d.DisableRefresh, "issue refresh tokens at login (sessions that can be refreshed, logged out and revoked)")
	fs.Duration(&f.sessionIdleTTL, "session-idle-ttl", "TOLLGATE_SESSION_IDLE_TTL", d.SessionIdleTTL, "a session not refreshed for this long ends")
	fs.Duration(&f.sessionMaxTTL, "session-max-ttl", "TOLLGATE_SESSION_MAX_TTL", d.SessionMaxTTL, "a session ends this long after its login, however often refreshed")
	fs.String(&f.clients, "clients", "TOLLGATE_CLIENTS", strings.Join(d.Clients, ","), "comma-separated public OAuth client ids allowed at /token and /revoke; /login issues to the first")
	fs.Duration(&f.shutdownTimeout, "shutdown-timeout", "TOLLGATE_SHUTDOWN_TIMEOUT", d.ShutdownTimeout, "how long to wait for in-flight requests at shutdown")
	fs.String(&f.dpopAlgorithms, "dpop-algorithms", "TOLLGATE_DPOP_ALGORITHMS", strings.Join(d.DPoP.Algorithms, ","), "comma-separated DPoP proof algorithms accepted at /token and /login (asymmetric only)")
	fs.Duration(&f.dpopMaxAge, "dpop-max-age", "TOLLGATE_DPOP_MAX_AGE", d.DPoP.MaxAge, "how old a DPoP proof's iat may be")
	fs.Duration(&f.dpopMaxFuture, "dpop-max-future", "TOLLGATE_DPOP_MAX_FUTURE", d.DPoP.MaxFuture, "how far ahead of this clock a DPoP proof's iat may be")
	fs.Bool(&f.dpopNonces, "dpop-nonces", "TOLLGATE_DPOP_NONCES", d.DPoP.Nonces, "require a server nonce (DPoP-Nonce) in every DPoP proof")
	fs.String(&f.dpopNonceSecretFile, "dpop-nonce-secret-file", "TOLLGATE_DPOP_NONCE_SECRET_FILE", "", "file holding the DPoP nonce secret (at least 32 bytes), shared by replicas so each accepts the others' nonces (default: random, one replica)")
	fs.Bool(&f.dpopRequired, "dpop-required", "TOLLGATE_DPOP_REQUIRED", d.DPoP.Required, "refuse token requests without a DPoP proof, from every client")
	fs.String(&f.dpopClients, "dpop-clients", "TOLLGATE_DPOP_CLIENTS", strings.Join(d.DPoP.RequiredClients, ","), "comma-separated client ids whose token requests must carry a DPoP proof")
}

// commaList splits a comma-separated flag value, dropping empty items.
func commaList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// prefixList writes prefixes as the -trusted-proxies flag takes them.
func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// config turns the flags into an issuer.Config.
func (f *issuerFlags) config() (issuer.Config, error) {
	cfg := issuer.DefaultConfig()
	cfg.DataDir = f.dataDir
	cfg.DB = f.db
	if cfg.DB == "" {
		cfg.DB = filepath.Join(f.dataDir, "issuer.db")
	}
	cfg.IssuerURL = f.issuerURL
	cfg.Audience = f.audience
	cfg.SigningAlg = f.alg
	cfg.KeyDir = f.keyDir
	cfg.KeyActivationDelay = f.keyDelay
	cfg.KeyPollInterval = f.keyPoll
	cfg.TokenTTL = f.tokenTTL
	cfg.JWKSMaxAge = f.jwksMaxAge
	cfg.DisableRegistration = !f.registration
	cfg.AdminName = f.adminName
	cfg.MaxConcurrentHashes = f.maxHashes
	cfg.MaxQueuedHashes = 4 * f.maxHashes
	cfg.ShutdownTimeout = f.shutdownTimeout
	cfg.DisableRefresh = !f.refresh
	cfg.SessionIdleTTL = f.sessionIdleTTL
	cfg.SessionMaxTTL = f.sessionMaxTTL
	cfg.Clients = nil
	for _, id := range strings.Split(f.clients, ",") {
		if id = strings.TrimSpace(id); id != "" {
			cfg.Clients = append(cfg.Clients, id)
		}
	}
	if len(cfg.Clients) > 0 {
		cfg.LoginClient = cfg.Clients[0]
	}
	cfg.DPoP = issuer.DPoP{
		Algorithms:      commaList(f.dpopAlgorithms),
		MaxAge:          f.dpopMaxAge,
		MaxFuture:       f.dpopMaxFuture,
		Nonces:          f.dpopNonces,
		Required:        f.dpopRequired,
		RequiredClients: commaList(f.dpopClients),
	}
	if f.dpopNonceSecretFile != "" {
		secret, err := dpop.ReadNonceSecret(f.dpopNonceSecretFile)
		if err != nil {
			return cfg, err
		}
		cfg.DPoP.NonceSecret = secret
	}
	if f.keyDelay < 0 {
		return cfg, fmt.Errorf("-key-activation-delay must not be negative")
	}
	if f.jwksMaxAge < 0 {
		return cfg, fmt.Errorf("-jwks-max-age must not be negative")
	}
	if f.maxHashes <= 0 {
		return cfg, fmt.Errorf("-max-concurrent-hashes must be positive, not %d", f.maxHashes)
	}
	for _, name := range strings.Split(f.adminUsers, ",") {
		if name = strings.TrimSpace(name); name != "" {
			cfg.AdminUsers = append(cfg.AdminUsers, name)
		}
	}
	cfg.TrustedProxies = []netip.Prefix{}
	for _, s := range strings.Split(f.trustedProxies, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return cfg, fmt.Errorf("-trusted-proxies: %q is not a CIDR or an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, p.Masked())
	}
	if f.trustedHops < 1 {
		return cfg, fmt.Errorf("-trusted-hops %d must be at least 1 (-trusted-proxies \"\" ignores X-Forwarded-For)", f.trustedHops)
	}
	cfg.TrustedHops = f.trustedHops
	for name, v := range map[string]int{"-argon2-memory": f.argon2Memory, "-argon2-iterations": f.argon2Iterations, "-argon2-parallelism": f.argon2Parallelism} {
		if v <= 0 || (name == "-argon2-parallelism" && v > 255) || v > 1<<30 {
			return cfg, fmt.Errorf("%s %d is out of range", name, v)
		}
	}
	cfg.Argon2 = issuer.Argon2Params{Memory: uint32(f.argon2Memory), Iterations: uint32(f.argon2Iterations), Parallelism: uint8(f.argon2Parallelism)}

	switch {
	case f.adminPasswordFile != "" && f.adminPassword != "":
		return cfg, errors.New("set either -admin-password-file or -admin-password, not both")
	case f.adminPasswordFile != "":
		data, err := os.ReadFile(f.adminPasswordFile)
		if err != nil {
			return cfg, fmt.Errorf("read admin password: %w", err)
		}
		// Files written by echo or a Secret editor end in a newline that
		// is not part of the password.
		cfg.AdminPassword = strings.TrimRight(string(data), "\r\n")
		if cfg.AdminPassword == "" {
			return cfg, fmt.Errorf("admin password file %s is empty", f.adminPasswordFile)
		}
	default:
		cfg.AdminPassword = f.adminPassword
	}
	return cfg, nil
}

func runIssuer(ctx context.Context, args []string) error {
	return serveIssuer(ctx, args, nil)
}

// serveIssuer runs `tollgate issuer args` until ctx ends; onListen, when
// set, learns the bound address (tests listen on port 0).
func serveIssuer(ctx context.Context, args []string, onListen func(net.Addr)) error {
	if len(args) > 0 && args[0] == "keygen" {
		return runKeygen(args[1:])
	}
	fs := newFlagSet("issuer")
	var f issuerFlags
	f.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tollgate issuer [flags]\n       tollgate issuer keygen [-alg ES256] [-out DIR]\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	log, err := f.log.logger("issuer")
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
	if cfg.TracerProvider, err = tr.Provider(ctx, serviceName(telemetry.ServiceIssuer), reg); err != nil {
		return err
	}
	svc, err := issuer.New(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	l, err := server.Listen("issuer", f.addr)
	if err != nil {
		svc.Close()
		return err
	}
	if onListen != nil {
		onListen(l.Addr())
	}
	return svc.Serve(ctx, l)
}

// runKeygen writes a new signing key file, for rotation: put it in the
// key directory (or the Secret behind it) beside the current one.
func runKeygen(args []string) error {
	fs := newFlagSet("issuer keygen")
	var alg, out string
	fs.String(&alg, "alg", "TOLLGATE_SIGNING_ALG", issuer.ES256, "key type: ES256 (P-256), RS256 (RSA 3072) or EdDSA (Ed25519)")
	fs.String(&out, "out", "TOLLGATE_KEY_DIR", ".", "directory to write <kid>.pem into")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tollgate issuer keygen [-alg ES256] [-out DIR]\n\nWrites a new PKCS #8 private key as DIR/<kid>.pem and prints its path and kid.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	// A typo in -out must not quietly create a directory the issuer never
	// reads.
	if fi, err := os.Stat(out); err != nil || !fi.IsDir() {
		return usageError{fmt.Errorf("-out %s is not an existing directory", out)}
	}
	path, kid, err := issuer.GenerateKeyFile(out, alg)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "%s\nkid %s\n", path, kid)
	return nil
}
