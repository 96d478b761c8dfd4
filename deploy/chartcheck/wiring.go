package chartcheck

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// HealthPaths are the HTTP health endpoints every Tollgate service serves
// (internal/server.Health): a probe on any other path would fail.
var HealthPaths = []string{"/healthz", "/readyz"}

// Flag is one flag of a tollgate subcommand, as its -h output shows it.
type Flag struct {
	Name    string // without the dash
	Type    string // "string", "duration", "int"; "" for a bool
	Env     string // the environment variable that sets it
	Default string // the default as printed (strings unquoted)
}

var (
	flagLine    = regexp.MustCompile(`^  -([a-zA-Z0-9][-a-zA-Z0-9_.]*)(?: ([a-z]+))?(?:\t(.*))?$`)
	envInUsage  = regexp.MustCompile(`\[\$([A-Z0-9_]+)\]`)
	defaultInUs = regexp.MustCompile(`\(default (.*)\)$`)
)

// ParseUsage reads the flags of a subcommand from its -h output (the
// standard flag package's PrintDefaults format) and returns them keyed by
// environment variable. Flags without a variable are left out.
func ParseUsage(out string) (map[string]Flag, error) {
	flags := map[string]Flag{}
	var cur *Flag
	var usage strings.Builder
	flush := func() {
		if cur == nil {
			return
		}
		u := strings.TrimSpace(usage.String())
		if m := envInUsage.FindStringSubmatch(u); m != nil {
			cur.Env = m[1]
			if d := defaultInUs.FindStringSubmatch(u); d != nil {
				cur.Default = d[1]
				if s, err := strconv.Unquote(cur.Default); err == nil {
					cur.Default = s
				}
			}
			flags[cur.Env] = *cur
		}
		cur = nil
		usage.Reset()
	}
	for line := range strings.SplitSeq(out, "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flush()
			cur = &Flag{Name: m[1], Type: m[2]}
			usage.WriteString(m[3])
			continue
		}
		if cur != nil && strings.HasPrefix(line, "    \t") {
			usage.WriteString(" " + strings.TrimPrefix(line, "    \t"))
		}
	}
	flush()
	if len(flags) == 0 {
		return nil, errors.New("no flags with an environment variable in the usage output")
	}
	return flags, nil
}

// Binary is what the tollgate binary serves: the flags of each
// subcommand, keyed by subcommand and environment variable.
type Binary map[string]map[string]Flag

// listenPorts returns the ports the subcommand listens on given the
// container's environment: each "*addr" flag's value or default. grpc
// tells which are gRPC (by flag name).
func (b Binary) listenPorts(sub string, env map[string]string) (map[int32]bool, error) {
	ports := map[int32]bool{}
	for name, f := range b[sub] {
		if f.Name != "addr" && !strings.HasSuffix(f.Name, "-addr") {
			continue
		}
		addr, ok := env[name]
		if !ok {
			addr = f.Default
		}
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: %w", name, addr, err)
		}
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: port: %w", name, addr, err)
		}
		ports[int32(n)] = strings.Contains(f.Name, "grpc")
	}
	return ports, nil
}

// tollgateSubcommand returns the subcommand a container runs when it runs
// the tollgate binary (no command override, first argument a subcommand).
func (b Binary) tollgateSubcommand(c *corev1.Container) (string, bool) {
	if len(c.Command) > 0 || len(c.Args) == 0 {
		return "", false
	}
	_, ok := b[c.Args[0]]
	return c.Args[0], ok
}

// CheckContainers cross-checks every container that runs the tollgate
// binary against what the binary reads and serves: each TOLLGATE_*
// variable is one the subcommand reads, with a value of the right type;
// the containerPorts are exactly the ports it listens on; HTTP probes hit
// a health path on the HTTP port and gRPC probes the gRPC port.
func CheckContainers(pods []Pod, bin Binary) error {
	var errs []error
	for _, p := range pods {
		for _, c := range allContainers(p.Spec) {
			sub, ok := bin.tollgateSubcommand(c)
			if !ok {
				continue
			}
			fail := func(format string, args ...any) {
				errs = append(errs, fmt.Errorf("%s: container %s (tollgate %s): %s", p, c.Name, sub, fmt.Sprintf(format, args...)))
			}
			env := map[string]string{}
			for _, e := range c.Env {
				if !strings.HasPrefix(e.Name, "TOLLGATE_") {
					continue
				}
				f, known := bin[sub][e.Name]
				if !known {
					fail("%s is not read by 'tollgate %s'", e.Name, sub)
					continue
				}
				if e.ValueFrom != nil {
					continue
				}
				env[e.Name] = e.Value
				if err := checkFlagValue(f, e.Value); err != nil {
					fail("%s=%q: %v", e.Name, e.Value, err)
				}
			}
			listen, err := bin.listenPorts(sub, env)
			if err != nil {
				fail("%v", err)
				continue
			}
			declared := map[int32]bool{}
			for _, cp := range c.Ports {
				declared[cp.ContainerPort] = true
				if _, ok := listen[cp.ContainerPort]; !ok {
					fail("containerPort %d (%s) is not a port it listens on (%v)", cp.ContainerPort, cp.Name, keys(listen))
				}
			}
			for port := range listen {
				if !declared[port] {
					fail("listens on %d but declares no containerPort for it", port)
				}
			}
			for kind, pr := range probes(c) {
				switch {
				case pr.HTTPGet != nil:
					port, err := resolvePort(c, pr.HTTPGet.Port)
					if err != nil {
						fail("%s probe: %v", kind, err)
					} else if grpc, ok := listen[port]; !ok || grpc {
						fail("%s probe: port %d is not an HTTP port it serves", kind, port)
					}
					if !slices.Contains(HealthPaths, pr.HTTPGet.Path) {
						fail("%s probe: path %q is not one of %v", kind, pr.HTTPGet.Path, HealthPaths)
					}
				case pr.GRPC != nil:
					if grpc, ok := listen[pr.GRPC.Port]; !ok || !grpc {
						fail("%s probe: port %d is not a gRPC port it serves", kind, pr.GRPC.Port)
					}
				case pr.TCPSocket != nil:
					port, err := resolvePort(c, pr.TCPSocket.Port)
					if err != nil {
						fail("%s probe: %v", kind, err)
					} else if _, ok := listen[port]; !ok {
						fail("%s probe: port %d is not a port it listens on", kind, port)
					}
				default:
					fail("%s probe has no httpGet, grpc or tcpSocket action", kind)
				}
			}
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				fail("needs a readiness and a liveness probe")
			}
		}
	}
	return errors.Join(errs...)
}

func keys[V any](m map[int32]V) []int32 {
	var ks []int32
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func checkFlagValue(f Flag, v string) error {
	var err error
	switch f.Type {
	case "duration":
		_, err = time.ParseDuration(v)
	case "int":
		_, err = strconv.Atoi(v)
	case "":
		_, err = strconv.ParseBool(v)
	}
	return err
}

func probes(c *corev1.Container) map[string]*corev1.Probe {
	m := map[string]*corev1.Probe{}
	if c.StartupProbe != nil {
		m["startup"] = c.StartupProbe
	}
	if c.ReadinessProbe != nil {
		m["readiness"] = c.ReadinessProbe
	}
	if c.LivenessProbe != nil {
		m["liveness"] = c.LivenessProbe
	}
	return m
}

// resolvePort turns a probe's or Service's port (a number or a
// containerPort name) into the container's port number.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (int32, error) {
	if p.Type == intstr.Int {
		return p.IntVal, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("no containerPort named %q in container %s", p.StrVal, c.Name)
}

// servingContainers are the containers that serve a pod's ports: regular
// containers and native sidecars (restartPolicy Always init containers).
func servingContainers(spec *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range spec.InitContainers {
		if rp := spec.InitContainers[i].RestartPolicy; rp != nil && *rp == corev1.ContainerRestartPolicyAlways {
			cs = append(cs, &spec.InitContainers[i])
		}
	}
	for i := range spec.Containers {
		cs = append(cs, &spec.Containers[i])
	}
	return cs
}

func podsMatching(pods []Pod, sel labels.Selector) []Pod {
	var out []Pod
	for _, p := range pods {
		if sel.Matches(labels.Set(p.Meta.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// CheckServices asserts that every Service selects the pods of exactly one
// workload, and that each of its target ports is a port a serving
// container of those pods declares.
func CheckServices(objs []Object) error {
	pods := workloadPods(objs)
	var errs []error
	for _, o := range objs {
		svc, ok := o.Object.(*corev1.Service)
		if !ok {
			continue
		}
		if len(svc.Spec.Selector) == 0 {
			errs = append(errs, fmt.Errorf("%s: no selector", o))
			continue
		}
		matched := podsMatching(pods, labels.SelectorFromSet(svc.Spec.Selector))
		if len(matched) != 1 {
			errs = append(errs, fmt.Errorf("%s: selector %v matches %d workloads, want 1", o, svc.Spec.Selector, len(matched)))
			continue
		}
		for _, sp := range svc.Spec.Ports {
			target := sp.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(sp.Port)
			}
			if !servesPort(matched[0].Spec, target) {
				errs = append(errs, fmt.Errorf("%s: port %s targets %s, which no container of %s serves", o, sp.Name, target.String(), matched[0]))
			}
		}
	}
	return errors.Join(errs...)
}

func servesPort(spec *corev1.PodSpec, target intstr.IntOrString) bool {
	for _, c := range servingContainers(spec) {
		for _, cp := range c.Ports {
			if (target.Type == intstr.String && cp.Name == target.StrVal) ||
				(target.Type == intstr.Int && cp.ContainerPort == target.IntVal) {
				return true
			}
		}
	}
	return false
}

// workloadPods are the pods of long-running workloads (not test hooks).
func workloadPods(objs []Object) []Pod {
	var out []Pod
	for _, p := range Pods(objs) {
		if _, bare := p.Owner.Object.(*corev1.Pod); !bare {
			out = append(out, p)
		}
	}
	return out
}

// CheckSelectors asserts that every label selector in the manifests
// (NetworkPolicy subjects and peers, PodDisruptionBudgets) selects at
// least one rendered pod (helm test pods included), every HorizontalPodAutoscaler targets a
// Deployment that is rendered, and every Deployment's selector matches
// its own template.
func CheckSelectors(objs []Object) error {
	pods := Pods(objs)
	deployments := map[string]bool{}
	var errs []error
	sel := func(o Object, what string, ls *metav1.LabelSelector) {
		s, err := metav1.LabelSelectorAsSelector(ls)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", o, what, err))
			return
		}
		if len(podsMatching(pods, s)) == 0 {
			errs = append(errs, fmt.Errorf("%s: %s %s selects no pods", o, what, s))
		}
	}
	for _, o := range objs {
		switch v := o.Object.(type) {
		case *appsv1.Deployment:
			deployments[v.Name] = true
			s, err := metav1.LabelSelectorAsSelector(v.Spec.Selector)
			if err != nil || !s.Matches(labels.Set(v.Spec.Template.Labels)) {
				errs = append(errs, fmt.Errorf("%s: selector does not match its pod template", o))
			}
		case *policyv1.PodDisruptionBudget:
			sel(o, "selector", v.Spec.Selector)
		case *networkingv1.NetworkPolicy:
			sel(o, "podSelector", &v.Spec.PodSelector)
			for _, in := range v.Spec.Ingress {
				for _, peer := range in.From {
					if peer.PodSelector != nil && peer.NamespaceSelector == nil {
						sel(o, "ingress peer", peer.PodSelector)
					}
				}
			}
			for _, eg := range v.Spec.Egress {
				for _, peer := range eg.To {
					if peer.PodSelector != nil && peer.NamespaceSelector == nil {
						sel(o, "egress peer", peer.PodSelector)
					}
				}
			}
		}
	}
	for _, o := range objs {
		if h, ok := o.Object.(*autoscalingv2.HorizontalPodAutoscaler); ok {
			ref := h.Spec.ScaleTargetRef
			if ref.Kind != "Deployment" || !deployments[ref.Name] {
				errs = append(errs, fmt.Errorf("%s: scaleTargetRef %s %s is not a rendered Deployment", o, ref.Kind, ref.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// CheckReferences asserts that every ConfigMap and Secret a pod mounts or
// reads is rendered too, or is one of external (Secrets the user
// provides, named in values).
func CheckReferences(objs []Object, external ...string) error {
	have := map[string]bool{}
	for _, o := range objs {
		switch o.Object.(type) {
		case *corev1.ConfigMap:
			have["ConfigMap/"+o.Name] = true
		case *corev1.Secret:
			have["Secret/"+o.Name] = true
		}
	}
	for _, e := range external {
		have["Secret/"+e] = true
	}
	var errs []error
	need := func(p Pod, ref string) {
		if !have[ref] {
			errs = append(errs, fmt.Errorf("%s: uses %s, which is not rendered", p, ref))
		}
	}
	for _, p := range Pods(objs) {
		for _, v := range p.Spec.Volumes {
			if v.ConfigMap != nil {
				need(p, "ConfigMap/"+v.ConfigMap.Name)
			}
			if v.Secret != nil {
				need(p, "Secret/"+v.Secret.SecretName)
			}
			if v.Projected != nil {
				// An optional source may be missing: the chart adds those
				// Secrets only when it needs them (a signingAlg change).
				for _, src := range v.Projected.Sources {
					if src.Secret != nil && (src.Secret.Optional == nil || !*src.Secret.Optional) {
						need(p, "Secret/"+src.Secret.Name)
					}
					if src.ConfigMap != nil && (src.ConfigMap.Optional == nil || !*src.ConfigMap.Optional) {
						need(p, "ConfigMap/"+src.ConfigMap.Name)
					}
				}
			}
		}
		for _, c := range allContainers(p.Spec) {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					need(p, "Secret/"+e.ValueFrom.SecretKeyRef.Name)
				}
				if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
					need(p, "ConfigMap/"+e.ValueFrom.ConfigMapKeyRef.Name)
				}
			}
			for _, m := range c.VolumeMounts {
				if !slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) {
					errs = append(errs, fmt.Errorf("%s: container %s mounts volume %q, which the pod does not have", p, c.Name, m.Name))
				}
			}
		}
	}
	return errors.Join(errs...)
}
