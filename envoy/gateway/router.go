package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
)

// upstream is a cluster the gateway can reach.
type upstream struct {
	cfg       *clusterConfig
	next      atomic.Uint64
	breaker   *breaker
	transport *http.Transport  // HTTP/1 clusters
	conn      *grpc.ClientConn // HTTP/2 (gRPC) clusters
	// For the admin /clusters: requests and 5xx answers per endpoint,
	// and whether the active health check failed.
	hostRq, hostErr map[string]*atomic.Uint64
	hcFailed        atomic.Bool
}

// pick returns the next endpoint, round robin (lb_policy ROUND_ROBIN).
func (u *upstream) pick() string {
	n := u.next.Add(1) - 1
	return u.cfg.endpoints[n%uint64(len(u.cfg.endpoints))]
}

// Envoy's local reply bodies for a failed upstream exchange
// (router.cc: onUpstreamTimeoutAbort, onUpstreamReset).
const (
	bodyUpstreamTimeout = "upstream request timeout"
	bodyResetPrefix     = "upstream connect error or disconnect/reset before headers. reset reason: "
	bodyOverflow        = bodyResetPrefix + "overflow"
)

// Response flags, as in Envoy's access log (%RESPONSE_FLAGS%).
const (
	flagNoRoute               = "NR"
	flagAuthzDenied           = "UAEX"
	flagUpstreamTimeout       = "UT"
	flagUpstreamOverflow      = "UO"
	flagConnectionFailure     = "UF"
	flagConnectionTermination = "UC"
	flagDownstreamTermination = "DC"
)

// errRouteTimeout is the cause of a request context the route timeout
// ended.
var errRouteTimeout = errors.New("route timeout")

// routeTimer is the router's global timeout (RouteAction.timeout). Envoy
// arms it when the whole downstream request has reached the router
// (onRequestComplete) and it covers the upstream response up to its last
// byte; on expiry the upstream request is reset.
type routeTimer struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timeout time.Duration
	once    sync.Once
	timer   *time.Timer // set inside once
	fired   atomic.Bool
}

func newRouteTimer(parent context.Context, timeout time.Duration) *routeTimer {
	ctx, cancel := context.WithCancelCause(parent)
	return &routeTimer{ctx: ctx, cancel: cancel, timeout: timeout}
}

// start arms the timer; later calls do nothing. A timeout of 0 never
// fires.
func (t *routeTimer) start() {
	t.once.Do(func() {
		if t.timeout <= 0 {
			return
		}
		t.timer = time.AfterFunc(t.timeout, func() {
			t.fired.Store(true)
			t.cancel(errRouteTimeout)
		})
	})
}

// stop disarms the timer and releases the context.
func (t *routeTimer) stop() {
	t.once.Do(func() {}) // no start after this; t.timer is settled
	if t.timer != nil {
		t.timer.Stop()
	}
	t.cancel(context.Canceled)
}

// timedOut reports whether the timeout ended the exchange.
func (t *routeTimer) timedOut() bool { return t.fired.Load() }

// eofBody calls onEOF when the downstream request body has been read to
// its end: the moment Envoy's router sees end_stream.
type eofBody struct {
	io.ReadCloser
	onEOF func()
}

func (b *eofBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.onEOF()
	}
	return n, err
}

// proxy is the router forwarding the request to the route's cluster,
// streaming both ways, under the route timeout and the cluster's circuit
// breakers.
func (g *Gateway) proxy(w http.ResponseWriter, s *stream) {
	u := g.clusters[s.route.cluster]
	endpoint := u.pick()
	h := s.h
	target, err := upstreamURL(endpoint, h.value(":path"))
	if err != nil {
		g.localReply(w, s, http.StatusBadRequest, "", nil)
		return
	}
	rt := newRouteTimer(s.r.Context(), s.route.timeout)
	defer rt.stop()
	defer func() {
		// Also when the timeout reset a response already under way.
		if rt.timedOut() {
			s.flags = flagUpstreamTimeout
		}
	}()
	if s.route.timeout > 0 {
		// finalTimeout tells the upstream how long the router will wait
		// (suppress_envoy_headers is off).
		h.set("x-envoy-expected-rq-timeout-ms", strconv.FormatInt(s.route.timeout.Milliseconds(), 10))
	}
	// A pending request has not started its exchange; the gateway runs the
	// timeout from the moment it starts waiting.
	if err := u.breaker.acquire(rt.ctx, rt.start); err != nil {
		g.upstreamAbort(w, s, u, endpoint, err, rt)
		return
	}
	defer u.breaker.release()
	g.stats.upstreamSent(u, endpoint)

	out := s.r.WithContext(rt.ctx)
	if r := s.r; r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		rt.start() // headers-only request: end_stream with the headers
	} else {
		out.Body = &eofBody{ReadCloser: r.Body, onEOF: rt.start}
	}
	sent := time.Now()
	rp := &httputil.ReverseProxy{
		Transport:     u.transport,
		FlushInterval: -1, // stream
		ErrorLog:      g.proxyLog,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = target
			pr.Out.Host = h.value(":authority")
			pr.Out.Header = h.httpHeader()
			g.injectUpstream(s, pr.Out.Header)
			if _, ok := pr.Out.Header["User-Agent"]; !ok {
				pr.Out.Header["User-Agent"] = []string{""} // no Go default
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			for _, m := range s.route.responseHeadersToAdd {
				m.applyHTTP(resp.Header)
			}
			resp.Header.Set("X-Envoy-Upstream-Service-Time", strconv.FormatInt(time.Since(sent).Milliseconds(), 10))
			g.finalizeResponse(resp.Header, s)
			s.status = resp.StatusCode
			g.stats.upstreamStatus(u, endpoint, resp.StatusCode)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			g.upstreamAbort(w, s, u, endpoint, err, rt)
		},
	}
	// Envoy never makes up a content-type: a nil value stops Go's server
	// from sniffing one when the upstream sent none.
	w.Header()["Content-Type"] = nil
	rp.ServeHTTP(w, out)
}

// upstreamAbort answers a request whose upstream exchange failed before
// any response header reached the client, the way Envoy's router does
// (onUpstreamAbort): a route timeout is 504, a circuit breaker overflow
// 503 with x-envoy-overloaded, a connection failure or reset 503; a
// client that went away gets nothing. A request body the codec refused
// on the way is the codec's 400 instead: Envoy's codec finds it, resets
// the upstream request and answers the client itself.
func (g *Gateway) upstreamAbort(w http.ResponseWriter, s *stream, u *upstream, endpoint string, err error, rt *routeTimer) {
	log := g.log.With("cluster", u.cfg.name, "endpoint", endpoint, "err", err)
	switch {
	case bodyRefused(s.r):
		log.Debug("request body refused by the codec; upstream request reset")
		g.codecReply(w, s, errCodec)
	case rt.timedOut():
		log.Warn("upstream request timed out", "timeout", s.route.timeout)
		g.stats.timeouts.WithLabelValues(u.cfg.name).Inc()
		g.stats.upstreamStatus(u, endpoint, http.StatusGatewayTimeout)
		s.flags = flagUpstreamTimeout
		g.localReply(w, s, http.StatusGatewayTimeout, bodyUpstreamTimeout, s.route.responseHeadersToAdd)
	case s.r.Context().Err() != nil:
		// The client reset or closed its connection; the router resets the
		// upstream request and there is no one to answer.
		log.Debug("downstream closed the request")
		s.flags = flagDownstreamTermination
	case errors.Is(err, errOverflow):
		// Shedding is the breaker working, and comes in floods: the
		// request log line carries UO.
		log.Debug("circuit breaker open; request shed")
		g.stats.overflows.WithLabelValues(u.cfg.name).Inc()
		s.flags = flagUpstreamOverflow
		mutations := append([]headerMutation{{key: "x-envoy-overloaded", value: "true", action: mutAdd}}, s.route.responseHeadersToAdd...)
		g.localReply(w, s, http.StatusServiceUnavailable, bodyOverflow, mutations)
	default:
		log.Warn("upstream request failed")
		g.stats.upstreamStatus(u, endpoint, http.StatusServiceUnavailable)
		flag, reason := upstreamFailure(err)
		s.flags = flag
		g.localReply(w, s, http.StatusServiceUnavailable, bodyResetPrefix+reason, s.route.responseHeadersToAdd)
	}
}

// upstreamURL is the URL whose request-URI is exactly path, sent to
// endpoint.
func upstreamURL(endpoint, path string) (*url.URL, error) {
	p, q := splitQuery(path)
	u := &url.URL{Scheme: "http", Host: endpoint}
	if q != "" {
		u.RawQuery = q[1:]
		u.ForceQuery = q == "?"
	}
	if !strings.HasPrefix(p, "//") {
		u.Opaque = p // sent byte for byte
		return u, nil
	}
	// An opaque "//x" would be written as an absolute URL.
	unescaped, err := url.PathUnescape(p)
	if err != nil {
		return nil, err
	}
	u.Path, u.RawPath = unescaped, p
	return u, nil
}

// upstreamFailure maps a failed connection or exchange to Envoy's reset
// reason and response flag.
func upstreamFailure(err error) (flag, reason string) {
	var ne net.Error
	if errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &ne) && ne.Timeout() {
		return flagConnectionFailure, "connection failure"
	}
	return flagConnectionTermination, "connection termination"
}
