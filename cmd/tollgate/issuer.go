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
	shutdownTimeout   time.Duration
}

func (f *issuerFlags) register(fs *flagSet) {
	f.log.register(fs)
	fs.String(&f.addr, "addr", "TOLLGATE_ISSUER_ADDR", ":8081", "listen address")
	fs.String(&f.dataDir, "data-dir", "TOLLGATE_DATA_DIR", "./data", "data directory (SQLite database, generated key)")
	fs.String(&f.db, "db", "TOLLGATE_ISSUER_DB", "", "database: a SQLite file path or a postgres:// URL (default <data-dir>/issuer.db)")
	fs.String(&f.issuerURL, "issuer-url", "TOLLGATE_ISSUER_URL", issuer.DefaultIssuerURL, "the iss claim: the issuer's URL as clients reach it")
	fs.String(&f.audience, "audience", "TOLLGATE_AUDIENCE", issuer.DefaultAudience, "the aud claim")
	fs.String(&f.alg, "alg", "TOLLGATE_SIGNING_ALG", issuer.ES256, "signing algorithm: ES256, RS256 or EdDSA")
	fs.String(&f.keyDir, "key-dir", "TOLLGATE_KEY_DIR", "", "directory of PEM private keys, watched for rotation (default: generate one key into <data-dir>/keys once)")
	fs.Duration(&f.keyDelay, "key-activation-delay", "TOLLGATE_KEY_ACTIVATION_DELAY", issuer.DefaultKeyActivationDelay, "how long a new key is published before it signs (longer than JWKS caches live)")
	fs.Duration(&f.keyPoll, "key-poll-interval", "TOLLGATE_KEY_POLL_INTERVAL", issuer.DefaultKeyPollInterval, "how often the key directory is checked for changes")
	fs.Duration(&f.tokenTTL, "token-ttl", "TOLLGATE_TOKEN_TTL", issuer.DefaultTokenTTL, "token lifetime")
	fs.Duration(&f.jwksMaxAge, "jwks-max-age", "TOLLGATE_JWKS_MAX_AGE", issuer.DefaultJWKSMaxAge, "Cache-Control max-age of the JWKS and discovery documents")
	fs.Bool(&f.registration, "registration", "TOLLGATE_REGISTRATION", true, "allow POST /register")
	fs.String(&f.adminUsers, "admin-users", "TOLLGATE_ADMIN_USERS", "", "comma-separated user names that hold the admin role")
	fs.String(&f.adminName, "admin-name", "TOLLGATE_ADMIN_NAME", issuer.DefaultAdminName, "admin user created (or its password reset) at start when an admin password is given")
	fs.String(&f.adminPasswordFile, "admin-password-file", "TOLLGATE_ADMIN_PASSWORD_FILE", "", "file holding the admin user's password")
	fs.String(&f.adminPassword, "admin-password", "TOLLGATE_ADMIN_PASSWORD", "", "the admin user's password (prefer -admin-password-file: a flag shows in ps)")
	fs.String(&f.trustedProxies, "trusted-proxies", "TOLLGATE_ISSUER_TRUSTED_PROXIES", "127.0.0.0/8,::1/128", "comma-separated CIDRs of the peers whose X-Forwarded-For is read to find the client (for login throttling); empty trusts none")
	fs.Int(&f.trustedHops, "trusted-hops", "TOLLGATE_ISSUER_TRUSTED_HOPS", issuer.DefaultTrustedHops, "proxies that append to X-Forwarded-For in front of the issuer, the gateway included: the client is that many entries from the right (2 behind a load balancer that appends too)")
	fs.Int(&f.argon2Memory, "argon2-memory", "TOLLGATE_ARGON2_MEMORY", int(issuer.MinArgon2Params.Memory), "argon2id memory cost in KiB (at least 19456)")
	fs.Int(&f.argon2Iterations, "argon2-iterations", "TOLLGATE_ARGON2_ITERATIONS", int(issuer.MinArgon2Params.Iterations), "argon2id iterations (at least 2)")
	fs.Int(&f.argon2Parallelism, "argon2-parallelism", "TOLLGATE_ARGON2_PARALLELISM", int(issuer.MinArgon2Params.Parallelism), "argon2id parallelism (at least 1)")
	fs.Int(&f.maxHashes, "max-concurrent-hashes", "TOLLGATE_MAX_CONCURRENT_HASHES", 0, "password hashes computed at once (default 2 per CPU); each holds -argon2-memory")
	fs.Duration(&f.shutdownTimeout, "shutdown-timeout", "TOLLGATE_SHUTDOWN_TIMEOUT", server.DefaultShutdownTimeout, "how long to wait for in-flight requests at shutdown")
}

// config turns the flags into an issuer.Config.
func (f *issuerFlags) config() (issuer.Config, error) {
	cfg := issuer.Config{
		DataDir:             f.dataDir,
		DB:                  f.db,
		IssuerURL:           f.issuerURL,
		Audience:            f.audience,
		SigningAlg:          f.alg,
		KeyDir:              f.keyDir,
		KeyPollInterval:     f.keyPoll,
		TokenTTL:            f.tokenTTL,
		JWKSMaxAge:          f.jwksMaxAge,
		DisableRegistration: !f.registration,
		AdminName:           f.adminName,
		MaxConcurrentHashes: f.maxHashes,
	}
	if cfg.DB == "" {
		cfg.DB = filepath.Join(f.dataDir, "issuer.db")
	}
	// Zero means "the default" in issuer.Config; on the command line it
	// means what it says.
	cfg.KeyActivationDelay = f.keyDelay
	if f.keyDelay == 0 {
		cfg.KeyActivationDelay = -1
	}
	if f.keyDelay < 0 {
		return cfg, fmt.Errorf("-key-activation-delay must not be negative")
	}
	if f.jwksMaxAge < 0 {
		return cfg, fmt.Errorf("-jwks-max-age must not be negative")
	}
	if f.jwksMaxAge == 0 {
		cfg.JWKSMaxAge = -1 // max-age=0
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
	reg := server.NewRegistry()
	svc, err := issuer.New(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer svc.Close()
	l, err := server.Listen("issuer", f.addr)
	if err != nil {
		return err
	}
	if onListen != nil {
		onListen(l.Addr())
	}
	return server.Run(ctx, log, f.shutdownTimeout, svc.SetStopping,
		server.Bound{Name: "issuer", Unit: server.NewHTTP(svc.Handler(), log), Listener: l})
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
	path, kid, err := issuer.GenerateKeyFile(out, alg)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "%s\nkid %s\n", path, kid)
	return nil
}
