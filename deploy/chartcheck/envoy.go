package chartcheck

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/tollgate-dev/tollgate/envoy"
)

// EnvoyConfigKey is the ConfigMap key that holds an Envoy bootstrap.
const EnvoyConfigKey = "envoy.yaml"

// EnvoyPod is a pod that runs Envoy with a bootstrap from a ConfigMap.
type EnvoyPod struct {
	Pod
	Envoy     *corev1.Container
	Bootstrap *bootstrapv3.Bootstrap
}

// EnvoyPods finds every pod whose container runs envoy with a bootstrap
// from a rendered ConfigMap, and validates that bootstrap with the same
// function as envoy/envoy.yaml (envoy.ValidateYAML).
func EnvoyPods(objs []Object) ([]EnvoyPod, error) {
	configs := map[string]string{}
	for _, o := range objs {
		if cm, ok := o.Object.(*corev1.ConfigMap); ok {
			if data, ok := cm.Data[EnvoyConfigKey]; ok {
				configs[cm.Name] = data
			}
		}
	}
	var out []EnvoyPod
	var errs []error
	for _, p := range Pods(objs) {
		for _, c := range allContainers(p.Spec) {
			if !isEnvoy(c) {
				continue
			}
			cm, err := envoyConfigMap(p.Spec, c)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: container %s: %w", p, c.Name, err))
				continue
			}
			data, ok := configs[cm]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: container %s: ConfigMap %s with %s is not rendered", p, c.Name, cm, EnvoyConfigKey))
				continue
			}
			bs, err := envoy.ValidateYAML([]byte(data))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: Envoy bootstrap in ConfigMap %s: %w", p, cm, err))
				continue
			}
			out = append(out, EnvoyPod{Pod: p, Envoy: c, Bootstrap: bs})
		}
	}
	return out, errors.Join(errs...)
}

func isEnvoy(c *corev1.Container) bool {
	return len(c.Command) > 0 && (c.Command[0] == "envoy" || strings.HasSuffix(c.Command[0], "/envoy"))
}

// envoyConfigMap returns the ConfigMap mounted where the container's
// --config-path (or -c) points.
func envoyConfigMap(spec *corev1.PodSpec, c *corev1.Container) (string, error) {
	args := append(slices.Clone(c.Command[1:]), c.Args...)
	var path string
	for i, a := range args {
		if (a == "-c" || a == "--config-path") && i+1 < len(args) {
			path = args[i+1]
		}
	}
	if path == "" {
		return "", errors.New("no --config-path argument")
	}
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" || !strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		if strings.TrimPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") != EnvoyConfigKey {
			return "", fmt.Errorf("--config-path %s is not the ConfigMap key %s", path, EnvoyConfigKey)
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				return v.ConfigMap.Name, nil
			}
		}
	}
	return "", fmt.Errorf("--config-path %s is not on a mounted ConfigMap", path)
}

// CheckEnvoyPods cross-checks each Envoy pod with its bootstrap and the
// rendered Services: admin only on loopback; the Envoy container declares
// exactly the listener ports; its readiness probe is answered by Envoy's
// health_check filter on a listener other than the public one; and every
// cluster endpoint is a rendered Service port or, on 127.0.0.1, a port a
// container of the same pod serves.
func CheckEnvoyPods(objs []Object, pods []EnvoyPod, public string) error {
	services := map[string][]int32{}
	for _, o := range objs {
		if svc, ok := o.Object.(*corev1.Service); ok {
			for _, p := range svc.Spec.Ports {
				services[svc.Name] = append(services[svc.Name], p.Port)
			}
		}
	}
	var errs []error
	for _, ep := range pods {
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: envoy: %s", ep.Pod, fmt.Sprintf(format, args...)))
		}
		bs := ep.Bootstrap
		if a := bs.GetAdmin().GetAddress().GetSocketAddress(); a == nil || !net.ParseIP(a.GetAddress()).IsLoopback() {
			fail("admin must listen on loopback, not %v", a)
		}
		listeners := map[int32]*listenerv3.Listener{}
		for _, l := range bs.GetStaticResources().GetListeners() {
			listeners[int32(l.GetAddress().GetSocketAddress().GetPortValue())] = l
		}
		declared := map[int32]bool{}
		for _, cp := range ep.Envoy.Ports {
			declared[cp.ContainerPort] = true
			if listeners[cp.ContainerPort] == nil {
				fail("containerPort %d (%s) is not a listener port", cp.ContainerPort, cp.Name)
			}
		}
		for port, l := range listeners {
			if !declared[port] {
				fail("listener %s on %d has no containerPort", l.GetName(), port)
			}
		}
		rp := ep.Envoy.ReadinessProbe
		if rp == nil || rp.HTTPGet == nil {
			fail("needs an httpGet readiness probe")
		} else if port, err := resolvePort(ep.Envoy, rp.HTTPGet.Port); err != nil {
			fail("readiness probe: %v", err)
		} else if l := listeners[port]; l == nil {
			fail("readiness probe port %d is not a listener", port)
		} else if l.GetName() == public {
			fail("readiness probe is on the public listener %s", public)
		} else if err := answersHealth(l, rp.HTTPGet.Path); err != nil {
			fail("readiness probe %s on listener %s: %v", rp.HTTPGet.Path, l.GetName(), err)
		}
		for _, c := range bs.GetStaticResources().GetClusters() {
			for _, addr := range endpoints(c) {
				host, port := addr.GetAddress(), int32(addr.GetPortValue())
				if ip := net.ParseIP(host); ip != nil {
					if !ip.IsLoopback() {
						fail("cluster %s: endpoint %s is a fixed IP", c.GetName(), host)
					} else if !podServes(ep, port) {
						fail("cluster %s: nothing in the pod listens on 127.0.0.1:%d", c.GetName(), port)
					}
					continue
				}
				if c.GetName() == "otel" {
					// The trace collector (tracing.collector) lives
					// outside the chart.
					continue
				}
				svc, _, _ := strings.Cut(host, ".")
				ports, ok := services[svc]
				if !ok {
					fail("cluster %s: %s is not a rendered Service", c.GetName(), host)
				} else if !slices.Contains(ports, port) {
					fail("cluster %s: Service %s has no port %d (has %v)", c.GetName(), svc, port, ports)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func podServes(ep EnvoyPod, port int32) bool {
	if port == int32(ep.Bootstrap.GetAdmin().GetAddress().GetSocketAddress().GetPortValue()) {
		return true
	}
	for _, c := range servingContainers(ep.Spec) {
		for _, cp := range c.Ports {
			if cp.ContainerPort == port {
				return true
			}
		}
	}
	return false
}

func endpoints(c *clusterv3.Cluster) []*corev3.SocketAddress {
	var out []*corev3.SocketAddress
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, lb := range le.GetLbEndpoints() {
			out = append(out, lb.GetEndpoint().GetAddress().GetSocketAddress())
		}
	}
	return out
}

func hcmOf(l *listenerv3.Listener) (*hcmv3.HttpConnectionManager, error) {
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			m := &hcmv3.HttpConnectionManager{}
			if f.GetTypedConfig().MessageIs(m) {
				if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
					return nil, err
				}
				return m, nil
			}
		}
	}
	return nil, errors.New("no http_connection_manager")
}

// answersHealth reports whether the listener answers path itself with
// the health_check filter (not passing it through to an upstream).
func answersHealth(l *listenerv3.Listener, path string) error {
	hcm, err := hcmOf(l)
	if err != nil {
		return err
	}
	for _, f := range hcm.GetHttpFilters() {
		hc := &healthcheckv3.HealthCheck{}
		if !f.GetTypedConfig().MessageIs(hc) {
			continue
		}
		if err := f.GetTypedConfig().UnmarshalTo(hc); err != nil {
			return err
		}
		if hc.GetPassThroughMode().GetValue() {
			return errors.New("health_check is in pass-through mode")
		}
		for _, h := range hc.GetHeaders() {
			if h.GetName() == ":path" && h.GetStringMatch().GetExact() == path {
				return nil
			}
		}
		return fmt.Errorf("health_check does not match :path %s", path)
	}
	return errors.New("no health_check filter")
}

// CompareWithLocal reports how the chart's bootstrap differs from the
// project's envoy/envoy.yaml in what must be the same: the public
// listener's HTTP connection manager (route table, filters, path
// normalisation) and the settings of every cluster local has, apart from
// how its endpoints are found (type and addresses).
func CompareWithLocal(chart, local *bootstrapv3.Bootstrap) error {
	var errs []error
	for _, ll := range local.GetStaticResources().GetListeners() {
		cl := findListener(chart, ll.GetName())
		if cl == nil {
			errs = append(errs, fmt.Errorf("listener %s of envoy.yaml is missing", ll.GetName()))
			continue
		}
		want, err := hcmOf(ll)
		if err != nil {
			errs = append(errs, fmt.Errorf("envoy.yaml listener %s: %w", ll.GetName(), err))
			continue
		}
		got, err := hcmOf(cl)
		if err != nil {
			errs = append(errs, fmt.Errorf("listener %s: %w", cl.GetName(), err))
			continue
		}
		// The chart's optional tracing block (tracing.enabled) is the one
		// difference allowed; the gateway's own checks load it like Envoy.
		if d := cmp.Diff(want, got, protocmp.Transform(),
			protocmp.IgnoreFields(&hcmv3.HttpConnectionManager{}, "tracing")); d != "" {
			errs = append(errs, fmt.Errorf("listener %s differs from envoy.yaml (-envoy.yaml +chart):\n%s", ll.GetName(), d))
		}
		if tr := got.GetTracing(); tr != nil && findCluster(chart, "otel") == nil {
			errs = append(errs, fmt.Errorf("listener %s traces to cluster otel, which the chart does not render", cl.GetName()))
		}
		if ll.GetAddress().GetSocketAddress().GetPortValue() != cl.GetAddress().GetSocketAddress().GetPortValue() {
			errs = append(errs, fmt.Errorf("listener %s: port %d, envoy.yaml has %d", ll.GetName(),
				cl.GetAddress().GetSocketAddress().GetPortValue(), ll.GetAddress().GetSocketAddress().GetPortValue()))
		}
	}
	for _, lc := range local.GetStaticResources().GetClusters() {
		var cc *clusterv3.Cluster
		for _, c := range chart.GetStaticResources().GetClusters() {
			if c.GetName() == lc.GetName() {
				cc = c
			}
		}
		if cc == nil {
			errs = append(errs, fmt.Errorf("cluster %s of envoy.yaml is missing", lc.GetName()))
			continue
		}
		if d := cmp.Diff(lc, cc, protocmp.Transform(),
			protocmp.IgnoreFields(&clusterv3.Cluster{}, "type", "load_assignment")); d != "" {
			errs = append(errs, fmt.Errorf("cluster %s differs from envoy.yaml (-envoy.yaml +chart):\n%s", lc.GetName(), d))
		}
		for _, a := range endpoints(cc) {
			for _, b := range endpoints(lc) {
				if a.GetPortValue() != b.GetPortValue() {
					errs = append(errs, fmt.Errorf("cluster %s: port %d, envoy.yaml has %d", lc.GetName(), a.GetPortValue(), b.GetPortValue()))
				}
			}
		}
	}
	if a, b := chart.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(), local.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); a != b {
		errs = append(errs, fmt.Errorf("admin port %d, envoy.yaml has %d", a, b))
	}
	return errors.Join(errs...)
}

func findListener(b *bootstrapv3.Bootstrap, name string) *listenerv3.Listener {
	for _, l := range b.GetStaticResources().GetListeners() {
		if l.GetName() == name {
			return l
		}
	}
	return nil
}

// findCluster returns the static cluster called name, or nil.
func findCluster(b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}
