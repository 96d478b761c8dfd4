package authz

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Protocols a check arrives by, for the latency histogram.
const (
	protoGRPC = iota
	protoHTTP
	numProtocols
)

var protocolNames = [numProtocols]string{protoGRPC: "grpc", protoHTTP: "http"}

// metrics are authz's Prometheus metrics. The per-check series are
// resolved once here, so a check does no label lookups.
type metrics struct {
	checks      [numReasons]prometheus.Counter
	latency     [numProtocols][numOutcomes]prometheus.Observer
	fetches     *prometheus.CounterVec
	refetches   *prometheus.CounterVec
	keys        prometheus.Gauge
	refused     prometheus.Gauge
	lastSuccess prometheus.Gauge
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
	logsDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, cacheLen func() int) *metrics {
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_authz_checks_total",
		Help: "Authorization checks, by decision (allow, deny) and reason.",
	}, []string{"decision", "reason"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tollgate_authz_check_duration_seconds",
		Help:    "Time to decide a check, by protocol (grpc, http) and decision.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
	}, []string{"protocol", "decision"})
	m := &metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_authz_jwks_fetches_total",
			Help: "JWKS fetches, by result (ok, not_modified, error).",
		}, []string{"result"}),
		refetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_authz_jwks_refetches_total",
			Help: "Early JWKS fetches asked for by a token with an unknown kid, by result (fetched, rate_limited).",
		}, []string{"result"}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_authz_jwks_keys",
			Help: "Verification keys loaded from the JWKS.",
		}),
		refused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_authz_jwks_refused_keys",
			Help: "Keys in the last fetched JWKS that were refused as unsafe or unusable.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_authz_jwks_last_success_timestamp_seconds",
			Help: "Unix time of the last successful JWKS fetch.",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_authz_token_cache_hits_total",
			Help: "Checks answered from the verified-token cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_authz_token_cache_misses_total",
			Help: "Checks whose token was not in the verified-token cache.",
		}),
		logsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_authz_decision_logs_dropped_total",
			Help: "Decision log lines dropped because the log buffer was full.",
		}),
	}
	for r := range numReasons {
		m.checks[r] = checks.WithLabelValues(r.outcome().String(), r.String())
	}
	for p := range numProtocols {
		for o := range numOutcomes {
			m.latency[p][o] = latency.WithLabelValues(protocolNames[p], o.String())
		}
	}
	for _, r := range []string{"ok", "not_modified", "error"} {
		m.fetches.WithLabelValues(r)
	}
	for _, r := range []string{"fetched", "rate_limited"} {
		m.refetches.WithLabelValues(r)
	}
	reg.MustRegister(checks, latency, m.fetches, m.refetches, m.keys, m.refused, m.lastSuccess, m.cacheHits, m.cacheMisses, m.logsDropped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_authz_token_cache_entries",
			Help: "Entries in the verified-token cache.",
		}, func() float64 { return float64(cacheLen()) }),
	)
	return m
}
