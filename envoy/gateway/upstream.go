package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

var resolverSeq atomic.Uint64

// maxReconnectDelay caps the gRPC client's wait between connection
// attempts while no request asks for one (see reconnectIfFailed).
const maxReconnectDelay = time.Second

// newUpstream prepares the client side of a cluster: an HTTP/1.1
// transport, or for an HTTP/2 cluster a gRPC connection that balances
// round robin over the endpoints and sends the cluster name as
// :authority, as Envoy's envoy_grpc client does.
func newUpstream(cc *clusterConfig) (*upstream, error) {
	u := &upstream{cfg: cc, breaker: newBreaker(cc.name, cc.limits, cc.http2),
		hostRq: hostCounters(cc.endpoints), hostErr: hostCounters(cc.endpoints)}
	// Envoy marks a host failed until its first active health check passes.
	u.hcFailed.Store(len(cc.healthChecks) > 0)
	if !cc.http2 {
		d := &net.Dialer{Timeout: cc.connectTimeout, KeepAlive: 30 * time.Second}
		u.transport = &http.Transport{
			DialContext:         d.DialContext,
			MaxConnsPerHost:     u.breaker.connections(),
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     defaultIdleTimeout,
			DisableCompression:  true, // pass accept-encoding and bodies through untouched
			ForceAttemptHTTP2:   false,
		}
		return u, nil
	}
	r := manual.NewBuilderWithScheme(fmt.Sprintf("tollgate-gateway-%d", resolverSeq.Add(1)))
	addrs := make([]resolver.Address, len(cc.endpoints))
	for i, e := range cc.endpoints {
		addrs[i] = resolver.Address{Addr: e}
	}
	r.InitialState(resolver.State{Addresses: addrs})
	conn, err := grpc.NewClient(r.Scheme()+":///"+cc.name,
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(cc.name),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxReconnectDelay},
			MinConnectTimeout: cc.connectTimeout,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cc.name, err)
	}
	u.conn = conn
	return u, nil
}

// reconnectIfFailed makes a request that finds the cluster's connection
// failed try a new one at once. Envoy's connection pool opens a connection
// for a request that finds none ready, with no backoff between requests;
// grpc-go would otherwise wait out its reconnect backoff, and a request
// meanwhile fails although the server may be back.
func (u *upstream) reconnectIfFailed() {
	if u.conn.GetState() == connectivity.TransientFailure {
		u.conn.ResetConnectBackoff()
	}
}

// runHealthCheck is Envoy's active gRPC health check for a cluster
// (grpc.health.v1.Health/Check with service_name, healthy only when
// SERVING). Its result is logged and nothing else: with one endpoint and
// Envoy's default panic threshold, Envoy still sends requests to a host
// that fails its checks, and so does the gateway.
func runHealthCheck(ctx context.Context, log *slog.Logger, u *upstream, hc healthCheckConfig) {
	client := healthpb.NewHealthClient(u.conn)
	healthy, streak := false, 0
	first := true
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, hc.timeout)
		resp, err := client.Check(cctx, &healthpb.HealthCheckRequest{Service: hc.serviceName})
		cancel()
		if ctx.Err() != nil {
			return
		}
		ok := err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
		if ok == healthy {
			streak = 0
		} else {
			streak++
			threshold := hc.unhealthyThreshold
			if ok {
				threshold = hc.healthyThreshold
			}
			// A host starts unhealthy and turns healthy on its first pass.
			if streak >= threshold || (first && ok) {
				healthy, streak = ok, 0
				u.hcFailed.Store(!healthy)
				reason := ""
				if err != nil {
					reason = err.Error()
				} else if !ok {
					reason = strings.ToLower(resp.GetStatus().String())
				}
				log.Info("health check", "cluster", u.cfg.name, "healthy", healthy, "reason", reason)
			}
		}
		first = false
		t.Reset(hc.interval)
	}
}
