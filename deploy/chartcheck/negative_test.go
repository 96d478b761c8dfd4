package chartcheck

import (
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	"google.golang.org/protobuf/types/known/anypb"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

type envoyBootstrap = bootstrapv3.Bootstrap

func defaultsManifest(t *testing.T) []byte {
	t.Helper()
	return renderCached(t, valueSets()[0])
}

// TestDecodeCatches feeds broken copies of the rendered manifest to
// Decode: each must be refused, where a lenient decoder would drop the
// field or guess the type.
func TestDecodeCatches(t *testing.T) {
	good := string(defaultsManifest(t))
	if _, err := Decode([]byte(good)); err != nil {
		t.Fatalf("Decode(rendered defaults) = %v, want nil", err)
	}
	tests := []struct {
		name, old, new string
	}{
		{"unknown field", "  replicas: 1\n", "  replicas: 1\n  replica: 1\n"},
		{"misspelt field in a container", "          imagePullPolicy:", "          imagePullPolicyy:"},
		{"wrong case", "readOnlyRootFilesystem: true", "readonlyRootFilesystem: true"},
		{"wrong type", "  replicas: 1\n", "  replicas: one\n"},
		{"duplicate field", "  replicas: 1\n", "  replicas: 1\n  replicas: 2\n"},
		{"unknown kind", "kind: Deployment", "kind: Deploymnet"},
		{"unknown apiVersion", "apiVersion: apps/v1", "apiVersion: apps/v2"},
		{"bad name", "name: tg-tollgate-books\n", "name: TG_books\n"},
		{"broken yaml", "kind: Service\n", "kind: Service\n\t broken: [\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(good, tt.old) {
				t.Fatalf("the rendered manifest has no %q to mutate", tt.old)
			}
			bad := strings.Replace(good, tt.old, tt.new, 1)
			if _, err := Decode([]byte(bad)); err == nil {
				t.Errorf("Decode(manifest with %s) = nil error, want an error", tt.name)
			}
		})
	}
}

// mutated decodes the rendered defaults afresh and applies change to the
// named Deployment's pod spec.
func mutated(t *testing.T, name string, change func(*corev1.PodSpec)) []Object {
	t.Helper()
	objs := decode(t, defaultsManifest(t))
	change(&find[*appsv1.Deployment](t, objs, name).Spec.Template.Spec)
	return objs
}

func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for _, c := range allContainers(spec) {
		if c.Name == name {
			return c
		}
	}
	panic("no container " + name)
}

func TestPodChecksCatch(t *testing.T) {
	const gw, issuer = "tg-tollgate-gateway", "tg-tollgate-issuer"
	tests := []struct {
		name   string
		deploy string
		change func(*corev1.PodSpec)
		check  func(Pod) error
	}{
		{"privilege escalation", gw, func(s *corev1.PodSpec) {
			container(s, "envoy").SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
		}, CheckRestricted},
		{"runs as root", issuer, func(s *corev1.PodSpec) {
			s.SecurityContext.RunAsNonRoot = nil
			s.SecurityContext.RunAsUser = ptr.To[int64](0)
		}, CheckRestricted},
		{"capability added", gw, func(s *corev1.PodSpec) {
			container(s, "authz").SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}, CheckRestricted},
		{"capabilities not dropped in the sidecar", gw, func(s *corev1.PodSpec) {
			container(s, "authz").SecurityContext.Capabilities.Drop = nil
		}, CheckRestricted},
		{"seccomp unconfined", issuer, func(s *corev1.PodSpec) {
			s.SecurityContext.SeccompProfile.Type = corev1.SeccompProfileTypeUnconfined
			container(s, "issuer").SecurityContext.SeccompProfile = nil
		}, CheckRestricted},
		{"hostPath volume", issuer, func(s *corev1.PodSpec) {
			s.Volumes[0].VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib"}}
		}, CheckRestricted},
		{"writable root filesystem", gw, func(s *corev1.PodSpec) {
			container(s, "envoy").SecurityContext.ReadOnlyRootFilesystem = ptr.To(false)
		}, CheckHardening},
		{"service account token mounted", issuer, func(s *corev1.PodSpec) {
			s.AutomountServiceAccountToken = nil
		}, CheckHardening},
		{"no memory limit", issuer, func(s *corev1.PodSpec) {
			delete(container(s, "issuer").Resources.Limits, corev1.ResourceMemory)
		}, CheckHardening},
		{"unpinned image", gw, func(s *corev1.PodSpec) {
			container(s, "envoy").Image = "envoyproxy/envoy:latest"
		}, CheckHardening},
		{"port name too long", issuer, func(s *corev1.PodSpec) {
			container(s, "issuer").Ports[0].Name = "issuer-http-port"
		}, CheckHardening},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := mutated(t, tt.deploy, tt.change)
			var err error
			for _, p := range Pods(objs) {
				if p.Owner.Name == tt.deploy {
					err = tt.check(p)
				}
			}
			if err == nil {
				t.Errorf("check(%s with %s) = nil, want an error", tt.deploy, tt.name)
			}
		})
	}
}

func TestContainerChecksCatch(t *testing.T) {
	bin := binary(t)
	const gw, issuer, books = "tg-tollgate-gateway", "tg-tollgate-issuer", "tg-tollgate-books"
	tests := []struct {
		name   string
		deploy string
		change func(*corev1.PodSpec)
	}{
		{"misspelt variable", issuer, func(s *corev1.PodSpec) {
			c := container(s, "issuer")
			for i := range c.Env {
				if c.Env[i].Name == "TOLLGATE_ISSUER_ADDR" {
					c.Env[i].Name = "TOLLGATE_ISSUER_ADRR"
				}
			}
		}},
		{"variable of another service", books, func(s *corev1.PodSpec) {
			c := container(s, "books")
			c.Env = append(c.Env, corev1.EnvVar{Name: "TOLLGATE_ISSUER_ADDR", Value: ":8081"})
		}},
		{"bad duration", issuer, func(s *corev1.PodSpec) {
			c := container(s, "issuer")
			c.Env = append(c.Env, corev1.EnvVar{Name: "TOLLGATE_TOKEN_TTL", Value: "45 minutes"})
		}},
		{"containerPort the binary does not listen on", books, func(s *corev1.PodSpec) {
			container(s, "books").Ports[0].ContainerPort = 8083
		}},
		{"listen address moved without its containerPort", issuer, func(s *corev1.PodSpec) {
			c := container(s, "issuer")
			for i := range c.Env {
				if c.Env[i].Name == "TOLLGATE_ISSUER_ADDR" {
					c.Env[i].Value = ":9090"
				}
			}
		}},
		{"probe on a path the binary does not serve", books, func(s *corev1.PodSpec) {
			container(s, "books").ReadinessProbe.HTTPGet.Path = "/health"
		}},
		{"gRPC probe on the HTTP port", gw, func(s *corev1.PodSpec) {
			container(s, "authz").ReadinessProbe.GRPC.Port = 9002
		}},
		{"HTTP probe on the gRPC port", gw, func(s *corev1.PodSpec) {
			container(s, "authz").LivenessProbe.HTTPGet.Port = intstr.FromString("authz-grpc")
		}},
		{"no liveness probe", issuer, func(s *corev1.PodSpec) {
			container(s, "issuer").LivenessProbe = nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := mutated(t, tt.deploy, tt.change)
			if err := CheckContainers(Pods(objs), bin); err == nil {
				t.Errorf("CheckContainers(%s with %s) = nil, want an error", tt.deploy, tt.name)
			}
		})
	}
}

func TestWiringChecksCatch(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, objs []Object)
		check  func([]Object) error
	}{
		{"Service selector typo", func(t *testing.T, objs []Object) {
			find[*corev1.Service](t, objs, "tg-tollgate-books").Spec.Selector["app.kubernetes.io/component"] = "book"
		}, CheckServices},
		{"Service selecting two workloads", func(t *testing.T, objs []Object) {
			delete(find[*corev1.Service](t, objs, "tg-tollgate-books").Spec.Selector, "app.kubernetes.io/component")
		}, CheckServices},
		{"Service targetPort nobody serves", func(t *testing.T, objs []Object) {
			find[*corev1.Service](t, objs, "tg-tollgate-issuer").Spec.Ports[0].TargetPort = intstr.FromString("htp")
		}, CheckServices},
		{"NetworkPolicy peer selecting nothing", func(t *testing.T, objs []Object) {
			np := find[*networkingv1.NetworkPolicy](t, objs, "tg-tollgate-issuer")
			np.Spec.Ingress[0].From[0].PodSelector.MatchLabels["app.kubernetes.io/component"] = "gatewy"
		}, CheckSelectors},
		{"Deployment selector not matching its template", func(t *testing.T, objs []Object) {
			find[*appsv1.Deployment](t, objs, "tg-tollgate-books").Spec.Template.Labels["app.kubernetes.io/component"] = "x"
		}, CheckSelectors},
		{"mounted ConfigMap not rendered", func(t *testing.T, objs []Object) {
			d := find[*appsv1.Deployment](t, objs, "tg-tollgate-gateway")
			for i := range d.Spec.Template.Spec.Volumes {
				if cm := d.Spec.Template.Spec.Volumes[i].ConfigMap; cm != nil {
					cm.Name = "tg-tollgate-envoy-config"
				}
			}
		}, func(objs []Object) error { return CheckReferences(objs) }},
		{"projected signing-key Secret not rendered", func(t *testing.T, objs []Object) {
			d := find[*appsv1.Deployment](t, objs, "tg-tollgate-issuer")
			for i := range d.Spec.Template.Spec.Volumes {
				if p := d.Spec.Template.Spec.Volumes[i].Projected; p != nil {
					p.Sources[0].Secret.Name = "tg-tollgate-signing-key"
				}
			}
		}, func(objs []Object) error { return CheckReferences(objs) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := decode(t, defaultsManifest(t))
			if err := tt.check(objs); err != nil {
				t.Fatalf("check(unchanged defaults) = %v, want nil", err)
			}
			tt.change(t, objs)
			if err := tt.check(objs); err == nil {
				t.Errorf("check(defaults with %s) = nil, want an error", tt.name)
			}
		})
	}
}

// TestEnvoyChecksCatch breaks the rendered Envoy bootstrap and its pod.
func TestEnvoyChecksCatch(t *testing.T) {
	local := localEnvoy(t)
	textTests := []struct {
		name, old, new string
	}{
		{"unknown field", "stat_prefix: ingress_http", "stat_prefix: ingress_http\n          stat_prefixx: x"},
		{"port out of range", "port_value: 8081}", "port_value: 70000}"},
		{"zero connect timeout", "connect_timeout: 1s", "connect_timeout: 0s"},
		{"unknown typed_config type", "ext_authz.v3.ExtAuthz\n", "ext_authz.v3.ExtAuthZ\n"},
		{"route to a missing cluster", "route: {cluster: books}", "route: {cluster: book}"},
	}
	for _, tt := range textTests {
		t.Run(tt.name, func(t *testing.T) {
			good := string(defaultsManifest(t))
			if !strings.Contains(good, tt.old) {
				t.Fatalf("the rendered manifest has no %q to mutate", tt.old)
			}
			objs := decode(t, []byte(strings.Replace(good, tt.old, tt.new, 1)))
			if _, err := EnvoyPods(objs); err == nil {
				t.Errorf("EnvoyPods(bootstrap with %s) = nil error, want an error", tt.name)
			}
		})
	}

	podTests := []struct {
		name   string
		change func(ep *EnvoyPod)
	}{
		{"admin on all interfaces", func(ep *EnvoyPod) {
			ep.Bootstrap.Admin.Address.GetSocketAddress().Address = "0.0.0.0"
		}},
		{"readiness on a path Envoy does not answer", func(ep *EnvoyPod) {
			ep.Envoy.ReadinessProbe.HTTPGet.Path = "/healthz"
		}},
		{"readiness on the public listener", func(ep *EnvoyPod) {
			ep.Envoy.ReadinessProbe.HTTPGet.Port = intstr.FromString("http")
		}},
		{"listener without a containerPort", func(ep *EnvoyPod) {
			ep.Envoy.Ports = ep.Envoy.Ports[:1]
		}},
		{"cluster on a port the Service does not have", func(ep *EnvoyPod) {
			for _, c := range ep.Bootstrap.StaticResources.Clusters {
				if c.Name == "books" {
					c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().
						PortSpecifier = ptrPort(8083)
				}
			}
		}},
		{"sidecar cluster on a port nothing in the pod serves", func(ep *EnvoyPod) {
			for _, c := range ep.Bootstrap.StaticResources.Clusters {
				if c.Name == "authz" {
					c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().
						PortSpecifier = ptrPort(9003)
				}
			}
		}},
	}
	for _, tt := range podTests {
		t.Run(tt.name, func(t *testing.T) {
			objs := decode(t, defaultsManifest(t))
			eps, err := EnvoyPods(objs)
			if err != nil || len(eps) != 1 {
				t.Fatalf("EnvoyPods(defaults) = %d pods, %v; want 1, nil", len(eps), err)
			}
			if err := CheckEnvoyPods(objs, eps, "ingress_http"); err != nil {
				t.Fatalf("CheckEnvoyPods(defaults) = %v, want nil", err)
			}
			tt.change(&eps[0])
			if err := CheckEnvoyPods(objs, eps, "ingress_http"); err == nil {
				t.Errorf("CheckEnvoyPods(%s) = nil, want an error", tt.name)
			}
		})
	}

	t.Run("route table drifting from envoy/envoy.yaml", func(t *testing.T) {
		changes := map[string]func(*bootstrapv3.Bootstrap){
			"admin requirement dropped": func(b *bootstrapv3.Bootstrap) { dropRequire(t, b) },
			"cluster timeout changed": func(b *bootstrapv3.Bootstrap) {
				b.StaticResources.Clusters[0].ConnectTimeout.Seconds = 5
			},
		}
		for name, change := range changes {
			objs := decode(t, defaultsManifest(t))
			eps, err := EnvoyPods(objs)
			if err != nil {
				t.Fatal(err)
			}
			if err := CompareWithLocal(eps[0].Bootstrap, local); err != nil {
				t.Fatalf("CompareWithLocal(defaults) = %v, want nil", err)
			}
			change(eps[0].Bootstrap)
			if err := CompareWithLocal(eps[0].Bootstrap, local); err == nil {
				t.Errorf("CompareWithLocal(%s) = nil, want an error", name)
			}
		}
	})
}

// dropRequire removes the `require: admin` context extension of the
// /users route in b, re-packing the listener's configuration.
func dropRequire(t *testing.T, b *bootstrapv3.Bootstrap) {
	t.Helper()
	l := findListener(b, "ingress_http")
	hcm, err := hcmOf(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
		if r.GetMatch().GetPath() != "/users" {
			continue
		}
		for name, cfg := range r.TypedPerFilterConfig {
			per := &extauthzv3.ExtAuthzPerRoute{}
			if err := cfg.UnmarshalTo(per); err != nil {
				t.Fatal(err)
			}
			delete(per.GetCheckSettings().GetContextExtensions(), "require")
			a, err := anypb.New(per)
			if err != nil {
				t.Fatal(err)
			}
			r.TypedPerFilterConfig[name] = a
		}
	}
	a, err := anypb.New(hcm)
	if err != nil {
		t.Fatal(err)
	}
	l.FilterChains[0].Filters[0].ConfigType = withTypedConfig(a)
}

func ptrPort(n uint32) *corev3.SocketAddress_PortValue {
	return &corev3.SocketAddress_PortValue{PortValue: n}
}

func withTypedConfig(a *anypb.Any) *listenerv3.Filter_TypedConfig {
	return &listenerv3.Filter_TypedConfig{TypedConfig: a}
}
