package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// thresholds are a cluster's circuit breaker limits for the default
// routing priority (CircuitBreakers.Thresholds).
type thresholds struct {
	maxConnections     int
	maxPendingRequests int
	maxRequests        int
	// maxRetries is accepted and kept, but never reached: the gateway
	// does not retry.
	maxRetries int
}

// defaultThresholds are Envoy's limits for a priority without Thresholds.
var defaultThresholds = thresholds{maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3}

// compileThresholds picks the first Thresholds of the default priority,
// field by field falling back to Envoy's defaults. Thresholds of the high
// priority are ignored, as Envoy ignores them for routes of the default
// priority, which are the only routes the gateway implements.
func compileThresholds(cb *clusterv3.CircuitBreakers) thresholds {
	t := defaultThresholds
	for _, th := range cb.GetThresholds() {
		if th.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		if v := th.GetMaxConnections(); v != nil {
			t.maxConnections = int(v.GetValue())
		}
		if v := th.GetMaxPendingRequests(); v != nil {
			t.maxPendingRequests = int(v.GetValue())
		}
		if v := th.GetMaxRequests(); v != nil {
			t.maxRequests = int(v.GetValue())
		}
		if v := th.GetMaxRetries(); v != nil {
			t.maxRetries = int(v.GetValue())
		}
		break
	}
	return t
}

// errOverflow is a request refused by a circuit breaker: Envoy's pool
// failure reason Overflow, answered with 503 and response flag UO.
var errOverflow = errors.New("circuit breaker overflow")

// breaker enforces a cluster's circuit breakers the way Envoy's
// connection pools consult its ResourceManager.
//
// For an HTTP/1.1 cluster a request holds one upstream connection for its
// whole exchange, so the breaker counts connections in use by requests:
// while fewer than max_connections are in use a request is dispatched at
// once, provided fewer than max_requests are active
// (attachStreamToClient); otherwise it waits as a pending request, unless
// max_pending_requests are already waiting (newStreamImpl), and when a
// connection frees up the first waiter is dispatched under the same
// max_requests check. For an HTTP/2 cluster every request is a stream on
// a shared connection, so only max_requests applies.
type breaker struct {
	cluster string
	limits  thresholds
	http2   bool

	mu      sync.Mutex
	active  int             // upstream_rq_active
	waiters []chan struct{} // upstream_rq_pending_active, oldest first
}

func newBreaker(cluster string, limits thresholds, http2 bool) *breaker {
	return &breaker{cluster: cluster, limits: limits, http2: http2}
}

// connections is the number of upstream connections requests may hold:
// max_connections, but at least one, since Envoy always lets a host have
// a connection even when the breaker is open.
func (b *breaker) connections() int {
	return max(b.limits.maxConnections, 1)
}

// acquire admits one request to the cluster, waiting while it is pending
// until ctx is done. It returns errOverflow when a circuit breaker is
// open, or ctx's error. On success the caller must call release once the
// exchange is over.
func (b *breaker) acquire(ctx context.Context, onPending func()) error {
	b.mu.Lock()
	if b.http2 || b.active < b.connections() {
		err := b.attachLocked()
		b.mu.Unlock()
		return err
	}
	if len(b.waiters) >= b.limits.maxPendingRequests {
		b.mu.Unlock()
		return fmt.Errorf("cluster %s: %d requests pending (max_pending_requests): %w", b.cluster, len(b.waiters), errOverflow)
	}
	ready := make(chan struct{}, 1)
	b.waiters = append(b.waiters, ready)
	b.mu.Unlock()
	if onPending != nil {
		onPending()
	}
	select {
	case <-ready:
		return b.attachWaiter()
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		for i, w := range b.waiters {
			if w == ready {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				return ctx.Err()
			}
		}
		// Handed a connection just as ctx ended: pass it on.
		b.active--
		b.handOffLocked()
		return ctx.Err()
	}
}

// attachLocked is attachStreamToClient's max_requests check.
func (b *breaker) attachLocked() error {
	if b.active >= b.limits.maxRequests {
		return fmt.Errorf("cluster %s: %d requests active (max_requests): %w", b.cluster, b.active, errOverflow)
	}
	b.active++
	return nil
}

// attachWaiter dispatches a waiter that was handed a free connection.
// If max_requests refuses it, the connection goes to the next waiter, as
// in onUpstreamReady.
func (b *breaker) attachWaiter() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.active-- // the slot handOffLocked reserved
	if err := b.attachLocked(); err != nil {
		b.handOffLocked()
		return err
	}
	return nil
}

// release ends an admitted request's exchange and hands its connection
// to the oldest pending request, if any.
func (b *breaker) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.active--
	b.handOffLocked()
}

// handOffLocked wakes the oldest waiter if a connection is free, holding
// the connection for it until it attaches.
func (b *breaker) handOffLocked() {
	if len(b.waiters) == 0 || b.active >= b.connections() {
		return
	}
	w := b.waiters[0]
	b.waiters = b.waiters[1:]
	b.active++
	w <- struct{}{}
}

// counts returns the active and pending requests, for tests and logs.
func (b *breaker) counts() (active, pending int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.active, len(b.waiters)
}
