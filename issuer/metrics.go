package issuer

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the issuer's own Prometheus metrics, beside the HTTP ones.
type metrics struct {
	logins        *prometheus.CounterVec
	registrations *prometheus.CounterVec
	rehashes      prometheus.Counter
	keyEvents     *prometheus.CounterVec
	refreshes     *prometheus.CounterVec
	revocations   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Service) *metrics {
	m := &metrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_issuer_logins_total",
			Help: "Login attempts by result: success, failure, no_credentials, throttled, busy.",
		}, []string{"result"}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_issuer_registrations_total",
			Help: "Registration attempts by result: created, invalid, taken, disabled, busy.",
		}, []string{"result"}),
		rehashes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_issuer_password_rehashes_total",
			Help: "Password hashes replaced at login because the hashing parameters changed.",
		}),
		keyEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_issuer_key_events_total",
			Help: "Key directory problems: invalid_file, reload_error.",
		}, []string{"event"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_issuer_refreshes_total",
			Help: "Refresh grants by result: rotated, reused (the session was revoked), invalid.",
		}, []string{"result"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_issuer_revocations_total",
			Help: "Revocations by kind: access_token, refresh_token, logout, user.",
		}, []string{"kind"}),
	}
	published := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_issuer_published_keys",
		Help: "Keys in the published JWKS.",
	}, func() float64 {
		n, _ := s.keys.counts(s.cfg.Now())
		return float64(n)
	})
	canSign := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_issuer_signing_key_available",
		Help: "1 when a key can sign tokens, else 0.",
	}, func() float64 {
		if _, ok := s.keys.counts(s.cfg.Now()); ok {
			return 1
		}
		return 0
	})
	reg.MustRegister(m.logins, m.registrations, m.rehashes, m.keyEvents, m.refreshes, m.revocations, published, canSign)
	return m
}
