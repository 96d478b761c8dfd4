package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/internal/server"
	"github.com/tollgate-dev/tollgate/internal/telemetry"
)

// Options adjust how a Gateway runs a bootstrap without editing it.
// Start from DefaultOptions; an empty address or a nil map leaves the
// bootstrap as it is.
type Options struct {
	// Logger receives the gateway's logs, one line per request at Info;
	// nil discards them.
	Logger *slog.Logger
	// ListenAddr, when not empty, replaces the listener's address, for
	// example "127.0.0.1:0" in tests.
	ListenAddr string
	// AdminAddr, when not empty, replaces the admin address.
	AdminAddr string
	// Endpoints replaces the endpoints of the named clusters with one
	// address ("host:port") each, for example to reach services started on
	// ephemeral ports. Naming a cluster the bootstrap lacks is an error.
	Endpoints map[string]string
	// ShutdownTimeout bounds Serve's graceful drain, as Envoy's
	// --drain-time-s does.
	ShutdownTimeout time.Duration
	// TracerProvider, when set, records the gateway's spans instead of
	// the bootstrap's tracing block (which exports to its own cluster).
	// With neither, the gateway traces nothing but still passes a
	// client's traceparent through like any other header.
	TracerProvider trace.TracerProvider
}

// DefaultShutdownTimeout is DefaultOptions' ShutdownTimeout.
const DefaultShutdownTimeout = 15 * time.Second

// DefaultOptions returns the options `tollgate gateway` starts from: the
// bootstrap as it is, drained for at most DefaultShutdownTimeout.
func DefaultOptions() Options {
	return Options{ShutdownTimeout: DefaultShutdownTimeout}
}

// Gateway is the dev gateway: an HTTP server that behaves like Envoy for
// the features of the bootstrap it was built from.
type Gateway struct {
	log      *slog.Logger
	proxyLog *log.Logger // the reverse proxies' error log, at Debug
	cfg      *compiled
	clusters map[string]*upstream
	authz    authv3.AuthorizationClient // nil without an ext_authz filter
	conns    []*grpc.ClientConn
	shutdown time.Duration
	// codecMarker names the header of the stand-in request that tells
	// ServeHTTP the codec refused a request (see codecConn). It is random,
	// so no client can send it.
	codecMarker string

	draining  atomic.Bool
	closeOnce sync.Once

	stats      *stats
	bootstrap  *bootstrapv3.Bootstrap // as loaded, for /config_dump
	loaded     time.Time
	tracer     trace.Tracer       // nil: tracing off
	ownTracing *telemetry.Tracing // the bootstrap tracing block's exporter, if used
	reg        *prometheus.Registry
}

// New validates b (envoy.Validate), makes sure the gateway implements
// every field it sets (Supported), and builds a gateway for it. Nothing
// listens until Serve; Serve, or Close for a gateway never served,
// releases its upstream connections.
func New(b *bootstrapv3.Bootstrap, opts Options) (*Gateway, error) {
	if err := envoy.Validate(b); err != nil {
		return nil, err
	}
	if err := Supported(b); err != nil {
		return nil, err
	}
	if opts.ShutdownTimeout <= 0 {
		return nil, fmt.Errorf("gateway: shutdown timeout must be positive, not %v", opts.ShutdownTimeout)
	}
	cfg, err := compile(b, opts)
	if err != nil {
		return nil, err
	}
	if opts.ListenAddr != "" {
		cfg.listenAddr = opts.ListenAddr
	}
	if opts.AdminAddr != "" {
		cfg.adminAddr = opts.AdminAddr
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		log:         log,
		proxyLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		cfg:         cfg,
		clusters:    map[string]*upstream{},
		shutdown:    opts.ShutdownTimeout,
		codecMarker: textproto.CanonicalMIMEHeaderKey(fmt.Sprintf("X-Tollgate-Codec-Refusal-%016x", rand.Uint64())),
		reg:         prometheus.NewRegistry(),
	}
	for name, cc := range cfg.clusters {
		u, err := newUpstream(cc)
		if err != nil {
			g.closeConns()
			return nil, err
		}
		g.clusters[name] = u
		if u.conn != nil {
			g.conns = append(g.conns, u.conn)
		}
	}
	if cfg.authz != nil {
		g.authz = authv3.NewAuthorizationClient(g.clusters[cfg.authz.cluster].conn)
	}
	names := make([]string, 0, len(g.clusters))
	for n := range g.clusters {
		names = append(names, n)
	}
	g.stats = newStats(g.reg, cfg.statPrefix, names)
	g.keepBootstrap(b)
	if err := g.setupTracing(opts); err != nil {
		g.closeConns()
		return nil, err
	}
	return g, nil
}

// Listen binds the bootstrap's listener and, when it has one, its admin
// address (admin is nil otherwise), for Serve.
func (g *Gateway) Listen() (l, admin net.Listener, err error) {
	l, err = server.ListenNetwork("gateway", network(g.cfg.listenAddr), g.cfg.listenAddr)
	if err != nil {
		return nil, nil, err
	}
	if g.cfg.adminAddr != "" {
		admin, err = server.ListenNetwork("gateway admin", network(g.cfg.adminAddr), g.cfg.adminAddr)
		if err != nil {
			l.Close()
			return nil, nil, err
		}
	}
	return l, admin, nil
}

// network is "tcp4" for an IPv4 address, so that 0.0.0.0 binds IPv4 only
// as it does in Envoy, and "tcp" otherwise.
func network(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if ip, perr := netip.ParseAddr(host); err == nil && perr == nil && ip.Is4() {
		return "tcp4"
	}
	return "tcp"
}

// Serve runs the gateway on l and the admin interface on admin (which
// may be nil), with the clusters' health checks, until ctx ends or a
// listener fails; then the admin /ready turns to DRAINING, in-flight
// requests finish within Options.ShutdownTimeout, and the gateway's
// connections are closed. A normal stop returns nil.
func (g *Gateway) Serve(ctx context.Context, l, admin net.Listener) error {
	defer g.Close()
	hcCtx, stopHC := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer func() {
		stopHC()
		wg.Wait()
	}()
	for _, u := range g.clusters {
		for _, hc := range u.cfg.healthChecks {
			wg.Go(func() { runHealthCheck(hcCtx, g.log, u, hc) })
		}
	}
	// The codec listener checks every HTTP/1 request head the way Envoy's
	// codec does before net/http reads it.
	cl := &codecListener{Listener: l, marker: g.codecMarker, headTimeout: g.cfg.hcm.requestHeadersTimeout}
	units := []server.Bound{{Name: "gateway", Unit: server.HTTP{Server: g.newServer()}, Listener: cl}}
	if admin != nil {
		units = append(units, server.Bound{Name: "gateway admin", Unit: server.HTTP{Server: &http.Server{Handler: g.adminHandler(), ReadHeaderTimeout: 10 * time.Second}}, Listener: admin})
	}
	return server.Run(ctx, g.log, g.shutdown, func() { g.draining.Store(true) }, units...)
}

// newServer is the listener's HTTP server, with the connection manager's
// timeouts and codecs.
func (g *Gateway) newServer() *http.Server {
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: g.cfg.hcm.requestHeadersTimeout,
		IdleTimeout:       g.cfg.hcm.idleTimeout,
		MaxHeaderBytes:    maxRequestHeaders,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
		ConnContext:       withCodecConn,
	}
	srv.Protocols.SetHTTP1(true)
	if g.cfg.hcm.http2 {
		// codec_type AUTO: HTTP/2 with prior knowledge on the same port.
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	return srv
}

// Close releases the gateway's upstream connections; Serve calls it when
// it ends, so only a gateway that is never served needs it.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		g.draining.Store(true)
		g.shutdownTracing()
		g.closeConns()
		for _, u := range g.clusters {
			if u.transport != nil {
				u.transport.CloseIdleConnections()
			}
		}
	})
	return nil
}

func (g *Gateway) closeConns() {
	for _, c := range g.conns {
		c.Close()
	}
	g.conns = nil
}

// Handler is the gateway's request handler, for callers that run their
// own server. It still needs the listener's local address in the request
// context (http.LocalAddrContextKey), which http.Server provides. Such a
// server does not get the codec's checks of HTTP/1 message framing, which
// need the gateway's own listener (see codecConn).
func (g *Gateway) Handler() http.Handler { return g }

// stream is one request's state as it passes through the HCM, ext_authz
// and the router.
type stream struct {
	id                uint64
	start             time.Time
	r                 *http.Request
	h                 *headerMap
	route             *route
	responseMutations []headerMutation // ext_authz OK response_headers_to_add
	authz             string           // outcome, for the log
	status            int
	flags             string          // Envoy's response flags, for the log
	closeConnection   bool            // the reply closes an HTTP/1 connection
	span              trace.Span      // nil without tracing
	traceCtx          context.Context // carries span
}

// ServeHTTP runs one request the way Envoy's HTTP connection manager,
// ext_authz filter and router would.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := &stream{id: rand.Uint64(), start: time.Now(), r: r, authz: "skipped"}
	if v, ok := r.Header[g.codecMarker]; ok {
		e := codecErrorByDetails(v[0])
		g.codecReply(w, s, e)
		// Envoy's access log has no method or path for a request its codec refused.
		g.log.Info("request", "method", "-", "path", "-", "status", s.status,
			"flags", s.flags, "details", e.details, "duration", time.Since(s.start))
		return
	}
	if g.tracer != nil {
		g.startStream(s)
		defer g.endStream(s)
	}
	defer func() {
		g.stats.downstream(s.status)
		g.log.Info("request", "method", r.Method, "path", r.URL.RequestURI(), "status", s.status,
			"flags", flagsOrDash(s.flags), "route", routeName(s.route), "authz", s.authz,
			"request_id", s.h.valueOrEmpty("x-request-id"), "duration", time.Since(s.start))
	}()
	g.serveStream(w, s)
}

// flagsOrDash prints no response flags as "-", as Envoy's access log does.
func flagsOrDash(f string) string {
	if f == "" {
		return "-"
	}
	return f
}

func routeName(r *route) string {
	if r == nil {
		return ""
	}
	return r.name
}

func (h *headerMap) valueOrEmpty(key string) string {
	if h == nil {
		return ""
	}
	return h.value(key)
}

func (g *Gateway) serveStream(w http.ResponseWriter, s *stream) {
	r := s.r
	// --- codec
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		// http_protocol_options.accept_http_10 is off by default.
		g.localReply(w, s, http.StatusUpgradeRequired, "", nil)
		return
	}
	h, status := g.requestHeaders(r)
	if status != 0 {
		g.localReply(w, s, status, http.StatusText(status), nil)
		return
	}
	s.h = h

	// --- HTTP connection manager
	if r.Method == http.MethodConnect || isUpgrade(r) {
		// No upgrade_configs: Envoy refuses upgrades and CONNECT.
		g.localReply(w, s, http.StatusForbidden, "", nil)
		return
	}
	path := h.value(":path")
	if !strings.HasPrefix(path, "/") {
		// Only relative paths are routed (downstream_rq_non_relative_path).
		g.localReply(w, s, http.StatusNotFound, "", nil)
		return
	}
	if strings.Contains(path, "#") {
		// http_reject_path_with_fragment.
		g.localReply(w, s, http.StatusBadRequest, "", nil)
		return
	}
	path, ok := g.normalizePath(path)
	if !ok {
		g.localReply(w, s, http.StatusBadRequest, "", nil)
		return
	}
	h.set(":path", path)
	g.mutateRequestHeaders(h, r)

	// --- routing
	vh, rt := g.cfg.routes.findRoute(h)
	if rt == nil {
		// No route: ext_authz skips the check and the router answers 404.
		s.flags = flagNoRoute
		g.localReply(w, s, http.StatusNotFound, "", nil)
		return
	}
	s.route = rt

	// --- ext_authz
	if g.cfg.authz != nil {
		disabled, ctxExt := authzSettings(vh, rt)
		if !disabled && !g.check(w, s, ctxExt) {
			return
		}
	}

	// --- router
	for _, k := range rt.requestHeadersToRemove {
		h.remove(k)
	}
	if rt.direct != nil {
		g.localReply(w, s, rt.direct.status, rt.direct.body, rt.responseHeadersToAdd)
		return
	}
	g.proxy(w, s)
}

// requestHeaders builds Envoy's request header map from what the codec
// received: pseudo-headers first, then the headers with lowercase names,
// without connection-specific ones. A non-zero status rejects the request.
func (g *Gateway) requestHeaders(r *http.Request) (*headerMap, int) {
	h := &headerMap{}
	h.add(":authority", r.Host)
	h.add(":path", requestPath(r))
	h.add(":method", r.Method)
	h.add(":scheme", "http")
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		names = append(names, k)
	}
	slices.Sort(names)
	hopByHop := connectionHeaders(r.Header)
	for _, k := range names {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "_") {
			switch g.cfg.hcm.underscores {
			case corev3.HttpProtocolOptions_REJECT_REQUEST:
				return nil, http.StatusBadRequest
			case corev3.HttpProtocolOptions_DROP_HEADER:
				continue
			}
		}
		if hopByHop[lk] {
			continue
		}
		if lk == "expect" && strings.EqualFold(r.Header.Get(k), "100-continue") {
			// proxy_100_continue is off: Envoy answers the 100 itself and
			// drops the header; Go's server sends the 100 when the body is read.
			continue
		}
		if lk == "te" {
			// Only "te: trailers" survives (HCM mutateRequestHeaders).
			if slices.ContainsFunc(r.Header[k], hasTrailersToken) {
				h.add("te", "trailers")
			}
			continue
		}
		for _, v := range r.Header[k] {
			h.add(lk, v)
		}
	}
	return h, 0
}

// hasTrailersToken reports whether a TE header value lists "trailers".
func hasTrailersToken(v string) bool {
	for _, f := range strings.Split(v, ",") {
		f, _, _ = strings.Cut(f, ";")
		if strings.EqualFold(strings.TrimSpace(f), "trailers") {
			return true
		}
	}
	return false
}

// requestPath is the request target as :path: the origin form as sent, or
// the path and query of an absolute-form target (allow_absolute_url).
func requestPath(r *http.Request) string {
	p := r.RequestURI
	if strings.HasPrefix(p, "/") || r.Method == http.MethodConnect {
		return p
	}
	if u, err := url.Parse(p); err == nil && u.Scheme != "" && u.Host != "" {
		rest := strings.TrimPrefix(p, u.Scheme+"://"+u.Host)
		if rest == p {
			return p
		}
		if rest == "" || rest[0] == '?' {
			rest = "/" + rest
		}
		return rest
	}
	return p
}

// connectionHeaders returns the lowercase names Envoy drops as
// connection-specific: the standard hop-by-hop headers and any named in
// Connection.
func connectionHeaders(hdr http.Header) map[string]bool {
	m := map[string]bool{
		"connection": true, "keep-alive": true, "proxy-connection": true,
		"transfer-encoding": true, "upgrade": true,
	}
	for _, v := range hdr.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			if f = strings.ToLower(strings.TrimSpace(f)); f != "" && f != "te" {
				m[f] = true
			}
		}
	}
	return m
}

func isUpgrade(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.Header.Get("Upgrade") == "" {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "upgrade") {
				return true
			}
		}
	}
	return false
}

// normalizePath applies path_with_escaped_slashes_action, normalize_path
// and merge_slashes in Envoy's order; ok is false when the request must
// be rejected with 400.
func (g *Gateway) normalizePath(p string) (string, bool) {
	if g.cfg.hcm.escapedSlashes != hcmv3.HttpConnectionManager_KEEP_UNCHANGED {
		unescaped, found := unescapeSlashes(p)
		if found {
			if g.cfg.hcm.escapedSlashes == hcmv3.HttpConnectionManager_REJECT_REQUEST {
				return "", false
			}
			p = unescaped // UNESCAPE_AND_FORWARD
		}
	}
	if g.cfg.hcm.normalizePath {
		var ok bool
		if p, ok = canonicalizePath(p); !ok {
			return "", false
		}
	}
	if g.cfg.hcm.mergeSlashes {
		p = mergeSlashes(p)
	}
	return p, true
}

// mutateRequestHeaders is ConnectionManagerUtility::mutateRequestHeaders
// for an edge proxy (use_remote_address: true) where no client address is
// internal (Envoy 1.33 and later without internal_address_config).
func (g *Gateway) mutateRequestHeaders(h *headerMap, r *http.Request) {
	ip := remoteIP(r)
	// The client is external: its Envoy-internal headers are not trusted.
	// Envoy strips a fixed list of them; the gateway strips every x-envoy-*.
	h.removeIf(func(k string) bool { return strings.HasPrefix(k, "x-envoy-") })
	if xff, ok := h.joined("x-forwarded-for"); ok && xff != "" {
		h.set("x-forwarded-for", xff+","+ip)
	} else {
		h.set("x-forwarded-for", ip)
	}
	h.set("x-forwarded-proto", "http")
	h.set("x-envoy-external-address", ip)
	if g.cfg.hcm.generateRequestID && (!h.has("x-request-id") || !g.cfg.hcm.preserveExternalRequestID) {
		h.set("x-request-id", uuid.NewString())
	}
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func localAddr(r *http.Request) net.Addr {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a
	}
	return &net.TCPAddr{}
}

func remoteAddr(r *http.Request) net.Addr {
	if ap, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		return ap
	}
	return &net.TCPAddr{}
}

// check runs the ext_authz filter; it reports whether the request goes on
// to the router, having answered the client itself otherwise.
func (g *Gateway) check(w http.ResponseWriter, s *stream, ctxExt map[string]string) bool {
	af := g.cfg.authz
	req := newCheckRequest(s.h, remoteAddr(s.r), localAddr(s.r), protocolString(s.r), s.id, s.start, ctxExt)
	ctx, endSpan := g.startAuthzCall(s.r.Context(), s)
	resp, err := g.callAuthz(ctx, req)
	var res checkResult
	if err != nil {
		res = checkResult{outcome: checkError, detail: err.Error()}
	} else {
		res = interpret(resp, af.validateMutations)
	}
	endSpan(res)
	s.authz = res.outcome.String()
	switch res.outcome {
	case checkOK:
		g.stats.authz[authzOK].Inc()
		for _, m := range res.requestMutations {
			m.apply(s.h)
		}
		for _, k := range res.headersToRemove {
			if isRemovableHeader(k) {
				s.h.remove(k)
			}
		}
		s.responseMutations = res.responseMutations
		return true
	case checkDenied:
		g.stats.authz[authzDenied].Inc()
		g.log.Debug("ext_authz denied", "detail", res.detail, "status", res.status)
		s.flags = flagAuthzDenied
		g.localReply(w, s, res.status, res.body, res.localMutations)
		return false
	case checkInvalid:
		g.stats.authz[authzInvalid].Inc()
		g.log.Warn("ext_authz response rejected", "detail", res.detail)
		g.localReply(w, s, http.StatusInternalServerError, "", nil)
		return false
	default: // checkError
		g.stats.authz[authzError].Inc()
		if af.failureModeAllow {
			g.stats.authz[authzFailureModeAllowed].Inc()
			g.log.Warn("ext_authz failed; allowing the request (failure_mode_allow)", "err", res.detail)
			s.authz = "error-allowed"
			return true
		}
		g.log.Warn("ext_authz failed; failing closed", "err", res.detail, "status", af.statusOnError)
		g.localReply(w, s, af.statusOnError, "", nil)
		return false
	}
}

// callAuthz makes the Check call as Envoy's envoy_grpc client does: a
// request on the authz cluster, within the filter's timeout and the
// cluster's circuit breakers (an overflow is an error like any other
// failed call, so status_on_error answers it).
func (g *Gateway) callAuthz(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	u := g.clusters[g.cfg.authz.cluster]
	ctx, cancel := context.WithTimeout(ctx, g.cfg.authz.timeout)
	defer cancel()
	if err := u.breaker.acquire(ctx, nil); err != nil {
		if errors.Is(err, errOverflow) {
			g.stats.overflows.WithLabelValues(u.cfg.name).Inc()
		}
		return nil, err
	}
	defer u.breaker.release()
	u.reconnectIfFailed()
	endpoint := u.cfg.endpoints[0] // gRPC balances itself; per-host counts go to the first
	g.stats.upstreamSent(u, endpoint)
	resp, err := g.authz.Check(ctx, req)
	switch {
	case err == nil || status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded:
		g.stats.upstreamStatus(u, endpoint, http.StatusOK) // gRPC answers in HTTP 200
	case status.Code(err) == codes.DeadlineExceeded:
		g.stats.timeouts.WithLabelValues(u.cfg.name).Inc()
		g.stats.upstreamStatus(u, endpoint, http.StatusGatewayTimeout)
	default:
		g.stats.upstreamStatus(u, endpoint, http.StatusServiceUnavailable)
	}
	return resp, err
}

// codecReply answers a request the connection refused (codecConn): for
// Envoy's HTTP/1 codec the status and its text, and the connection closes
// (ServerConnectionImpl::sendProtocolError, then the connection manager's
// handleCodecError); for request_headers_timeout 408 and closing too, the
// request never having completed.
func (g *Gateway) codecReply(w http.ResponseWriter, s *stream, e *codecError) {
	if e != errRequestHeaderTimeout {
		s.flags = flagDownstreamProtocolError
	}
	body := e.body
	if body == "" {
		body = http.StatusText(e.status)
	}
	s.closeConnection = true
	g.localReply(w, s, e.status, body, nil)
}

// localReply answers the client from the gateway (Envoy's sendLocalReply):
// the mutations (a route's response_headers_to_add, or a denial's headers)
// apply first, then content-length and, for a body without one, a
// text/plain content-type. A 400 closes an HTTP/1 connection, as Envoy's
// connection manager treats it as a messaging error
// (ActiveStream::onLocalReply).
func (g *Gateway) localReply(w http.ResponseWriter, s *stream, status int, body string, mutations []headerMutation) {
	hdr := w.Header()
	clear(hdr)
	for _, m := range mutations {
		m.applyHTTP(hdr)
	}
	g.finalizeResponse(hdr, s)
	if s.r.ProtoMajor == 1 && (s.closeConnection || status == http.StatusBadRequest) {
		hdr.Set("Connection", "close")
	}
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	if body != "" && hdr.Get("Content-Type") == "" {
		hdr.Set("Content-Type", "text/plain")
	}
	if body == "" {
		hdr["Content-Type"] = nil // no sniffing
	}
	s.status = status
	w.WriteHeader(status)
	if s.r.Method != http.MethodHead {
		io.WriteString(w, body)
	}
}

// finalizeResponse applies the encoder side shared by every response:
// ext_authz's saved response_headers_to_add, then the HCM's server header
// (server_header_transformation OVERWRITE).
func (g *Gateway) finalizeResponse(hdr http.Header, s *stream) {
	for _, m := range s.responseMutations {
		m.applyHTTP(hdr)
	}
	hdr.Set("Server", "envoy")
}
