// Command bench is the authz load benchmark (make bench-authz): it runs
// `tollgate authz` against a JWKS it serves itself, and beside it a no-op
// Check server built with the same gRPC settings (the floor), drives both
// with ghz on loopback, and prints checks/s, p50/p99/p99.9 latency and
// the ratios the project aims for.
//
// There are two floors. The no-op that answers a bare OK is the cheapest
// possible exchange; the one that answers a constant allow of the same
// shape as authz's (three identity headers, the headers to remove, the
// dynamic metadata) costs the load generator, which shares the machine,
// as much per answer as authz does. Ratios are given against both; the
// second isolates what authz's own work costs.
//
// The DPoP scenario sends DPoP-bound tokens, each with a fresh proof
// (RFC 9449) per check. The driver signs the proofs right before each run,
// one per request of the run, so ghz never signs and never sends a proof
// twice; the run is then a fixed number of requests, sized from the
// previous run's rate to last about -duration.
//
// It only ever talks to 127.0.0.1, and every run is bounded in time.
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/dpop"
)

const issuerName = "https://issuer.bench.invalid"

type options struct {
	tollgate    string
	ghz         string
	runs        int
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	connections int
	tokens      int
	revocations int
	dpop        bool
	compare     string
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("bench: ")
	var o options
	var serveNoop, noopShape string
	flag.StringVar(&o.tollgate, "tollgate", "", "path of the tollgate binary to benchmark")
	flag.StringVar(&o.ghz, "ghz", "", "path of the ghz binary")
	flag.IntVar(&o.runs, "runs", 3, "runs of each measurement; the median is reported")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of one measured run")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before the runs on each server")
	flag.IntVar(&o.concurrency, "c", 50, "concurrent requests (ghz -c)")
	flag.IntVar(&o.connections, "connections", 1, "gRPC connections (ghz --connections); Envoy keeps few")
	flag.IntVar(&o.tokens, "tokens", 1000, "distinct valid tokens in the pool")
	flag.IntVar(&o.revocations, "revocations", 0, "revoked tokens the authz servers follow in a revocation feed (0: no feed)")
	flag.BoolVar(&o.dpop, "dpop", true, "run the DPoP scenario: -tokens DPoP-bound tokens, a fresh proof with every check")
	flag.StringVar(&o.compare, "compare", "", "instead of the full benchmark, put variants of the cached authz side by side: tracing (off, on to a local OTLP receiver) or logging (off, sync, async, async with 1 allow in 100)")
	flag.StringVar(&serveNoop, "serve-noop", "", "serve the no-op Check server on this address (used by the benchmark itself)")
	flag.StringVar(&noopShape, "noop-answer", "bare", "with -serve-noop: answer a bare OK (bare) or a constant allow shaped like authz's (allow)")
	flag.Parse()
	if serveNoop != "" {
		if err := runNoop(serveNoop, noopShape == "allow"); err != nil {
			log.Fatal(err)
		}
		return
	}
	if o.tollgate == "" || o.ghz == "" || o.runs < 1 || o.tokens < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if o.dpop && o.compare == "" && (o.duration > maxDPoPRun || o.warmup > maxDPoPRun) {
		log.Printf("-duration and -warmup must be at most %v with the DPoP scenario: its proofs are signed before a run and must still be inside the %v iat window at its end (or -dpop=false)", maxDPoPRun, dpop.DefaultMaxAge)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

// noop answers every Check with the same constant response, without
// looking at the request: the cost of gRPC itself, with authz's server
// options, health and reflection.
type noop struct {
	authv3.UnimplementedAuthorizationServer
	allow bool
}

func (n noop) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if !n.allow {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{}}, nil
	}
	return constantAllow(), nil
}

// constantAllow is an allow of the size and shape authz sends for the
// benchmark's tokens (UUID sub and jti, name "bench", role "user").
func constantAllow() *authv3.CheckResponse {
	const id = "0b6c7d8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
	h := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: k, Value: v},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:         []*corev3.HeaderValueOption{h("x-user-id", id), h("x-user-name", "bench"), h("x-user-roles", "user")},
			HeadersToRemove: []string{"authorization", "x-access-tokens", "x-access-token"},
		}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"sub": structpb.NewStringValue(id), "name": structpb.NewStringValue("bench"), "jti": structpb.NewStringValue(id),
		}},
	}
}

func runNoop(addr string, allow bool) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(authz.ServerOptions()...)
	authv3.RegisterAuthorizationServer(gs, noop{allow: allow})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs.Serve(l)
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "tollgate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	jwksURL, kid, stopJWKS, err := serveJWKS(key, o.revocations)
	if err != nil {
		return err
	}
	defer stopJWKS()
	one, err := writeRequests(filepath.Join(dir, "one.bin"), key, kid, 1)
	if err != nil {
		return err
	}
	pool, err := writeRequests(filepath.Join(dir, "pool.bin"), key, kid, o.tokens)
	if err != nil {
		return err
	}
	var bound *dpopPool
	if o.dpop && o.compare == "" {
		if bound, err = newDPoPPool(key, kid, o.tokens, filepath.Join(dir, "dpop.bin")); err != nil {
			return err
		}
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	startNoop := func(name, answer string) (*server, error) {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		return startServer(name, exec.Command(self, "-serve-noop", addr, "-noop-answer", answer), addr, "")
	}
	bare, err := startNoop("no-op (bare OK)", "bare")
	if err != nil {
		return err
	}
	defer bare.stop()
	if o.compare != "" {
		return o.runCompare(bare, jwksURL, pool)
	}
	shaped, err := startNoop("no-op (allow-shaped)", "allow")
	if err != nil {
		return err
	}
	defer shaped.stop()
	revocationsURL := ""
	if o.revocations > 0 {
		revocationsURL = strings.TrimSuffix(jwksURL, "/jwks.json") + "/revocations"
	}
	cached, err := startAuthz(o.tollgate, jwksURL, revocationsURL, 10000)
	if err != nil {
		return err
	}
	defer cached.stop()
	uncached, err := startAuthz(o.tollgate, jwksURL, revocationsURL, 0)
	if err != nil {
		return err
	}
	defer uncached.stop()

	fmt.Printf("warming up (%v per server)...\n", o.warmup)
	for _, s := range []*server{bare, shaped, cached, uncached} {
		res, err := o.ghzRun(s, pool, o.warmup, 0)
		if err != nil {
			return fmt.Errorf("warm-up of %s: %w", s.name, err)
		}
		if s == uncached && bound != nil {
			// One ES256 verification per check, as with every proof: the
			// first estimate of the DPoP scenario's rate.
			bound.rate = res.rps
		}
	}
	if bound != nil {
		if _, err := o.dpopRun(cached, bound, o.warmup); err != nil {
			return fmt.Errorf("DPoP warm-up of %s: %w", cached.name, err)
		}
	}

	type scenario struct {
		name    string
		srv     *server
		data    string
		rate    int
		dpop    *dpopPool // fresh proofs for each run, made by dpopRun
		results []result
	}
	maxRate := []*scenario{
		{name: "no-op, bare OK", srv: bare, data: pool},
		{name: "no-op, allow-shaped answer", srv: shaped, data: pool},
		{name: "authz, cache, one token", srv: cached, data: one},
		{name: "authz, cache, token pool", srv: cached, data: pool},
		{name: "authz, no cache, token pool", srv: uncached, data: pool},
	}
	if bound != nil {
		maxRate = append(maxRate, &scenario{name: "authz, cache, DPoP-bound pool, fresh proof per check", srv: cached, dpop: bound})
	}
	// Runs interleave the servers, each run in a rotated order, so drift
	// in the shared machine's load spreads evenly over all of them.
	for r := range o.runs {
		for _, sc := range rotate(maxRate, r) {
			fmt.Printf("run %d/%d: %s, max rate...\n", r+1, o.runs, sc.name)
			var res result
			var err error
			if sc.dpop != nil {
				res, err = o.dpopRun(sc.srv, sc.dpop, o.duration)
			} else {
				res, err = o.ghzRun(sc.srv, sc.data, o.duration, 0)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", sc.name, err)
			}
			sc.results = append(sc.results, res)
		}
	}
	fixed := int(median(maxRate[1].results, func(r result) float64 { return r.rps }) / 2)
	fixedRate := []*scenario{
		{name: "no-op, bare OK", srv: bare, data: pool, rate: fixed},
		{name: "no-op, allow-shaped answer", srv: shaped, data: pool, rate: fixed},
		{name: "authz, cache, token pool", srv: cached, data: pool, rate: fixed},
	}
	for r := range o.runs {
		for _, sc := range rotate(fixedRate, r) {
			fmt.Printf("run %d/%d: %s, %d/s...\n", r+1, o.runs, sc.name, fixed)
			res, err := o.ghzRun(sc.srv, sc.data, o.duration, fixed)
			if err != nil {
				return fmt.Errorf("%s: %w", sc.name, err)
			}
			sc.results = append(sc.results, res)
		}
	}
	for _, s := range []*server{cached, uncached} {
		if err := s.checkAllAllowed(); err != nil {
			return err
		}
	}

	fmt.Printf("\nauthz load benchmark: ghz -c %d --connections %d, %v per run, median of %d runs, %d distinct tokens in the pool, loopback\n",
		o.concurrency, o.connections, o.duration, o.runs, o.tokens)
	if bound != nil {
		fmt.Printf("DPoP: %d tokens, each bound to its own P-256 key; every check a new proof (ES256), %d signed in all\n", o.tokens, bound.signed)
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tload\tchecks/s\tp50\tp99\tp99.9\t")
	all := append(append([]*scenario{}, maxRate...), fixedRate...)
	for _, sc := range all {
		load := "max"
		if sc.rate > 0 {
			load = strconv.Itoa(sc.rate) + "/s"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t\n", sc.name, load,
			median(sc.results, func(r result) float64 { return r.rps }),
			ms(median(sc.results, func(r result) float64 { return float64(r.p50) })),
			ms(median(sc.results, func(r result) float64 { return float64(r.p99) })),
			ms(median(sc.results, func(r result) float64 { return float64(r.p999) })))
	}
	tw.Flush()

	rps := func(sc *scenario) float64 { return median(sc.results, func(r result) float64 { return r.rps }) }
	p99 := func(sc *scenario) float64 {
		return median(sc.results, func(r result) float64 { return float64(r.p99) })
	}
	bareRPS, shapedRPS := rps(maxRate[0]), rps(maxRate[1])
	fmt.Printf("\nratios against the allow-shaped no-op (against the bare no-op); aim in brackets:\n")
	for _, r := range []struct {
		name string
		sc   *scenario
		aim  string
	}{
		{"throughput, cache, one token ", maxRate[2], ">= 0.9"},
		{"throughput, cache, token pool", maxRate[3], ">= 0.9"},
		{"throughput, no cache, pool   ", maxRate[4], ">= 0.5"},
	} {
		fmt.Printf("  %s / no-op: %.2f (%.2f)  [%s]\n", r.name, rps(r.sc)/shapedRPS, rps(r.sc)/bareRPS, r.aim)
	}
	if bound != nil {
		sc := maxRate[5]
		fmt.Printf("  throughput, DPoP, fresh proofs / no-op: %.2f (%.2f)  [>= 0.4 against the bare no-op]\n", rps(sc)/shapedRPS, rps(sc)/bareRPS)
	}
	fmt.Printf("  p99 at %d/s, cache, pool  / no-op: %.2f (%.2f)  [<= 1.2]\n", fixed,
		p99(fixedRate[2])/p99(fixedRate[1]), p99(fixedRate[2])/p99(fixedRate[0]))
	hits, misses := cached.cacheStats()
	fmt.Printf("\ncache of the cached authz over the whole benchmark: %.0f hits, %.0f misses\n", hits, misses)
	return nil
}

// rotate returns xs rotated left by n.
func rotate[T any](xs []T, n int) []T {
	n %= len(xs)
	return append(append([]T{}, xs[n:]...), xs[:n]...)
}

func ms(ns float64) string { return fmt.Sprintf("%.2fms", ns/1e6) }

// result is one ghz run.
type result struct {
	rps             float64
	p50, p99, p999  time.Duration
	count, failures int
}

func median[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// ghzRun drives s for d at most rate requests/s (0 = as fast as it
// goes) and computes the percentiles from every request's latency.
func (o options) ghzRun(s *server, data string, d time.Duration, rate int) (result, error) {
	return o.ghzCall(s, data, []string{"-z", d.String()}, rate)
}

// ghzCall runs ghz against s with data and the length of the run in args
// (-z DURATION or -n COUNT).
func (o options) ghzCall(s *server, data string, length []string, rate int) (result, error) {
	args := append([]string{
		"--insecure",
		"--call", "envoy.service.auth.v3.Authorization/Check",
		"-B", data,
		"-c", strconv.Itoa(o.concurrency),
		"--connections", strconv.Itoa(o.connections),
		"-O", "json",
	}, length...)
	if rate > 0 {
		args = append(args, "--rps", strconv.Itoa(rate))
	}
	args = append(args, s.addr)
	var out, errOut bytes.Buffer
	cmd := exec.Command(o.ghz, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("ghz: %w: %s", err, errOut.String())
	}
	var rep struct {
		Count   int     `json:"count"`
		RPS     float64 `json:"rps"`
		Details []struct {
			Latency int64  `json:"latency"`
			Status  string `json:"status"`
			Error   string `json:"error"`
		} `json:"details"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return result{}, fmt.Errorf("ghz output: %w", err)
	}
	var lat []int64
	failures := 0
	for _, dt := range rep.Details {
		if dt.Status != "OK" || dt.Error != "" {
			failures++
			continue
		}
		lat = append(lat, dt.Latency)
	}
	if len(lat) == 0 {
		return result{}, fmt.Errorf("ghz: no successful requests (%d failed)", failures)
	}
	// A request cut off when the run's time is up is not a failure of
	// the server; more than that is.
	if failures > o.concurrency {
		return result{}, fmt.Errorf("ghz: %d of %d requests failed", failures, rep.Count)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return time.Duration(lat[min(len(lat)-1, int(p*float64(len(lat))))]) }
	return result{rps: rep.RPS, p50: pct(0.50), p99: pct(0.99), p999: pct(0.999), count: rep.Count, failures: failures}, nil
}

// server is one process under load.
type server struct {
	name    string
	addr    string // gRPC
	metrics string // authz /metrics URL, empty for the no-op
	cmd     *exec.Cmd
}

func (s *server) stop() {
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// cacheStats reads the verified-token cache counters from /metrics.
func (s *server) cacheStats() (hits, misses float64) {
	resp, err := http.Get(s.metrics)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		name, v, _ := strings.Cut(line, " ")
		f, _ := strconv.ParseFloat(v, 64)
		switch name {
		case "tollgate_authz_token_cache_hits_total":
			hits = f
		case "tollgate_authz_token_cache_misses_total":
			misses = f
		}
	}
	return hits, misses
}

// checkAllAllowed makes sure the load measured allows, not denials.
func (s *server) checkAllAllowed() error {
	resp, err := http.Get(s.metrics)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, `tollgate_authz_checks_total{decision="deny"`) && !strings.HasSuffix(line, " 0") {
			return fmt.Errorf("%s denied some checks during the benchmark: %s", s.name, line)
		}
	}
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func startAuthz(tollgate, jwksURL, revocationsURL string, cacheSize int) (*server, error) {
	var args []string
	if revocationsURL != "" {
		args = []string{"-revocations-url", revocationsURL}
	}
	return startAuthzVariant(tollgate, jwksURL, cacheSize, "", args, nil)
}

// startAuthzVariant is startAuthz with extra flags and environment, and
// a name suffix.
func startAuthzVariant(tollgate, jwksURL string, cacheSize int, variant string, args, env []string) (*server, error) {
	grpcAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	name := "authz (cache " + strconv.Itoa(cacheSize) + ")" + variant
	cmd := exec.Command(tollgate, append([]string{"authz",
		"-grpc-addr", grpcAddr, "-http-addr", httpAddr,
		"-issuer", issuerName, "-jwks-url", jwksURL,
		"-cache-size", strconv.Itoa(cacheSize)}, args...)...)
	cmd.Env = append(withoutOTEL(os.Environ()), env...)
	s, err := startServer(name, cmd, grpcAddr, "http://"+httpAddr+"/readyz")
	if err != nil {
		return nil, err
	}
	s.metrics = "http://" + httpAddr + "/metrics"
	return s, nil
}

// startServer starts cmd serving gRPC on addr (its output, the decision
// log included, goes to /dev/null) and waits until it is ready: readyz
// answers 200 or, for the no-op, its port accepts connections.
func startServer(name string, cmd *exec.Cmd, addr, readyz string) (*server, error) {
	s := &server{name: name, cmd: cmd, addr: addr}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if readyz != "" {
			if resp, err := http.Get(readyz); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return s, nil
				}
			}
		} else if c, err := net.Dial("tcp", s.addr); err == nil {
			c.Close()
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("%s did not become ready", name)
}

// serveJWKS publishes key's public JWK on a loopback port.
func serveJWKS(key *ecdsa.PrivateKey, revocations int) (url, kid string, stop func(), err error) {
	pub, err := jwk.FromRaw(key.Public())
	if err != nil {
		return "", "", nil, err
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", "", nil, err
	}
	kid = base64.RawURLEncoding.EncodeToString(tp)
	for k, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: jwa.ES256, jwk.KeyUsageKey: jwk.ForSignature} {
		if err := pub.Set(k, v); err != nil {
			return "", "", nil, err
		}
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return "", "", nil, err
	}
	body, err := json.Marshal(set)
	if err != nil {
		return "", "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", nil, err
	}
	feed, err := revocationFeed(revocations)
	if err != nil {
		return "", "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/revocations" {
			// The whole list once, then "nothing new", as the issuer's
			// feed answers a follower that is up to date.
			if r.URL.Query().Get("since") == strconv.Itoa(revocations) {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write(feed)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=300")
		w.Write(body)
	})}
	go srv.Serve(l)
	return "http://" + l.Addr().String() + "/jwks.json", kid, func() { srv.Close() }, nil
}

// revocationFeed is a full revocation feed answer listing n revoked
// tokens, none of them in the benchmark's pool.
func revocationFeed(n int) ([]byte, error) {
	type tok struct {
		JTI string `json:"jti"`
		Exp int64  `json:"exp"`
	}
	toks := make([]tok, n)
	exp := time.Now().Add(2 * time.Hour).Unix()
	for i := range toks {
		toks[i] = tok{uuid.NewString(), exp}
	}
	return json.Marshal(map[string]any{"iss": issuerName, "version": n, "full": true, "tokens": toks, "subjects": []any{}})
}

// writeRequests writes n CheckRequests, each with its own valid token,
// as ghz's count-delimited binary data, and returns the file's path.
func writeRequests(path string, key *ecdsa.PrivateKey, kid string, n int) (string, error) {
	var buf bytes.Buffer
	for range n {
		s, err := mintToken(key, kid, "")
		if err != nil {
			return "", err
		}
		if _, err := protodelim.MarshalTo(&buf, envoyRequest(s)); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return "", errors.Join(errors.New("write requests"), err)
	}
	return path, nil
}

// mintToken signs a token as the issuer does, valid for two hours; jkt,
// when set, binds it to a DPoP key (cnf.jkt, RFC 9449 §6.1).
func mintToken(key *ecdsa.PrivateKey, kid, jkt string) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": issuerName, "aud": []string{authz.DefaultAudience}, "sub": uuid.NewString(),
		"name": "bench", "roles": []string{"user"}, "jti": uuid.NewString(),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(2 * time.Hour).Unix(),
	}
	if jkt != "" {
		claims["cnf"] = map[string]string{"jkt": jkt}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = kid
	return tok.SignedString(key)
}

// envoyRequest is a CheckRequest as Envoy builds it for GET /books.
func envoyRequest(tok string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: "GET", Path: "/books?page=1", Host: "books.example", Scheme: "http", Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":authority": "books.example", ":method": "GET", ":path": "/books?page=1", ":scheme": "http",
				"user-agent": "curl/8.5.0", "accept": "*/*", "x-forwarded-proto": "http",
				"x-request-id":  uuid.NewString(),
				"authorization": "Bearer " + tok,
			},
		}},
		ContextExtensions: map[string]string{"route": "books"},
	}}
}

// maxDPoPRun is the longest run the DPoP scenario takes: its proofs are
// signed before the run starts and must be inside authz's iat window
// (dpop.DefaultMaxAge) when the last is sent, signing time included.
const maxDPoPRun = 40 * time.Second

// dpopURL is the URL of envoyRequest's GET /books as the client sent it:
// the CheckRequest's scheme, host and path, without the query.
const dpopURL = "http://books.example/books"

// dpopPool is the DPoP scenario's tokens, each bound to its own key, and
// the file the requests of the next run are written to.
type dpopPool struct {
	tokens  []string
	signers []*dpop.Signer
	path    string
	rate    float64 // checks/s of the last run, to size the next
	signed  int     // proofs made so far
}

func newDPoPPool(key *ecdsa.PrivateKey, kid string, n int, path string) (*dpopPool, error) {
	p := &dpopPool{path: path}
	for range n {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		s, err := dpop.NewSigner(k)
		if err != nil {
			return nil, err
		}
		tok, err := mintToken(key, kid, s.JKT())
		if err != nil {
			return nil, err
		}
		p.tokens, p.signers = append(p.tokens, tok), append(p.signers, s)
	}
	return p, nil
}

// writeRequests writes n CheckRequests, the pool's tokens in turn, each
// with a proof of its own made now, over every CPU.
func (p *dpopPool) writeRequests(n int) error {
	reqs := make([][]byte, n)
	workers := runtime.NumCPU()
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				t := i % len(p.tokens)
				proof, err := p.signers[t].Proof("GET", dpopURL, dpop.ProofOptions{AccessToken: p.tokens[t]})
				if err == nil {
					var b bytes.Buffer
					_, err = protodelim.MarshalTo(&b, envoyDPoPRequest(p.tokens[t], proof))
					reqs[i] = b.Bytes()
				}
				if err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	p.signed += n
	return os.WriteFile(p.path, bytes.Join(reqs, nil), 0o600)
}

// dpopRun drives s with fresh proofs for about d: as many requests as
// the last run's rate gives in d, each proof signed for this run only.
func (o options) dpopRun(s *server, p *dpopPool, d time.Duration) (result, error) {
	n := max(int(p.rate*d.Seconds()), 10*o.concurrency)
	if err := p.writeRequests(n); err != nil {
		return result{}, err
	}
	res, err := o.ghzCall(s, p.path, []string{"-n", strconv.Itoa(n)}, 0)
	if err == nil {
		p.rate = res.rps
	}
	return res, err
}

// envoyDPoPRequest is envoyRequest with tok presented as a DPoP-bound
// token and its proof.
func envoyDPoPRequest(tok, proof string) *authv3.CheckRequest {
	r := envoyRequest(tok)
	h := r.Attributes.Request.Http.Headers
	h["authorization"] = dpop.Scheme + " " + tok
	h[dpop.Header] = proof
	return r
}
