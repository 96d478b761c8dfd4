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
	keysRefused *prometheus.CounterVec
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter

	revocationFetches *prometheus.CounterVec
	// configReloads counts configuration file reloads by result (ok,
	// error); an error keeps the last good configuration.
	configReloads *prometheus.CounterVec
	logsDropped   prometheus.Counter
}

// revocationGauges reports the revocation list's age in seconds (-1:
// never fetched, or no feed) and its token and subject entries.
func (s *Server) revocationGauges() (age float64, tokens, subjects int) {
	if s.revocations == nil {
		return -1, 0, 0
	}
	set := s.revocations.set()
	a, ok := s.revocations.age()
	if !ok {
		return -1, len(set.tokens), len(set.subjects)
	}
	return a.Seconds(), len(set.tokens), len(set.subjects)
}

func newMetrics(reg prometheus.Registerer, cacheLen func() int, revGauges func() (float64, int, int)) *metrics {
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
		keysRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_authz_jwks_keys_refused_total",
			Help: "Keys refused in fetched JWKS documents (each fetch counts again), by reason (private_key, weak_key, unusable). Any private_key means the issuer's key has leaked.",
		}, []string{"reason"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_authz_token_cache_hits_total",
			Help: "Checks answered from the verified-token cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_authz_token_cache_misses_total",
			Help: "Checks whose token was not in the verified-token cache.",
		}),
		revocationFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_authz_revocation_fetches_total",
			Help: "Revocation feed fetches, by result (ok, not_modified, error).",
		}, []string{"result"}),
	}
	for _, r := range []string{"ok", "not_modified", "error"} {
		m.revocationFetches.WithLabelValues(r)
	}
	m.configReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_authz_config_reloads_total",
		Help: "Configuration file reloads, by result (ok, error). An error means the changed file was refused and the last good configuration stays.",
	}, []string{"result"})
	for _, r := range []string{"ok", "error"} {
		m.configReloads.WithLabelValues(r)
	}
	m.logsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_authz_decision_logs_dropped_total",
		Help: "Decision log lines dropped because the log buffer was full.",
	})
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
	for _, r := range []string{refusedPrivate, refusedWeak, refusedUnusable} {
		m.keysRefused.WithLabelValues(r)
	}
	reg.MustRegister(checks, latency, m.fetches, m.refetches, m.keysRefused, m.cacheHits, m.cacheMisses, m.configReloads, m.logsDropped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_authz_token_cache_entries",
			Help: "Entries in the verified-token cache.",
		}, func() float64 { return float64(cacheLen()) }),
		m.revocationFetches,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_authz_revocations_age_seconds",
			Help: "Seconds since the revocation feed was last fetched successfully; -1 before the first fetch or without a feed.",
		}, func() float64 { a, _, _ := revGauges(); return a }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_authz_revoked_tokens",
			Help: "Revoked tokens (iss + jti) in the deny list.",
		}, func() float64 { _, n, _ := revGauges(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_authz_revoked_subjects",
			Help: "Subjects with a not-before time (iss + sub) in the deny list.",
		}, func() float64 { _, _, n := revGauges(); return float64(n) }),
	)
	return m
}

// The per-issuer key set gauges, read from the trusted issuers' key
// sources at each scrape, so an issuer that leaves the configuration
// leaves the metrics with it.
var (
	jwksKeysDesc = prometheus.NewDesc("tollgate_authz_jwks_keys",
		"Verification keys loaded from the issuer's JWKS.", []string{"issuer"}, nil)
	jwksRefusedDesc = prometheus.NewDesc("tollgate_authz_jwks_refused_keys",
		"Keys in the issuer's last fetched JWKS that were refused as unsafe or unusable.", []string{"issuer"}, nil)
	jwksLastSuccessDesc = prometheus.NewDesc("tollgate_authz_jwks_last_success_timestamp_seconds",
		"Unix time of the last successful fetch of the issuer's JWKS (0 before the first).", []string{"issuer"}, nil)
)

// jwksCollector reports the key set gauges of every trusted issuer, by
// the issuer's name in the configuration.
type jwksCollector struct{ s *Server }

func (jwksCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jwksKeysDesc
	ch <- jwksRefusedDesc
	ch <- jwksLastSuccessDesc
}

func (c jwksCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.state.Load()
	if st == nil {
		return
	}
	for name, ti := range st.byName {
		src := ti.src
		n := 0
		if ks := src.keys(); ks != nil {
			n = ks.len()
		}
		var last float64
		if t := src.loadedAt.Load(); t != 0 {
			last = float64(t) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(jwksKeysDesc, prometheus.GaugeValue, float64(n), name)
		ch <- prometheus.MustNewConstMetric(jwksRefusedDesc, prometheus.GaugeValue, float64(src.refused.Load()), name)
		ch <- prometheus.MustNewConstMetric(jwksLastSuccessDesc, prometheus.GaugeValue, last, name)
	}
}
