package resilience

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tollgate-dev/tollgate/issuer"
)

// IssuerURL is the iss claim of the stacks the harness runs. It is a
// name, not an address: authz is given the JWKS URL directly.
const IssuerURL = "http://tollgate.test"

// AdminName is the admin user every stack creates at start.
const AdminName = "admin"

// Config is a stack's settings. The zero value of a field means the
// default in its comment: short enough that rotations and refreshes
// happen within a test, with the production rules unchanged.
type Config struct {
	// Bin is the tollgate binary. Required.
	Bin string
	// Dir holds the databases, keys, logs and the gateway's bootstrap.
	// Required.
	Dir string
	// IssuerDB and BooksDB are postgres:// URLs; empty means SQLite files
	// in Dir.
	IssuerDB, BooksDB string
	// Alg is the signing algorithm (default ES256).
	Alg string
	// TokenTTL is the issuer's token lifetime (default 1m).
	TokenTTL time.Duration
	// KeyActivationDelay is how long a new key is published before it
	// signs (default 3s; it must exceed RefreshBound).
	KeyActivationDelay time.Duration
	// KeyPollInterval is how often the issuer rereads its key directory
	// (default 200ms).
	KeyPollInterval time.Duration
	// JWKSMaxAge is the issuer's JWKS max-age (default 1s).
	JWKSMaxAge time.Duration
	// MinRefresh and MaxRefresh bound authz's JWKS refresh interval
	// (defaults 250ms and 1s).
	MinRefresh, MaxRefresh time.Duration
	// FetchTimeout bounds one JWKS fetch by authz (default 1s).
	FetchTimeout time.Duration
	// Leeway is authz's clock-skew allowance (default 1s).
	Leeway time.Duration
	// CacheSize is authz's verified-token cache (default 10000, the
	// command's default; the cache is what a withdrawal must reach).
	CacheSize int
	// MaxConcurrentHashes bounds the issuer's password hashing
	// (default 2).
	MaxConcurrentHashes int
	// WithdrawableJWKS puts a JWKSProxy between authz and the issuer.
	WithdrawableJWKS bool
	// RevocationsInterval is how often authz fetches the revocation feed
	// (default 2s, the command's default).
	RevocationsInterval time.Duration
	// RevocationsURL is the feed authz follows; empty means the stack's
	// own issuer.
	RevocationsURL string
	// KeyDir, when set, is an existing key directory the issuer uses (so
	// two stacks can sign with the same keys); empty means a fresh one
	// in Dir with a generated key.
	KeyDir string
	// FailureModeAllow sets the gateway to let requests through when
	// authz cannot answer: a deliberately broken stack.
	FailureModeAllow bool
}

func (c *Config) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.TokenTTL, time.Minute)
	set(&c.KeyActivationDelay, 3*time.Second)
	set(&c.KeyPollInterval, 200*time.Millisecond)
	set(&c.JWKSMaxAge, time.Second)
	set(&c.MinRefresh, 250*time.Millisecond)
	set(&c.MaxRefresh, time.Second)
	set(&c.FetchTimeout, time.Second)
	set(&c.Leeway, time.Second)
	set(&c.RevocationsInterval, 2*time.Second)
	if c.CacheSize == 0 {
		c.CacheSize = 10000
	}
	if c.MaxConcurrentHashes == 0 {
		c.MaxConcurrentHashes = 2
	}
	if c.Alg == "" {
		c.Alg = issuer.ES256
	}
}

// Stack is the four Tollgate processes, each on its own loopback port,
// wired together as in production: the gateway in front, authz checking,
// the issuer and books behind.
type Stack struct {
	Config Config

	Issuer, Authz, Books, Gateway *Proc

	// URL is the gateway's base URL, where clients go.
	URL string
	// IssuerAddr, BooksAddr, AuthzGRPCAddr, AuthzHTTPAddr and AdminAddr
	// are the services' own addresses, for checks on the upstream side.
	IssuerAddr, BooksAddr, AuthzGRPCAddr, AuthzHTTPAddr, AdminAddr string
	// KeyDir is the issuer's key directory.
	KeyDir string
	// JWKS is the proxy authz fetches keys through, when
	// Config.WithdrawableJWKS is set.
	JWKS *JWKSProxy
	// AdminPassword is AdminName's password.
	AdminPassword string
}

// startAttempts bounds StartStack's tries: ports are chosen before the
// processes bind them, and another program may take one meanwhile.
const startAttempts = 3

// StartStack starts a stack for t, with a first signing key in its key
// directory, and stops every process when t ends. A start that fails
// because a chosen port was taken is retried on other ports, in a
// subdirectory of cfg.Dir (s.Config.Dir is the one used).
func StartStack(t testing.TB, cfg Config) *Stack {
	t.Helper()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		c := cfg
		if attempt > 1 {
			c.Dir = filepath.Join(cfg.Dir, fmt.Sprintf("attempt%d", attempt))
		}
		var s *Stack
		if s, err = newStack(t, c); err == nil {
			return s
		}
		if !errors.Is(err, ErrAddrInUse) {
			break
		}
		t.Logf("stack start %d: %v; trying other ports", attempt, err)
	}
	t.Fatal(err)
	return nil
}

func newStack(t testing.TB, cfg Config) (*Stack, error) {
	cfg.defaults()
	if cfg.Bin == "" || cfg.Dir == "" {
		return nil, errors.New("stack: Bin and Dir are required")
	}
	s := &Stack{Config: cfg, KeyDir: filepath.Join(cfg.Dir, "keys"), AdminPassword: "admin password " + strconv.FormatInt(time.Now().UnixNano(), 36)}
	if cfg.KeyActivationDelay <= s.RefreshBound() {
		return nil, fmt.Errorf("stack: key activation delay %v must exceed the JWKS refresh bound %v, or valid tokens of a new key are denied", cfg.KeyActivationDelay, s.RefreshBound())
	}
	if cfg.KeyDir != "" {
		s.KeyDir = cfg.KeyDir
	} else if _, _, err := issuer.GenerateKeyFile(s.KeyDir, cfg.Alg); err != nil {
		return nil, err
	}
	addrs := make([]string, 6)
	for i := range addrs {
		a, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	s.IssuerAddr, s.BooksAddr, s.AuthzGRPCAddr, s.AuthzHTTPAddr = addrs[0], addrs[1], addrs[2], addrs[3]
	gatewayAddr, adminAddr := addrs[4], addrs[5]
	s.URL, s.AdminAddr = "http://"+gatewayAddr, adminAddr

	pwFile := filepath.Join(cfg.Dir, "admin-password")
	if err := os.WriteFile(pwFile, []byte(s.AdminPassword+"\n"), 0o600); err != nil {
		return nil, err
	}
	issuerDB := cfg.IssuerDB
	if issuerDB == "" {
		issuerDB = filepath.Join(cfg.Dir, "issuer.db")
	}
	booksDB := cfg.BooksDB
	if booksDB == "" {
		booksDB = filepath.Join(cfg.Dir, "books.db")
	}
	jwksURL := "http://" + s.IssuerAddr + "/.well-known/jwks.json"
	if cfg.WithdrawableJWKS {
		s.JWKS = NewJWKSProxy(jwksURL)
		srv := httptest.NewServer(s.JWKS)
		t.Cleanup(srv.Close) // after the processes stop (cleanups run last first)
		jwksURL = srv.URL + "/.well-known/jwks.json"
	}
	revocationsURL := cfg.RevocationsURL
	if revocationsURL == "" {
		revocationsURL = "http://" + s.IssuerAddr + "/revocations"
	}
	d := func(v time.Duration) string { return v.String() }
	logArgs := []string{"-log-level", "warn", "-log-format", "json"}

	s.Issuer = NewProc("issuer", cfg.Bin, append([]string{"issuer",
		"-addr", s.IssuerAddr,
		"-data-dir", cfg.Dir,
		"-db", issuerDB,
		"-issuer-url", IssuerURL,
		"-alg", cfg.Alg,
		"-key-dir", s.KeyDir,
		"-key-activation-delay", d(cfg.KeyActivationDelay),
		"-key-poll-interval", d(cfg.KeyPollInterval),
		"-token-ttl", d(cfg.TokenTTL),
		"-jwks-max-age", d(cfg.JWKSMaxAge),
		"-admin-name", AdminName,
		"-admin-password-file", pwFile,
		"-max-concurrent-hashes", strconv.Itoa(cfg.MaxConcurrentHashes),
		"-shutdown-timeout", "5s",
	}, logArgs...), nil, filepath.Join(cfg.Dir, "issuer.log"), httpReady("http://"+s.IssuerAddr+"/readyz"))

	s.Books = NewProc("books", cfg.Bin, append([]string{"books",
		"-addr", s.BooksAddr,
		"-data-dir", cfg.Dir,
		"-db", booksDB,
	}, logArgs...), nil, filepath.Join(cfg.Dir, "books.log"), httpReady("http://"+s.BooksAddr+"/readyz"))

	s.Authz = NewProc("authz", cfg.Bin, append([]string{"authz",
		"-grpc-addr", s.AuthzGRPCAddr,
		"-http-addr", s.AuthzHTTPAddr,
		"-issuer", IssuerURL,
		"-jwks-url", jwksURL,
		"-leeway", d(cfg.Leeway),
		"-cache-size", strconv.Itoa(cfg.CacheSize),
		"-jwks-min-refresh", d(cfg.MinRefresh),
		"-jwks-max-refresh", d(cfg.MaxRefresh),
		"-jwks-refetch-interval", d(cfg.MinRefresh),
		"-jwks-fetch-timeout", d(cfg.FetchTimeout),
		"-revocations-url", revocationsURL,
		"-revocations-interval", d(cfg.RevocationsInterval),
		"-shutdown-timeout", "5s",
	}, logArgs...), nil, filepath.Join(cfg.Dir, "authz.log"), httpReady("http://"+s.AuthzHTTPAddr+"/readyz"))

	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	gwConfig := filepath.Join(cfg.Dir, "envoy.yaml")
	if err := WriteGatewayConfig(filepath.Join(root, "envoy", "envoy.yaml"), gwConfig, GatewayConfig{
		Listen: gatewayAddr,
		Admin:  adminAddr,
		Endpoints: map[string]string{
			"issuer": s.IssuerAddr,
			"books":  s.BooksAddr,
			"authz":  s.AuthzGRPCAddr,
		},
		FailureModeAllow: cfg.FailureModeAllow,
	}); err != nil {
		return nil, err
	}
	s.Gateway = NewProc("gateway", cfg.Bin, append([]string{"gateway", "-c", gwConfig}, logArgs...), nil,
		filepath.Join(cfg.Dir, "gateway.log"), httpReady("http://"+adminAddr+"/ready"))

	t.Cleanup(func() {
		for _, p := range s.Procs() {
			if p.Running() {
				p.Kill()
			}
		}
		if t.Failed() {
			for _, p := range s.Procs() {
				t.Logf("%s log tail (%s):\n%s", p.Name, p.LogPath(), p.LogTail(20))
			}
		}
	})
	ctx := context.Background()
	for _, p := range []*Proc{s.Issuer, s.Books, s.Authz, s.Gateway} {
		if err := p.Start(ctx); err != nil {
			for _, p := range s.Procs() {
				if p.Running() {
					p.Kill()
				}
			}
			return nil, err
		}
	}
	return s, nil
}

// Procs returns the stack's processes, gateway first.
func (s *Stack) Procs() []*Proc { return []*Proc{s.Gateway, s.Authz, s.Issuer, s.Books} }

// RefreshBound is the longest a JWKS change can take to reach authz: a
// background refresh interval at most, plus one fetch, plus the time the
// issuer takes to notice a key file.
func (s *Stack) RefreshBound() time.Duration {
	return s.Config.MaxRefresh + s.Config.FetchTimeout + s.Config.KeyPollInterval
}

// Crashes returns every exit of a stack process that the harness did not
// cause.
func (s *Stack) Crashes() []string {
	var out []string
	for _, p := range s.Procs() {
		for _, c := range p.Crashes() {
			out = append(out, p.Name+": "+c)
		}
	}
	return out
}

// MetricsURL returns the /metrics URL of a service process; the gateway
// has none (Envoy's admin stats are not part of the dev gateway).
func (s *Stack) MetricsURL(p *Proc) string {
	switch p {
	case s.Issuer:
		return "http://" + s.IssuerAddr + "/metrics"
	case s.Books:
		return "http://" + s.BooksAddr + "/metrics"
	case s.Authz:
		return "http://" + s.AuthzHTTPAddr + "/metrics"
	}
	return ""
}

// Usage is what a process holds at one moment.
type Usage struct {
	RSS        int64 // bytes, from /proc
	Threads    int64
	Goroutines int64 // from /metrics go_goroutines; -1 when unknown
}

// Usage samples p's resident memory, threads and goroutines.
func (s *Stack) Usage(ctx context.Context, p *Proc) (Usage, error) {
	u := Usage{Goroutines: -1}
	var err error
	if u.RSS, err = p.RSS(); err != nil {
		return u, err
	}
	if u.Threads, err = p.Threads(); err != nil {
		return u, err
	}
	if url := s.MetricsURL(p); url != "" {
		m, err := Scrape(ctx, url)
		if err != nil {
			return u, err
		}
		u.Goroutines = int64(Sum(m, "go_goroutines", nil))
	}
	return u, nil
}

// Metrics are the metric families of one /metrics scrape.
type Metrics map[string]*dto.MetricFamily

// Scrape fetches and parses a Prometheus text endpoint.
func Scrape(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: status %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return Metrics(fams), nil
}

var scrapeClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// Sum adds up the samples of a counter or gauge family whose labels pass
// keep (nil keeps all).
func Sum(m Metrics, name string, keep func(labels map[string]string) bool) float64 {
	f := m[name]
	if f == nil {
		return 0
	}
	total := 0.0
	for _, mt := range f.GetMetric() {
		if keep != nil {
			labels := map[string]string{}
			for _, lp := range mt.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if !keep(labels) {
				continue
			}
		}
		switch {
		case mt.GetCounter() != nil:
			total += mt.GetCounter().GetValue()
		case mt.GetGauge() != nil:
			total += mt.GetGauge().GetValue()
		case mt.GetUntyped() != nil:
			total += mt.GetUntyped().GetValue()
		}
	}
	return total
}

// APIRequests returns how many requests a service answered outside its
// health and metrics routes, from tollgate_http_requests_total: the
// upstream side's own count of what reached it.
func APIRequests(ctx context.Context, metricsURL string) (float64, error) {
	m, err := Scrape(ctx, metricsURL)
	if err != nil {
		return 0, err
	}
	return Sum(m, "tollgate_http_requests_total", func(l map[string]string) bool {
		r := l["route"]
		return !strings.HasSuffix(r, "/metrics") && !strings.HasSuffix(r, "/readyz") && !strings.HasSuffix(r, "/healthz")
	}), nil
}

// ModuleRoot returns the directory holding go.mod, searching up from the
// working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// BuildTollgate builds the tollgate command of the module at root into
// out with the go command on PATH.
func BuildTollgate(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/tollgate")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/tollgate: %w\n%s", err, b)
	}
	return nil
}
