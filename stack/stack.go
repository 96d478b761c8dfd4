// Package stack runs the whole Tollgate stack in one process: the issuer,
// authz, books and a gateway in front of them (the dev gateway, or a real
// envoy run as a child process). `tollgate up` and the end-to-end tests
// start it; the tests also stop and start single parts of it to watch the
// rest cope.
//
// It is glue only: each service is built from its own package exactly as
// its command would build it. It must never expose a service that trusts
// identity headers (books, the issuer's /users) on more than loopback by
// default, and never report the stack ready before authz holds the
// issuer's keys and the gateway answers.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/books"
	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/envoy/gateway"
	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/internal/telemetry"
	"github.com/tollgate-dev/tollgate/issuer"
)

// Default listen addresses, the contract's ports. The services listen on
// loopback only: books and the issuer's /users believe the identity
// headers they are sent, so only the gateway may reach them.
const (
	DefaultIssuerAddr    = "127.0.0.1:8081"
	DefaultBooksAddr     = "127.0.0.1:8082"
	DefaultAuthzGRPCAddr = "127.0.0.1:9001"
	DefaultAuthzHTTPAddr = "127.0.0.1:9002"
	DefaultDataDir       = "data"
	DefaultReadyTimeout  = 30 * time.Second
	// AdminPasswordFile is the file under the data directory that holds
	// the generated admin password.
	AdminPasswordFile = "admin-password"
)

// The cluster names of envoy/envoy.yaml that the stack points at the
// services it starts.
const (
	clusterIssuer = "issuer"
	clusterBooks  = "books"
	clusterAuthz  = "authz"
)

// GatewayMode says what stands in front of the services.
type GatewayMode int

const (
	// DevGateway is the in-process dev gateway (package envoy) loading
	// Config.GatewayConfig.
	DevGateway GatewayMode = iota
	// NoGateway starts only the services, for a user who runs Envoy.
	NoGateway
	// EnvoyProcess runs Config.EnvoyBinary as a child process on
	// Config.GatewayConfig, with its listener, admin and cluster addresses
	// rewritten to the stack's.
	EnvoyProcess
)

// Component names a part of the stack that Stop and Start act on.
type Component string

// The components that can be stopped and started again.
const (
	Issuer Component = "issuer"
	Authz  Component = "authz"
	Books  Component = "books"
)

// Config configures a Stack. Start from DefaultConfig; every field is
// then taken as it is.
type Config struct {
	// DataDir holds the SQLite databases, the generated signing key and
	// the generated admin password.
	DataDir string
	// Gateway says what runs in front of the services.
	Gateway GatewayMode
	// GatewayConfig is the Envoy bootstrap file the gateway runs; empty
	// means the envoy.yaml built into the binary. Its clusters "issuer",
	// "books" and "authz" are pointed at the services started here.
	GatewayConfig string
	// EnvoyBinary is the envoy executable for EnvoyProcess.
	EnvoyBinary string
	// EnvoyOutput receives the envoy process's output (nil discards it).
	EnvoyOutput io.Writer
	// GatewayAddr and GatewayAdminAddr replace the bootstrap's listener
	// and admin addresses when set ("127.0.0.1:0" in tests). With
	// EnvoyProcess, a port 0 is not allowed: the stack must know where
	// envoy listens.
	GatewayAddr, GatewayAdminAddr string
	// Service listen addresses.
	IssuerAddr, BooksAddr, AuthzGRPCAddr, AuthzHTTPAddr string
	// IssuerURL is the iss claim, which authz requires too (default
	// http://localhost:<gateway port>, or the issuer package's default
	// with NoGateway).
	IssuerURL string
	// AdminName is the issuer's admin user.
	AdminName string
	// AdminPassword is the admin's password. Empty means the one stored
	// in <DataDir>/admin-password, generated there on first start.
	AdminPassword string
	// Logger receives every component's logs, each tagged with
	// "component" (nil discards them).
	Logger *slog.Logger
	// ShutdownTimeout bounds each component's graceful stop.
	ShutdownTimeout time.Duration
	// ReadyTimeout bounds the wait for the stack, or a restarted
	// component, to be ready.
	ReadyTimeout time.Duration
	// IssuerConfig and AuthzConfig, when set, adjust each component's
	// configuration before every start (tests set a clock or a TTL).
	IssuerConfig func(*issuer.Config)
	AuthzConfig  func(*authz.Config)
	// Tracing, when not nil, gives every part a tracer provider of its
	// own service.name (tollgate-issuer, tollgate-authz, tollgate-books,
	// tollgate-gateway); nil is tracing off. The caller shuts it down.
	Tracing *telemetry.Tracing
}

// Addrs are the addresses the stack's parts listen on, as bound (a
// configured port 0 shows the port the system chose).
type Addrs struct {
	Gateway, GatewayAdmin string // empty with NoGateway
	Issuer, Books         string
	AuthzGRPC, AuthzHTTP  string
}

// Stack is a running Tollgate stack. Its methods are safe for concurrent
// use.
type Stack struct {
	cfg       Config
	log       *slog.Logger
	addrs     Addrs
	issuerURL string
	adminPass string
	adminFile string // "" when the password was given

	// services, in start order; never changed after Start.
	services []*service
	gateway  gatewayRunner

	failc    chan error
	closing  atomic.Bool
	stopOnce sync.Once
	stopErr  error
}

// gatewayRunner is the dev gateway or an envoy process.
type gatewayRunner interface {
	// stop drains the gateway within ctx.
	stop(ctx context.Context) error
	// done is closed when the gateway has stopped, for whatever reason.
	done() <-chan struct{}
}

// Start starts the stack and returns once it is ready: every service
// answers its readiness check, authz has loaded the issuer's keys, and a
// request through the gateway reaches the issuer. On error nothing is
// left running.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	st := &Stack{cfg: cfg, log: cfg.Logger, failc: make(chan error, 1)}
	st.adminPass, st.adminFile, err = adminPassword(cfg.DataDir, cfg.AdminPassword)
	if err != nil {
		return nil, err
	}
	if st.adminFile != "" {
		st.log.Info("the admin password is kept in a file, generated on first start", "user", cfg.AdminName, "file", st.adminFile)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()

	// Bind every service first, so the gateway can be pointed at them.
	ls := map[string]net.Listener{}
	defer func() {
		for _, l := range ls {
			l.Close() // those no service took over
		}
		if err != nil {
			sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			st.Shutdown(sctx)
			scancel()
		}
	}()
	for name, addr := range map[string]string{
		"issuer": cfg.IssuerAddr, "books": cfg.BooksAddr,
		"authz gRPC": cfg.AuthzGRPCAddr, "authz HTTP": cfg.AuthzHTTPAddr,
	} {
		l, err := server.Listen(name, addr)
		if err != nil {
			return nil, err
		}
		ls[name] = l
	}
	st.addrs.Issuer = ls["issuer"].Addr().String()
	st.addrs.Books = ls["books"].Addr().String()
	st.addrs.AuthzGRPC = ls["authz gRPC"].Addr().String()
	st.addrs.AuthzHTTP = ls["authz HTTP"].Addr().String()

	// The dev gateway binds before the issuer starts, so that a port 0
	// is known for the iss claim; it answers nothing useful until the
	// services behind it serve, and Start does not return before that.
	var envoyBootstrap string
	switch cfg.Gateway {
	case DevGateway:
		gw, err := st.startDevGateway()
		if err != nil {
			return nil, err
		}
		st.gateway = gw
	case EnvoyProcess:
		if envoyBootstrap, err = st.writeEnvoyBootstrap(); err != nil {
			return nil, err
		}
	}
	st.issuerURL = cfg.IssuerURL
	if st.issuerURL == "" {
		st.issuerURL = issuer.DefaultIssuerURL
		if st.addrs.Gateway != "" {
			_, port, _ := net.SplitHostPort(st.addrs.Gateway)
			st.issuerURL = "http://localhost:" + port
		}
	}

	st.services = []*service{
		{name: Issuer, start: st.startIssuer},
		{name: Books, start: st.startBooks},
		{name: Authz, start: st.startAuthz},
	}
	for _, s := range st.services {
		r, err := s.start(ctx, s, ls)
		if err != nil {
			return nil, err
		}
		s.cur = r
		for _, name := range r.listeners {
			delete(ls, name)
		}
	}
	for _, s := range st.services {
		if err := waitReady(ctx, string(s.name), s.cur.ready); err != nil {
			return nil, err
		}
	}
	if cfg.Gateway == EnvoyProcess {
		p, err := startEnvoy(ctx, st, envoyBootstrap)
		if err != nil {
			return nil, err
		}
		st.gateway = p
	}
	if st.gateway != nil {
		go func() {
			<-st.gateway.done()
			st.fail(errors.New("gateway stopped"))
		}()
		if err := st.probeGateway(ctx); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// DefaultConfig returns the configuration `tollgate up` starts from:
// the dev gateway on the built-in envoy.yaml in front of services on the
// contract's ports on loopback, data under ./data.
func DefaultConfig() Config {
	return Config{
		DataDir:         DefaultDataDir,
		IssuerAddr:      DefaultIssuerAddr,
		BooksAddr:       DefaultBooksAddr,
		AuthzGRPCAddr:   DefaultAuthzGRPCAddr,
		AuthzHTTPAddr:   DefaultAuthzHTTPAddr,
		AdminName:       issuer.DefaultAdminName,
		ShutdownTimeout: server.DefaultShutdownTimeout,
		ReadyTimeout:    DefaultReadyTimeout,
	}
}

// validate refuses a configuration Start cannot run.
func (cfg Config) validate() error {
	for name, v := range map[string]string{
		"data directory": cfg.DataDir, "issuer address": cfg.IssuerAddr, "books address": cfg.BooksAddr,
		"authz gRPC address": cfg.AuthzGRPCAddr, "authz HTTP address": cfg.AuthzHTTPAddr, "admin name": cfg.AdminName,
	} {
		if v == "" {
			return fmt.Errorf("stack: %s is required", name)
		}
	}
	if cfg.ShutdownTimeout <= 0 || cfg.ReadyTimeout <= 0 {
		return fmt.Errorf("stack: shutdown timeout %v and ready timeout %v must be positive", cfg.ShutdownTimeout, cfg.ReadyTimeout)
	}
	return nil
}

// Addrs returns where the stack's parts listen.
func (st *Stack) Addrs() Addrs { return st.addrs }

// GatewayURL is the base URL of the gateway, for example
// http://127.0.0.1:8080; empty with NoGateway.
func (st *Stack) GatewayURL() string {
	if st.addrs.Gateway == "" {
		return ""
	}
	return "http://" + dialAddr(st.addrs.Gateway)
}

// IssuerURL is the iss claim of the stack's tokens.
func (st *Stack) IssuerURL() string { return st.issuerURL }

// Admin returns the issuer's admin user name and password.
func (st *Stack) Admin() (name, password string) { return st.cfg.AdminName, st.adminPass }

// AdminPasswordFile is the file the admin password was read from or
// generated into; empty when Config.AdminPassword gave it.
func (st *Stack) AdminPasswordFile() string { return st.adminFile }

// Wait blocks until ctx is done, returning nil, or until a part of the
// stack stops on its own, returning why. It does not stop anything.
func (st *Stack) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-st.failc:
		if ctx.Err() != nil {
			// A child process that saw the same Ctrl-C is no failure.
			return nil
		}
		return err
	}
}

// fail reports a part that stopped on its own; only the first is kept,
// and none once Shutdown began.
func (st *Stack) fail(err error) {
	if st.closing.Load() {
		return
	}
	select {
	case st.failc <- err:
	default:
	}
}

// Shutdown stops the stack in the order a graceful stop needs: every
// readiness check fails first, then the gateway drains, then the
// services drain together. Later calls return the first call's result.
func (st *Stack) Shutdown(ctx context.Context) error {
	st.stopOnce.Do(func() {
		st.closing.Store(true)
		for _, s := range st.services {
			s.setStopping()
		}
		var errs []error
		if st.gateway != nil {
			if err := st.gateway.stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("gateway: %w", err))
			}
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, s := range st.services {
			wg.Go(func() {
				if err := s.stop(ctx); err != nil && !errors.Is(err, errNotRunning) {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		st.stopErr = errors.Join(errs...)
	})
	return st.stopErr
}

// Stop stops one component gracefully (health first, then drain), as a
// crash or a rolling restart would take it away; the rest keeps running.
func (st *Stack) Stop(ctx context.Context, c Component) error {
	s, err := st.service(c)
	if err != nil {
		return err
	}
	s.setStopping()
	return s.stop(ctx)
}

// Start starts a stopped component again on the addresses it had, and
// waits until it is ready (for authz: until it has the keys again).
func (st *Stack) Start(ctx context.Context, c Component) error {
	s, err := st.service(c)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		return fmt.Errorf("%s is already running", c)
	}
	ctx, cancel := context.WithTimeout(ctx, st.cfg.ReadyTimeout)
	defer cancel()
	ls := map[string]net.Listener{}
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for name, addr := range s.addrs {
		l, err := server.Listen(name, addr)
		if err != nil {
			return err
		}
		ls[name] = l
	}
	r, err := s.start(ctx, s, ls)
	if err != nil {
		return err
	}
	clear(ls)
	s.cur = r
	return waitReady(ctx, string(c), r.ready)
}

func (st *Stack) service(c Component) (*service, error) {
	for _, s := range st.services {
		if s.name == c {
			return s, nil
		}
	}
	return nil, fmt.Errorf("unknown component %q", c)
}

var errNotRunning = errors.New("not running")

// service is one of the three services, with what it takes to start it
// again.
type service struct {
	name Component
	// start builds the service and serves it on the listeners in ls
	// that it takes (it names them in run.listeners).
	start func(ctx context.Context, s *service, ls map[string]net.Listener) (*run, error)

	mu    sync.Mutex
	addrs map[string]string // listener name -> bound address, for restarts
	cur   *run              // nil while stopped
}

// run is one start of a service.
type run struct {
	listeners []string
	ready     func(context.Context) error
	stopping  func()
	cancel    context.CancelFunc
	done      chan struct{}
	err       error // valid once done is closed
}

func (s *service) setStopping() {
	s.mu.Lock()
	r := s.cur
	s.mu.Unlock()
	if r != nil {
		r.stopping()
	}
}

// stop ends the current run and waits for it within ctx.
func (s *service) stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.cur
	if r == nil {
		return errNotRunning
	}
	r.cancel()
	select {
	case <-r.done:
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", s.name, ctx.Err())
	}
	s.cur = nil
	return r.err
}

// serve runs serveFn (a service's Serve on the listeners named in
// listeners) until the run is cancelled; a run that ends on its own
// fails the stack.
func (st *Stack) serve(s *service, ready func(context.Context) error, stopping func(), listeners map[string]net.Listener, serveFn func(ctx context.Context) error) *run {
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{ready: ready, stopping: stopping, cancel: cancel, done: make(chan struct{})}
	if s.addrs == nil {
		s.addrs = map[string]string{}
	}
	for name, l := range listeners {
		r.listeners = append(r.listeners, name)
		s.addrs[name] = l.Addr().String()
	}
	go func() {
		err := serveFn(ctx)
		r.err = err
		stopped := ctx.Err() == nil
		close(r.done)
		if stopped {
			if err == nil {
				err = errors.New("stopped serving")
			}
			st.fail(fmt.Errorf("%s: %w", s.name, err))
		}
	}()
	return r
}

func (st *Stack) componentLog(name string) *slog.Logger {
	return st.log.With("component", name)
}

func (st *Stack) startIssuer(ctx context.Context, s *service, ls map[string]net.Listener) (*run, error) {
	cfg := issuer.DefaultConfig()
	cfg.DataDir = st.cfg.DataDir
	cfg.DB = filepath.Join(st.cfg.DataDir, "issuer.db")
	cfg.IssuerURL = st.issuerURL
	cfg.AdminName = st.cfg.AdminName
	cfg.AdminPassword = st.adminPass
	cfg.ShutdownTimeout = st.cfg.ShutdownTimeout
	if st.cfg.IssuerConfig != nil {
		st.cfg.IssuerConfig(&cfg)
	}
	reg := server.NewRegistry()
	tp, err := st.cfg.Tracing.Provider(ctx, telemetry.ServiceIssuer, reg)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	cfg.TracerProvider = tp
	svc, err := issuer.New(ctx, cfg, st.componentLog("issuer"), reg)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	l := ls["issuer"]
	return st.serve(s, svc.Ready, svc.SetStopping, map[string]net.Listener{"issuer": l},
		func(ctx context.Context) error { return svc.Serve(ctx, l) }), nil
}

func (st *Stack) startBooks(ctx context.Context, s *service, ls map[string]net.Listener) (*run, error) {
	cfg := books.DefaultConfig()
	cfg.DB = filepath.Join(st.cfg.DataDir, "books.db")
	cfg.ShutdownTimeout = st.cfg.ShutdownTimeout
	reg := server.NewRegistry()
	tp, err := st.cfg.Tracing.Provider(ctx, telemetry.ServiceBooks, reg)
	if err != nil {
		return nil, fmt.Errorf("books: %w", err)
	}
	cfg.TracerProvider = tp
	svc, err := books.New(ctx, cfg, st.componentLog("books"), reg)
	if err != nil {
		return nil, fmt.Errorf("books: %w", err)
	}
	l := ls["books"]
	return st.serve(s, svc.Ready, svc.SetStopping, map[string]net.Listener{"books": l},
		func(ctx context.Context) error { return svc.Serve(ctx, l) }), nil
}

func (st *Stack) startAuthz(ctx context.Context, s *service, ls map[string]net.Listener) (*run, error) {
	// authz reaches the issuer directly on loopback for the JWKS, while
	// tokens name the issuer by its public URL.
	cfg := authz.DefaultConfig()
	cfg.Issuer = st.issuerURL
	cfg.JWKSURL = "http://" + dialAddr(st.addrs.Issuer) + "/.well-known/jwks.json"
	cfg.RevocationsURL = "http://" + dialAddr(st.addrs.Issuer) + "/revocations"
	cfg.ShutdownTimeout = st.cfg.ShutdownTimeout
	// An operator running the stack locally may ask why a token is
	// refused (tollgate authz explain -authz http://<authz HTTP>).
	cfg.Explain = true
	if st.cfg.AuthzConfig != nil {
		st.cfg.AuthzConfig(&cfg)
	}
	reg := server.NewRegistry()
	tp, err := st.cfg.Tracing.Provider(ctx, telemetry.ServiceAuthz, reg)
	if err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = tp
	}
	srv, err := authz.New(ctx, cfg, st.componentLog("authz"), reg)
	if err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	gl, hl := ls["authz gRPC"], ls["authz HTTP"]
	return st.serve(s, srv.Ready, srv.SetStopping, map[string]net.Listener{"authz gRPC": gl, "authz HTTP": hl},
		func(ctx context.Context) error { return srv.Serve(ctx, gl, hl) }), nil
}

// endpoints are the gateway's clusters pointed at the running services.
func (st *Stack) endpoints() map[string]string {
	return map[string]string{
		clusterIssuer: dialAddr(st.addrs.Issuer),
		clusterBooks:  dialAddr(st.addrs.Books),
		clusterAuthz:  dialAddr(st.addrs.AuthzGRPC),
	}
}

// devGateway is the in-process dev gateway, served until stopped.
type devGateway struct {
	cancel   context.CancelFunc
	finished chan struct{}
	err      error
}

func (st *Stack) startDevGateway() (*devGateway, error) {
	b, err := envoy.Load(st.cfg.GatewayConfig)
	if err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	opts := gateway.DefaultOptions()
	opts.Logger = st.componentLog("gateway")
	opts.ListenAddr, opts.AdminAddr = st.cfg.GatewayAddr, st.cfg.GatewayAdminAddr
	opts.Endpoints = st.endpoints()
	opts.ShutdownTimeout = st.cfg.ShutdownTimeout
	tp, err := st.cfg.Tracing.Provider(context.Background(), telemetry.ServiceGateway, nil)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	opts.TracerProvider = tp
	gw, err := gateway.New(b, opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	l, admin, err := gw.Listen()
	if err != nil {
		gw.Close()
		return nil, err
	}
	st.addrs.Gateway = l.Addr().String()
	if admin != nil {
		st.addrs.GatewayAdmin = admin.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &devGateway{cancel: cancel, finished: make(chan struct{})}
	go func() {
		d.err = gw.Serve(ctx, l, admin)
		close(d.finished)
	}()
	return d, nil
}

func (d *devGateway) stop(ctx context.Context) error {
	d.cancel()
	select {
	case <-d.finished:
		return d.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *devGateway) done() <-chan struct{} { return d.finished }

// probeGateway waits until a public route through the gateway reaches
// the issuer, which proves the listener, the route table and the issuer
// cluster.
func (st *Stack) probeGateway(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	url := st.GatewayURL() + "/.well-known/jwks.json"
	return waitReady(ctx, "gateway", func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s = %d, want 200", url, resp.StatusCode)
		}
		return nil
	})
}

// waitReady polls ready until it passes or ctx ends, returning the last
// reason it failed.
func waitReady(ctx context.Context, name string, ready func(context.Context) error) error {
	return server.WaitReady(ctx, name, 25*time.Millisecond, ready)
}

// dialAddr turns a listen address into one to connect to: an unspecified
// host (":8080", "0.0.0.0:8080", "[::]:8080") becomes loopback.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if ip != nil && ip.To4() == nil {
			host = "::1"
		} else {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}

// portOf returns the port of a host:port address, or 0.
func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
