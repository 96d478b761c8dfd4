package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// stats are the Envoy statistics the gateway emulates, under Envoy's
// Prometheus names and tags (envoy/README.md lists them).
type stats struct {
	prefix string // the HCM's stat_prefix

	downstreamRq *prometheus.CounterVec // envoy_http_downstream_rq_total
	downstreamXX *prometheus.CounterVec // envoy_http_downstream_rq_xx
	upstreamRq   *prometheus.CounterVec // envoy_cluster_upstream_rq_total
	upstreamXX   *prometheus.CounterVec // envoy_cluster_upstream_rq_xx
	timeouts     *prometheus.CounterVec // envoy_cluster_upstream_rq_timeout
	overflows    *prometheus.CounterVec // envoy_cluster_upstream_rq_pending_overflow
	authz        [numAuthzStats]prometheus.Counter
}

// ext_authz filter stats (http.<stat_prefix>.ext_authz.*).
const (
	authzOK = iota
	authzDenied
	authzError
	authzFailureModeAllowed
	authzInvalid
	numAuthzStats
)

var authzStatNames = [numAuthzStats]string{"ok", "denied", "error", "failure_mode_allowed", "invalid"}

func newStats(reg *prometheus.Registry, prefix string, clusters []string) *stats {
	hcmTag := []string{"envoy_http_conn_manager_prefix"}
	clTag := []string{"envoy_cluster_name"}
	s := &stats{
		prefix: prefix,
		downstreamRq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_http_downstream_rq_total",
			Help: "Requests the listener received."}, hcmTag),
		downstreamXX: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_http_downstream_rq_xx",
			Help: "Responses to downstream requests, by status class."}, []string{"envoy_response_code_class", "envoy_http_conn_manager_prefix"}),
		upstreamRq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_cluster_upstream_rq_total",
			Help: "Requests sent to the cluster."}, clTag),
		upstreamXX: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_cluster_upstream_rq_xx",
			Help: "Upstream responses, by status class (a timeout counts 504, a reset 503)."}, []string{"envoy_response_code_class", "envoy_cluster_name"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_cluster_upstream_rq_timeout",
			Help: "Requests that timed out waiting for the upstream's response."}, clTag),
		overflows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_cluster_upstream_rq_pending_overflow",
			Help: "Requests shed by the cluster's circuit breakers (max_pending_requests, max_requests)."}, clTag),
	}
	reg.MustRegister(s.downstreamRq, s.downstreamXX, s.upstreamRq, s.upstreamXX, s.timeouts, s.overflows)
	for i, name := range authzStatNames {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_http_ext_authz_" + name,
			Help: "ext_authz filter checks answered " + name + "."}, hcmTag)
		reg.MustRegister(c)
		s.authz[i] = c.WithLabelValues(prefix)
	}
	s.downstreamRq.WithLabelValues(prefix)
	for _, cl := range clusters {
		s.upstreamRq.WithLabelValues(cl)
		s.overflows.WithLabelValues(cl)
		s.timeouts.WithLabelValues(cl)
	}
	return s
}

func codeClass(status int) string { return strconv.Itoa(status / 100) }

// downstream counts one answered request.
func (s *stats) downstream(status int) {
	s.downstreamRq.WithLabelValues(s.prefix).Inc()
	if status > 0 {
		s.downstreamXX.WithLabelValues(codeClass(status), s.prefix).Inc()
	}
}

// upstreamSent counts a request sent to cluster u, also per host.
func (s *stats) upstreamSent(u *upstream, endpoint string) {
	s.upstreamRq.WithLabelValues(u.cfg.name).Inc()
	if c := u.hostRq[endpoint]; c != nil {
		c.Add(1)
	}
}

// upstreamStatus counts an upstream response (or the status charged for
// a timeout or reset) of cluster u.
func (s *stats) upstreamStatus(u *upstream, endpoint string, status int) {
	s.upstreamXX.WithLabelValues(codeClass(status), u.cfg.name).Inc()
	if status >= 500 {
		if c := u.hostErr[endpoint]; c != nil {
			c.Add(1)
		}
	}
}

// hostCounters are per-endpoint request counts for /clusters.
func hostCounters(endpoints []string) map[string]*atomic.Uint64 {
	m := make(map[string]*atomic.Uint64, len(endpoints))
	for _, e := range endpoints {
		m[e] = new(atomic.Uint64)
	}
	return m
}

// adminHandler is the part of Envoy's admin interface the gateway has:
// GET /ready ("LIVE" while serving), /stats/prometheus, /clusters and
// /config_dump.
func (g *Gateway) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		if g.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "DRAINING\n")
			return
		}
		io.WriteString(w, "LIVE\n")
	})
	mux.Handle("GET /stats/prometheus", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /clusters", g.serveClusters)
	mux.HandleFunc("GET /config_dump", g.serveConfigDump)
	return mux
}

// serveClusters prints every cluster as Envoy's /clusters does: its
// circuit breaker limits, then one NAME::HOST:PORT::STAT::VALUE line per
// host stat, health_flags "healthy" or "/failed_active_hc".
func (g *Gateway) serveClusters(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	names := make([]string, 0, len(g.clusters))
	for n := range g.clusters {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		u := g.clusters[n]
		l := u.cfg.limits
		fmt.Fprintf(w, "%s::observability_name::%s\n", n, n)
		fmt.Fprintf(w, "%s::default_priority::max_connections::%d\n", n, l.maxConnections)
		fmt.Fprintf(w, "%s::default_priority::max_pending_requests::%d\n", n, l.maxPendingRequests)
		fmt.Fprintf(w, "%s::default_priority::max_requests::%d\n", n, l.maxRequests)
		fmt.Fprintf(w, "%s::default_priority::max_retries::%d\n", n, l.maxRetries)
		fmt.Fprintf(w, "%s::added_via_api::false\n", n)
		flags := "healthy"
		if u.hcFailed.Load() {
			flags = "/failed_active_hc"
		}
		for _, e := range u.cfg.endpoints {
			fmt.Fprintf(w, "%s::%s::rq_total::%d\n", n, e, u.hostRq[e].Load())
			fmt.Fprintf(w, "%s::%s::rq_error::%d\n", n, e, u.hostErr[e].Load())
			fmt.Fprintf(w, "%s::%s::health_flags::%s\n", n, e, flags)
			fmt.Fprintf(w, "%s::%s::weight::1\n", n, e)
		}
	}
}

// serveConfigDump answers the loaded bootstrap as Envoy's /config_dump
// does: a ConfigDump whose one config is a BootstrapConfigDump.
func (g *Gateway) serveConfigDump(w http.ResponseWriter, r *http.Request) {
	bd, err := anypb.New(&adminv3.BootstrapConfigDump{Bootstrap: g.bootstrap, LastUpdated: timestamppb.New(g.loaded)})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// Envoy prints proto field names; protojson's spacing is unstable on
	// purpose, so the output is indented again for readers and diffs.
	out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(&adminv3.ConfigDump{Configs: []*anypb.Any{bd}})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "  "); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	buf.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	w.Write(buf.Bytes())
}

// keepBootstrap records what /config_dump shows.
func (g *Gateway) keepBootstrap(b *bootstrapv3.Bootstrap) {
	g.bootstrap = b
	g.loaded = time.Now()
}
