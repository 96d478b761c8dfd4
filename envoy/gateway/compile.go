package gateway

import (
	"fmt"
	"net"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ext_authzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tollgate-dev/tollgate/envoy"
)

// compiled is everything the gateway needs from a bootstrap.
type compiled struct {
	listenAddr string
	adminAddr  string // "" when the bootstrap has no admin address
	hcm        hcmSettings
	routes     *routeTable
	authz      *authzFilter   // nil when the HCM has no ext_authz filter
	tracing    *tracingConfig // nil when the HCM has no tracing block
	statPrefix string         // the HCM's stat_prefix
	clusters   map[string]*clusterConfig
}

// hcmSettings are the HttpConnectionManager options the gateway implements.
type hcmSettings struct {
	http2                     bool // codec AUTO: HTTP/1.1 and h2c with prior knowledge
	normalizePath             bool
	mergeSlashes              bool
	escapedSlashes            hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction
	generateRequestID         bool
	preserveExternalRequestID bool
	requestHeadersTimeout     time.Duration
	idleTimeout               time.Duration
	underscores               corev3.HttpProtocolOptions_HeadersWithUnderscoresAction
}

// Envoy defaults the gateway reproduces.
const (
	defaultIdleTimeout  = time.Hour        // common_http_protocol_options.idle_timeout
	defaultRouteTimeout = 15 * time.Second // RouteAction.timeout
	maxRequestHeaders   = 60 << 10         // max_request_headers_kb
)

type clusterConfig struct {
	name           string
	connectTimeout time.Duration
	endpoints      []string // host:port
	http2          bool
	healthChecks   []healthCheckConfig
	limits         thresholds // circuit_breakers, default priority
}

type healthCheckConfig struct {
	timeout, interval  time.Duration
	unhealthyThreshold int
	healthyThreshold   int
	serviceName        string
}

// compile turns a validated, supported bootstrap into the gateway's
// settings, applying opts' overrides.
func compile(b *bootstrapv3.Bootstrap, opts Options) (*compiled, error) {
	c := &compiled{clusters: map[string]*clusterConfig{}}
	if a := b.GetAdmin().GetAddress(); a != nil {
		addr, err := socketAddr(a, "admin.address")
		if err != nil {
			return nil, err
		}
		c.adminAddr = addr
	}
	for i, cl := range b.GetStaticResources().GetClusters() {
		cc, err := compileCluster(cl, fmt.Sprintf("static_resources.clusters[%d]", i))
		if err != nil {
			return nil, err
		}
		c.clusters[cc.name] = cc
	}
	for name, addr := range opts.Endpoints {
		cc, ok := c.clusters[name]
		if !ok {
			return nil, fmt.Errorf("endpoint override for unknown cluster %q", name)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("endpoint override for cluster %q: %w", name, err)
		}
		cc.endpoints = []string{addr}
	}

	listeners := b.GetStaticResources().GetListeners()
	if len(listeners) != 1 {
		return nil, &UnsupportedError{Path: "static_resources.listeners", Reason: fmt.Sprintf("%d listeners; the gateway serves exactly one", len(listeners))}
	}
	l := listeners[0]
	lp := "static_resources.listeners[0]"
	addr, err := socketAddr(l.GetAddress(), lp+".address")
	if err != nil {
		return nil, err
	}
	c.listenAddr = addr
	if len(l.GetFilterChains()) != 1 || len(l.GetFilterChains()[0].GetFilters()) != 1 {
		return nil, &UnsupportedError{Path: lp + ".filter_chains", Reason: "the gateway implements exactly one filter chain with one filter, the http_connection_manager"}
	}
	f := l.GetFilterChains()[0].GetFilters()[0]
	fp := lp + ".filter_chains[0].filters[0].typed_config"
	if f.GetTypedConfig().GetTypeUrl() != envoy.TypeHCM {
		return nil, &UnsupportedError{Path: fp, Reason: "network filter " + f.GetTypedConfig().GetTypeUrl()}
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		return nil, envoy.ConfigErrorf(fp, "%v", err)
	}
	if err := c.compileHCM(hcm, fp+"[HttpConnectionManager]"); err != nil {
		return nil, err
	}
	return c, nil
}

func socketAddr(a *corev3.Address, path string) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", &UnsupportedError{Path: path, Reason: "only socket_address is implemented"}
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)), nil
}

func duration(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

func compileCluster(cl *clusterv3.Cluster, path string) (*clusterConfig, error) {
	cc := &clusterConfig{
		name:           cl.GetName(),
		http2:          envoy.ClusterHTTP2(cl),
		connectTimeout: 5 * time.Second,
		limits:         compileThresholds(cl.GetCircuitBreakers()),
	}
	if ct := cl.GetConnectTimeout(); ct != nil {
		cc.connectTimeout = ct.AsDuration()
	}
	if n := cl.GetLoadAssignment().GetClusterName(); n != "" && n != cl.GetName() {
		return nil, &UnsupportedError{Path: path + ".load_assignment.cluster_name", Reason: fmt.Sprintf("%q differs from the cluster name %q", n, cl.GetName())}
	}
	for i, le := range cl.GetLoadAssignment().GetEndpoints() {
		for j, lb := range le.GetLbEndpoints() {
			addr, err := socketAddr(lb.GetEndpoint().GetAddress(), fmt.Sprintf("%s.load_assignment.endpoints[%d].lb_endpoints[%d].endpoint.address", path, i, j))
			if err != nil {
				return nil, err
			}
			cc.endpoints = append(cc.endpoints, addr)
		}
	}
	if len(cc.endpoints) == 0 {
		return nil, envoy.ConfigErrorf(path+".load_assignment", "cluster %q has no endpoints", cc.name)
	}
	for i, hc := range cl.GetHealthChecks() {
		hp := fmt.Sprintf("%s.health_checks[%d]", path, i)
		g := hc.GetGrpcHealthCheck()
		if g == nil {
			return nil, &UnsupportedError{Path: hp, Reason: "only grpc_health_check is implemented"}
		}
		if !cc.http2 {
			return nil, envoy.ConfigErrorf(hp, "grpc_health_check on cluster %q, which does not speak HTTP/2", cc.name)
		}
		cc.healthChecks = append(cc.healthChecks, healthCheckConfig{
			timeout:            hc.GetTimeout().AsDuration(),
			interval:           hc.GetInterval().AsDuration(),
			unhealthyThreshold: int(hc.GetUnhealthyThreshold().GetValue()),
			healthyThreshold:   int(hc.GetHealthyThreshold().GetValue()),
			serviceName:        g.GetServiceName(),
		})
	}
	return cc, nil
}

func (c *compiled) compileHCM(hcm *hcmv3.HttpConnectionManager, path string) error {
	s := hcmSettings{
		http2:                     hcm.GetCodecType() == hcmv3.HttpConnectionManager_AUTO,
		mergeSlashes:              hcm.GetMergeSlashes(),
		escapedSlashes:            hcm.GetPathWithEscapedSlashesAction(),
		generateRequestID:         true,
		preserveExternalRequestID: hcm.GetPreserveExternalRequestId(),
		requestHeadersTimeout:     duration(hcm.GetRequestHeadersTimeout(), 0),
		idleTimeout:               defaultIdleTimeout,
		underscores:               hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(),
	}
	if v := hcm.GetNormalizePath(); v != nil {
		s.normalizePath = v.GetValue()
	}
	if v := hcm.GetGenerateRequestId(); v != nil {
		s.generateRequestID = v.GetValue()
	}
	if v := hcm.GetCommonHttpProtocolOptions().GetIdleTimeout(); v != nil {
		s.idleTimeout = v.AsDuration()
	}
	if hcm.GetUseRemoteAddress() == nil || !hcm.GetUseRemoteAddress().GetValue() {
		// Without use_remote_address Envoy trusts x-forwarded-for to find
		// the client; the gateway only implements the edge behaviour.
		return &UnsupportedError{Path: path + ".use_remote_address", Reason: "unset or false; only edge mode (true) is implemented"}
	}
	if s.escapedSlashes == hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT {
		s.escapedSlashes = hcmv3.HttpConnectionManager_KEEP_UNCHANGED
	}
	c.hcm = s
	c.statPrefix = hcm.GetStatPrefix()
	if t := hcm.GetTracing(); t != nil {
		tc, err := compileTracing(t, path+".tracing", c.clusters)
		if err != nil {
			return err
		}
		c.tracing = tc
	}

	// HTTP filters: optionally ext_authz, then the router (Validate
	// already made sure the router is last).
	for i, f := range hcm.GetHttpFilters() {
		fp := fmt.Sprintf("%s.http_filters[%d].typed_config", path, i)
		switch f.GetTypedConfig().GetTypeUrl() {
		case envoy.TypeRouter:
		case envoy.TypeExtAuthz:
			if c.authz != nil {
				return &UnsupportedError{Path: fp, Reason: "a second ext_authz filter"}
			}
			ea := &ext_authzv3.ExtAuthz{}
			if err := f.GetTypedConfig().UnmarshalTo(ea); err != nil {
				return envoy.ConfigErrorf(fp, "%v", err)
			}
			af, err := c.compileExtAuthz(f.GetName(), ea, fp+"[ExtAuthz]")
			if err != nil {
				return err
			}
			c.authz = af
		default:
			return &UnsupportedError{Path: fp, Reason: "http filter " + f.GetTypedConfig().GetTypeUrl()}
		}
	}

	rc := hcm.GetRouteConfig()
	if rc == nil {
		return &UnsupportedError{Path: path, Reason: "only an inline route_config is implemented"}
	}
	rp := path + ".route_config"
	c.routes = &routeTable{}
	for i, vh := range rc.GetVirtualHosts() {
		vp := fmt.Sprintf("%s.virtual_hosts[%d]", rp, i)
		v := &virtualHost{name: vh.GetName(), domains: vh.GetDomains()}
		var err error
		if v.authz, err = c.perRoute(vh.GetTypedPerFilterConfig(), vp+".typed_per_filter_config"); err != nil {
			return err
		}
		for j, r := range vh.GetRoutes() {
			p := fmt.Sprintf("%s.routes[%d]", vp, j)
			cr, err := compileRoute(r, p)
			if err != nil {
				return err
			}
			if cr.authz, err = c.perRoute(r.GetTypedPerFilterConfig(), p+".typed_per_filter_config"); err != nil {
				return err
			}
			if cr.cluster != "" && c.clusters[cr.cluster].http2 {
				return &UnsupportedError{Path: p + ".route.cluster", Reason: "proxying to an HTTP/2 cluster"}
			}
			v.routes = append(v.routes, cr)
		}
		c.routes.vhosts = append(c.routes.vhosts, v)
	}
	return nil
}

func (c *compiled) compileExtAuthz(name string, ea *ext_authzv3.ExtAuthz, path string) (*authzFilter, error) {
	g := ea.GetGrpcService()
	if g.GetEnvoyGrpc() == nil {
		return nil, &UnsupportedError{Path: path, Reason: "only grpc_service.envoy_grpc is implemented"}
	}
	af := &authzFilter{
		name:              name,
		cluster:           g.GetEnvoyGrpc().GetClusterName(),
		timeout:           duration(g.GetTimeout(), defaultAuthzTimeout),
		failureModeAllow:  ea.GetFailureModeAllow(),
		statusOnError:     int(ea.GetStatusOnError().GetCode()),
		validateMutations: ea.GetValidateMutations(),
	}
	// toErrorCode: anything outside 100..511, including unset, is 403.
	if af.statusOnError < 100 || af.statusOnError > 511 {
		af.statusOnError = 403
	}
	if af.statusOnError < 200 {
		return nil, &UnsupportedError{Path: path + ".status_on_error", Reason: "a 1xx status cannot be a final response"}
	}
	return af, nil
}

// perRoute compiles the ext_authz entry of a typed_per_filter_config.
// Validate has made sure every key names a configured filter.
func (c *compiled) perRoute(m map[string]*anypb.Any, path string) (*authzPerRoute, error) {
	if c.authz == nil {
		return nil, nil
	}
	a, ok := m[c.authz.name]
	if !ok {
		return nil, nil
	}
	pr := &ext_authzv3.ExtAuthzPerRoute{}
	if err := a.UnmarshalTo(pr); err != nil {
		return nil, envoy.ConfigErrorf(fmt.Sprintf("%s[%q]", path, c.authz.name), "%v", err)
	}
	return &authzPerRoute{
		disabled:          pr.GetDisabled(),
		contextExtensions: pr.GetCheckSettings().GetContextExtensions(),
	}, nil
}
