package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/issuer"
	"github.com/tollgate-dev/tollgate/stack"
)

// upFlags are the settings of `tollgate up`.
type upFlags struct {
	log              logFlags
	dataDir          string
	noGateway        bool
	useEnvoy         bool
	gatewayConfig    string
	gatewayAddr      string
	gatewayAdminAddr string
	issuerAddr       string
	booksAddr        string
	authzGRPCAddr    string
	authzHTTPAddr    string
	issuerURL        string
	adminName        string
	adminPassword    string
	shutdownTimeout  time.Duration
}

func (f *upFlags) register(fs *flagSet) {
	f.log.register(fs)
	fs.String(&f.dataDir, "data-dir", "TOLLGATE_DATA_DIR", "./data", "data directory: SQLite databases, generated signing key and admin password")
	fs.Bool(&f.noGateway, "no-gateway", "TOLLGATE_NO_GATEWAY", false, "start only issuer, authz and books, for an Envoy you run yourself (envoy -c envoy/envoy.yaml)")
	fs.Bool(&f.useEnvoy, "envoy", "TOLLGATE_USE_ENVOY", false, "run a real envoy from PATH as the gateway instead of the dev gateway")
	fs.String(&f.gatewayConfig, "gateway-config", "TOLLGATE_GATEWAY_CONFIG", "", "Envoy bootstrap file the gateway runs (default: the envoy.yaml built into this binary); its clusters issuer, books and authz are pointed at the services")
	fs.String(&f.gatewayAddr, "gateway-addr", "TOLLGATE_GATEWAY_ADDR", "", "gateway listen address (default: the listener in -gateway-config, 0.0.0.0:8080)")
	fs.String(&f.gatewayAdminAddr, "gateway-admin-addr", "TOLLGATE_GATEWAY_ADMIN_ADDR", "", "gateway admin address (default: the admin address in -gateway-config, 127.0.0.1:9901)")
	fs.String(&f.issuerAddr, "issuer-addr", "TOLLGATE_ISSUER_ADDR", stack.DefaultIssuerAddr, "issuer listen address (loopback: only the gateway should reach it)")
	fs.String(&f.booksAddr, "books-addr", "TOLLGATE_BOOKS_ADDR", stack.DefaultBooksAddr, "books listen address (loopback: books trusts the gateway's identity headers)")
	fs.String(&f.authzGRPCAddr, "authz-grpc-addr", "TOLLGATE_AUTHZ_GRPC_ADDR", stack.DefaultAuthzGRPCAddr, "authz gRPC (ext_authz) listen address")
	fs.String(&f.authzHTTPAddr, "authz-http-addr", "TOLLGATE_AUTHZ_HTTP_ADDR", stack.DefaultAuthzHTTPAddr, "authz HTTP (forward-auth, health, metrics) listen address")
	fs.String(&f.issuerURL, "issuer-url", "TOLLGATE_ISSUER_URL", "", "the iss claim (default http://localhost:<gateway port>)")
	fs.String(&f.adminName, "admin-name", "TOLLGATE_ADMIN_NAME", issuer.DefaultAdminName, "the issuer's admin user")
	fs.String(&f.adminPassword, "admin-password", "TOLLGATE_ADMIN_PASSWORD", "", "the admin's password (default: generated once into <data-dir>/admin-password; a flag shows in ps, prefer the variable)")
	fs.Duration(&f.shutdownTimeout, "shutdown-timeout", "TOLLGATE_SHUTDOWN_TIMEOUT", server.DefaultShutdownTimeout, "how long each part may take to drain at shutdown")
}

// config turns the flags into a stack.Config.
func (f *upFlags) config() (stack.Config, error) {
	cfg := stack.DefaultConfig()
	cfg.DataDir = f.dataDir
	cfg.GatewayConfig = f.gatewayConfig
	cfg.GatewayAddr = f.gatewayAddr
	cfg.GatewayAdminAddr = f.gatewayAdminAddr
	cfg.IssuerAddr = f.issuerAddr
	cfg.BooksAddr = f.booksAddr
	cfg.AuthzGRPCAddr = f.authzGRPCAddr
	cfg.AuthzHTTPAddr = f.authzHTTPAddr
	cfg.IssuerURL = f.issuerURL
	cfg.AdminName = f.adminName
	cfg.AdminPassword = f.adminPassword
	cfg.ShutdownTimeout = f.shutdownTimeout
	switch {
	case f.noGateway && f.useEnvoy:
		return cfg, errors.New("-no-gateway and -envoy exclude each other")
	case f.noGateway:
		cfg.Gateway = stack.NoGateway
	case f.useEnvoy:
		cfg.Gateway = stack.EnvoyProcess
		p, err := exec.LookPath("envoy")
		if err != nil {
			return cfg, fmt.Errorf("-envoy: %w (install Envoy, or leave -envoy out to use the dev gateway)", err)
		}
		cfg.EnvoyBinary = p
		cfg.EnvoyOutput = os.Stderr
	}
	if f.shutdownTimeout <= 0 {
		return cfg, fmt.Errorf("-shutdown-timeout must be positive, not %v", f.shutdownTimeout)
	}
	return cfg, nil
}

// runUp runs the whole stack in this process until SIGINT or SIGTERM.
// The banner goes to stdout, logs to stderr.
func runUp(ctx context.Context, args []string) error {
	fs := newFlagSet("up")
	var f upFlags
	f.register(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	log, err := f.log.logger("up")
	if err != nil {
		return err
	}
	cfg, err := f.config()
	if err != nil {
		return err
	}
	if cfg.Gateway != stack.NoGateway {
		if _, err := os.Stat(cfg.GatewayConfig); cfg.GatewayConfig != "" && errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("gateway config %s not found (leave -gateway-config out to use the built-in envoy.yaml)", cfg.GatewayConfig)
		}
	}
	cfg.Logger = log
	if cfg.Tracing, err = tracingFromEnv(os.Environ()); err != nil {
		return err
	}
	defer flushTracing(cfg.Tracing)
	st, err := stack.Start(ctx, cfg)
	if err != nil {
		return err
	}
	printBanner(os.Stdout, st, cfg)
	err = st.Wait(ctx)
	// From here a second Ctrl-C ends the process at once.
	signal.Reset(os.Interrupt, syscall.SIGTERM)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*cfg.ShutdownTimeout)
	defer cancel()
	// main prints the failure, once.
	if serr := st.Shutdown(sctx); err == nil {
		err = serr
	} else if serr != nil {
		err = errors.Join(err, fmt.Errorf("shutdown: %w", serr))
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stdout, "Tollgate stopped.")
	return nil
}

// The user the banner's "Try:" registers: not the tutorial's alain, so
// that the README's tutorial still starts on a fresh name.
const tryName, tryPassword = "reader", "reader-likes-books"

// printBanner says where everything listens and what to try first.
func printBanner(w io.Writer, st *stack.Stack, cfg stack.Config) {
	a := st.Addrs()
	name, _ := st.Admin()
	fmt.Fprintf(w, "Tollgate is up (data in %s).\n\n", cfg.DataDir)
	bootstrap := cfg.GatewayConfig
	if bootstrap == "" {
		bootstrap = envoy.ShippedName
	}
	base := ""
	switch cfg.Gateway {
	case stack.DevGateway:
		base = "http://localhost:" + port(a.Gateway)
		fmt.Fprintf(w, "  gateway        %s  (dev gateway running %s; admin on %s)\n", base, bootstrap, a.GatewayAdmin)
	case stack.EnvoyProcess:
		base = "http://localhost:" + port(a.Gateway)
		fmt.Fprintf(w, "  gateway        %s  (envoy running %s; admin on %s)\n", base, bootstrap, a.GatewayAdmin)
	default:
		fmt.Fprintf(w, "  gateway        none: run Envoy yourself, for example envoy -c envoy/envoy.yaml\n")
	}
	fmt.Fprintf(w, "  issuer         http://%s  (tokens say iss %s)\n", a.Issuer, st.IssuerURL())
	fmt.Fprintf(w, "  books          http://%s\n", a.Books)
	fmt.Fprintf(w, "  authz          %s gRPC ext_authz, http://%s forward-auth, health and metrics\n\n", a.AuthzGRPC, a.AuthzHTTP)
	if file := st.AdminPasswordFile(); file != "" {
		fmt.Fprintf(w, "Admin user %q; its password is in %s\n\n", name, file)
	} else {
		fmt.Fprintf(w, "Admin user %q, with the password you gave.\n\n", name)
	}
	if base != "" {
		fmt.Fprintf(w, "Try:\n")
		fmt.Fprintf(w, "  curl -s -X POST %s/register -H 'Content-Type: application/json' -d '{\"name\": \"%s\", \"password\": \"%s\"}'\n", base, tryName, tryPassword)
		fmt.Fprintf(w, "  curl -s -X POST http://%s:%s@localhost:%s/login\n", tryName, tryPassword, port(a.Gateway))
		fmt.Fprintf(w, "  curl -s %s/books -H \"x-access-tokens: <token>\"\n\n", base)
	}
	fmt.Fprintf(w, "Ready. Ctrl-C stops it.\n")
}

func port(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return p
}
