package chartcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/internal/testenv"
)

const (
	release   = "tg"
	namespace = "tollgate"
)

// repo is the repository root, chart the chart under test.
var (
	repo  = mustAbs("../..")
	chart = filepath.Join(repo, "charts", "tollgate")
)

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		panic(err)
	}
	return a
}

// tools are built once per test binary and shared by every test.
var tools struct {
	once    sync.Once
	dir     string
	helm    Helm
	helmErr error
	bin     Binary
	binErr  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tools.dir != "" {
		os.RemoveAll(tools.dir)
	}
	os.Exit(code)
}

func setup(t *testing.T) {
	t.Helper()
	tools.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		dir, err := os.MkdirTemp("", "chartcheck")
		if err != nil {
			tools.helmErr, tools.binErr = err, err
			return
		}
		tools.dir = dir
		var wg sync.WaitGroup
		wg.Go(func() { tools.helm, tools.helmErr = BuildHelm(ctx, repo, dir) })
		wg.Go(func() {
			path, err := BuildTollgate(ctx, repo, dir)
			if err != nil {
				tools.binErr = err
				return
			}
			tools.bin, tools.binErr = ReadBinary(ctx, path, "issuer", "authz", "books")
		})
		wg.Wait()
	})
}

// helm returns the pinned helm CLI; without it (no module proxy, no Go
// toolchain) the test is skipped, or fails under TOLLGATE_REQUIRE_ALL=1.
func helm(t *testing.T) Helm {
	t.Helper()
	setup(t)
	if tools.helmErr != nil {
		testenv.Missing(t, fmt.Sprintf("helm could not be built from tools/helm: %v", tools.helmErr))
	}
	return tools.helm
}

func binary(t *testing.T) Binary {
	t.Helper()
	setup(t)
	if tools.binErr != nil {
		t.Fatalf("reading the tollgate binary's flags: %v", tools.binErr)
	}
	return tools.bin
}

// valueSet is one way of installing the chart.
type valueSet struct {
	name   string
	files  []string // relative to the repository root
	set    []string
	secret []string // Secrets the user provides (named in the values)
	api    []string // API versions the cluster serves beyond the built-in ones (--api-versions)
}

func valueSets() []valueSet {
	tv := func(name string) string { return filepath.Join("deploy", "chartcheck", "testdata", "values", name) }
	return []valueSet{
		{name: "defaults"},
		{name: "sidecar-nodeport", files: []string{tv("sidecar-nodeport.yaml")}},
		{name: "load-balancer", files: []string{tv("load-balancer.yaml")}},
		{name: "service-mode", files: []string{tv("service-mode.yaml")}},
		{name: "postgres-3-replicas", files: []string{tv("postgres.yaml")}, secret: []string{"tollgate-db"}},
		{name: "no-networkpolicy", files: []string{tv("no-networkpolicy.yaml")}},
		{name: "monitoring", files: []string{tv("monitoring.yaml")}, api: []string{"monitoring.coreos.com/v1/ServiceMonitor"}},
		{name: "monitoring-without-crd", files: []string{tv("monitoring.yaml")}},
		{name: "tracing", files: []string{tv("tracing.yaml")}},
		{name: "existing-secrets", files: []string{tv("existing-secrets.yaml")}, secret: []string{"tollgate-keys", "tollgate-admin"}},
		{name: "rs256", files: []string{tv("rs256.yaml")}},
		{name: "eddsa", files: []string{tv("eddsa.yaml")}},
		{name: "trusted-issuers", files: []string{tv("trusted-issuers.yaml")}},
		{name: "dpop", files: []string{tv("dpop.yaml")}, secret: []string{"tollgate-db"}},
		{name: "dpop-service-mode", files: []string{tv("dpop.yaml"), tv("service-mode.yaml")}, secret: []string{"tollgate-db"}},
		{name: "istio-example", files: []string{"k8s/examples/istio/tollgate-values.yaml"}},
		{name: "envoy-gateway-example", files: []string{"k8s/examples/envoy-gateway/tollgate-values.yaml"}},
		{name: "kind", files: []string{"charts/tollgate/values-kind.yaml"}},
		{name: "tilt-dev", files: []string{"charts/tollgate/values-dev.yaml"}},
	}
}

func (vs valueSet) paths() []string {
	var ps []string
	for _, f := range vs.files {
		ps = append(ps, filepath.Join(repo, f))
	}
	return ps
}

func render(t *testing.T, vs valueSet) []byte {
	t.Helper()
	out, err := helm(t).TemplateAPI(t.Context(), chart, release, namespace, vs.paths(), vs.api, vs.set...)
	if err != nil {
		t.Fatalf("helm template (%s): %v", vs.name, err)
	}
	return out
}

// rendered caches each value set's manifest for the tests that mutate it.
var rendered sync.Map

func renderCached(t *testing.T, vs valueSet) []byte {
	t.Helper()
	if m, ok := rendered.Load(vs.name); ok {
		return m.([]byte)
	}
	m := render(t, vs)
	rendered.Store(vs.name, m)
	return m
}

func decode(t *testing.T, manifest []byte) []Object {
	t.Helper()
	objs, err := Decode(manifest)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return objs
}

func localEnvoy(t *testing.T) *envoyBootstrap {
	t.Helper()
	b, err := envoy.LoadFile(filepath.Join(repo, "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatalf("envoy/envoy.yaml: %v", err)
	}
	return b
}

// checkAll runs every check of this package on one rendered value set.
func checkAll(objs []Object, bin Binary, local *envoyBootstrap, external []string) error {
	var errs []error
	pods := Pods(objs)
	for _, p := range pods {
		errs = append(errs, CheckRestricted(p), CheckHardening(p))
	}
	errs = append(errs,
		CheckContainers(pods, bin),
		CheckServices(objs),
		CheckSelectors(objs),
		CheckReferences(objs, external...),
	)
	eps, err := EnvoyPods(objs)
	errs = append(errs, err)
	if len(eps) == 0 && err == nil {
		errs = append(errs, fmt.Errorf("no Envoy pod rendered"))
	}
	errs = append(errs, CheckEnvoyPods(objs, eps, "ingress_http"))
	for _, ep := range eps {
		if err := CompareWithLocal(ep.Bootstrap, local); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ep.Pod, err))
		}
	}
	return joinNonNil(errs)
}

func joinNonNil(errs []error) error {
	var msgs []string
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(msgs, "\n"))
}

func TestLint(t *testing.T) {
	h := helm(t)
	for _, vs := range valueSets() {
		t.Run(vs.name, func(t *testing.T) {
			if err := h.Lint(t.Context(), chart, vs.paths(), vs.set...); err != nil {
				t.Errorf("helm lint --strict: %v", err)
			}
		})
	}
}

func TestRenderedManifests(t *testing.T) {
	bin := binary(t)
	local := localEnvoy(t)
	for _, vs := range valueSets() {
		t.Run(vs.name, func(t *testing.T) {
			objs := decode(t, renderCached(t, vs))
			if err := checkAll(objs, bin, local, vs.secret); err != nil {
				t.Errorf("checks of %s:\n%v", vs.name, err)
			}
		})
	}
}

// kinds counts the rendered objects by kind.
func kinds(objs []Object) map[string]int {
	m := map[string]int{}
	for _, o := range objs {
		m[o.GVK.Kind]++
	}
	return m
}

func find[T any](t *testing.T, objs []Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.Object.(T); ok && o.Name == name {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T named %s in the manifests", zero, name)
	return zero
}

func envValue(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// TestValueSetsShape pins what each value set is for: the objects it adds
// or removes and the settings it changes.
func TestValueSetsShape(t *testing.T) {
	sets := map[string]valueSet{}
	for _, vs := range valueSets() {
		sets[vs.name] = vs
	}
	objsOf := func(t *testing.T, name string) []Object { return decode(t, renderCached(t, sets[name])) }

	t.Run("defaults: sidecar authz, SQLite on PVCs, policies on, monitoring off", func(t *testing.T) {
		objs := objsOf(t, "defaults")
		k := kinds(objs)
		if k["PersistentVolumeClaim"] != 2 || k["NetworkPolicy"] != 3 || k["ServiceMonitor"] != 0 || k["Deployment"] != 3 {
			t.Errorf("kinds = %v, want 2 PVCs, 3 NetworkPolicies, 3 Deployments, no ServiceMonitor", k)
		}
		gw := find[*appsv1.Deployment](t, objs, "tg-tollgate-gateway")
		ic := gw.Spec.Template.Spec.InitContainers
		if len(ic) != 1 || ic[0].Name != "authz" || ic[0].RestartPolicy == nil || *ic[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("gateway initContainers = %+v, want the authz native sidecar (restartPolicy Always)", ic)
		}
		if _, ok := gw.Spec.Template.Annotations["checksum/envoy-config"]; !ok {
			t.Errorf("gateway pod template has no checksum/envoy-config annotation: %v", gw.Spec.Template.Annotations)
		}
		for _, name := range []string{"tg-tollgate-issuer", "tg-tollgate-books"} {
			d := find[*appsv1.Deployment](t, objs, name)
			if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || *d.Spec.Replicas != 1 {
				t.Errorf("%s: strategy %q replicas %d, want Recreate and 1 (one SQLite writer)", name, d.Spec.Strategy.Type, *d.Spec.Replicas)
			}
		}
		sec := find[*corev1.Secret](t, objs, "tg-tollgate-signing-keys")
		if len(sec.Data) != 1 {
			t.Errorf("signing key Secret has %d entries, want 1 generated key", len(sec.Data))
		}
		// Generated material is a hook created once, never part of the
		// release manifest that upgrades and rollbacks apply, and never
		// replaced by a hook re-run (before-hook-creation would).
		for _, name := range []string{"tg-tollgate-signing-keys", "tg-tollgate-admin"} {
			a := find[*corev1.Secret](t, objs, name).Annotations
			if a["helm.sh/hook"] != "pre-install,pre-upgrade" || a["helm.sh/hook-delete-policy"] != "hook-failed" || a["helm.sh/resource-policy"] != "keep" {
				t.Errorf("Secret %s annotations = %v, want a pre-install,pre-upgrade hook, delete policy hook-failed, resource-policy keep", name, a)
			}
		}
		// Behind Envoy every login arrives from a gateway pod: unless the
		// issuer believes the gateway's X-Forwarded-For, one client's
		// failures throttle every client.
		iss := find[*appsv1.Deployment](t, objs, "tg-tollgate-issuer")
		if e, ok := envValue(iss.Spec.Template.Spec.Containers[0], "TOLLGATE_ISSUER_TRUSTED_PROXIES"); !ok || !strings.Contains(e.Value, "10.0.0.0/8") {
			t.Errorf("issuer TOLLGATE_ISSUER_TRUSTED_PROXIES = %+v, want the pod networks trusted", e)
		}
		// ...but only the entry Envoy appended names the client: with the
		// pod networks trusted, skipping "trusted" entries would let any
		// client on a private network choose its address.
		if e, ok := envValue(iss.Spec.Template.Spec.Containers[0], "TOLLGATE_ISSUER_TRUSTED_HOPS"); !ok || e.Value != "1" {
			t.Errorf("issuer TOLLGATE_ISSUER_TRUSTED_HOPS = %+v, want 1 (Envoy's entry)", e)
		}
		// Kubernetes refuses externalTrafficPolicy on a ClusterIP Service.
		if svc := find[*corev1.Service](t, objs, "tg-tollgate-gateway"); svc.Spec.ExternalTrafficPolicy != "" {
			t.Errorf("ClusterIP gateway Service has externalTrafficPolicy %q, want none", svc.Spec.ExternalTrafficPolicy)
		}
	})

	t.Run("load balancer: client addresses kept", func(t *testing.T) {
		svc := find[*corev1.Service](t, objsOf(t, "load-balancer"), "tg-tollgate-gateway")
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			t.Errorf("gateway Service type %s externalTrafficPolicy %q, want LoadBalancer and Local", svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
		}
	})

	t.Run("service mode: authz Deployment and Service, no sidecar, authz only from Envoy", func(t *testing.T) {
		objs := objsOf(t, "service-mode")
		authz := find[*appsv1.Deployment](t, objs, "tg-tollgate-authz")
		if *authz.Spec.Replicas != 3 {
			t.Errorf("authz replicas = %d, want 3", *authz.Spec.Replicas)
		}
		find[*corev1.Service](t, objs, "tg-tollgate-authz")
		gw := find[*appsv1.Deployment](t, objs, "tg-tollgate-gateway")
		if n := len(gw.Spec.Template.Spec.InitContainers); n != 0 {
			t.Errorf("gateway has %d initContainers in service mode, want 0", n)
		}
		np := find[*networkingv1.NetworkPolicy](t, objs, "tg-tollgate-authz")
		if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 ||
			np.Spec.Ingress[0].From[0].PodSelector.MatchLabels["app.kubernetes.io/component"] != "gateway" {
			t.Errorf("authz NetworkPolicy ingress = %+v, want only the gateway pods", np.Spec.Ingress)
		}
	})

	t.Run("postgres: URLs from the Secret, no PVC, 3 replicas, HPAs", func(t *testing.T) {
		objs := objsOf(t, "postgres-3-replicas")
		k := kinds(objs)
		if k["PersistentVolumeClaim"] != 0 || k["HorizontalPodAutoscaler"] != 2 {
			t.Errorf("kinds = %v, want no PVC and 2 HPAs", k)
		}
		iss := find[*appsv1.Deployment](t, objs, "tg-tollgate-issuer")
		if *iss.Spec.Replicas != 3 || iss.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
			t.Errorf("issuer: replicas %d strategy %q, want 3 and a rolling update", *iss.Spec.Replicas, iss.Spec.Strategy.Type)
		}
		e, ok := envValue(iss.Spec.Template.Spec.Containers[0], "TOLLGATE_ISSUER_DB")
		if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef.Name != "tollgate-db" {
			t.Errorf("issuer TOLLGATE_ISSUER_DB = %+v, want from Secret tollgate-db", e)
		}
	})

	t.Run("no networkpolicy", func(t *testing.T) {
		if n := kinds(objsOf(t, "no-networkpolicy"))["NetworkPolicy"]; n != 0 {
			t.Errorf("%d NetworkPolicies rendered, want 0", n)
		}
	})

	t.Run("monitoring: ServiceMonitor and a dashboard that parses", func(t *testing.T) {
		objs := objsOf(t, "monitoring")
		sm := find[*ServiceMonitor](t, objs, "tg-tollgate")
		if sm.Metadata.Labels["release"] != "prometheus" {
			t.Errorf("ServiceMonitor labels = %v, want release=prometheus", sm.Metadata.Labels)
		}
		cm := find[*corev1.ConfigMap](t, objs, "tg-tollgate-dashboard")
		if cm.Labels["grafana_dashboard"] != "1" {
			t.Errorf("dashboard labels = %v, want grafana_dashboard=1", cm.Labels)
		}
		var dash struct {
			Panels []struct {
				Targets []struct{ Expr string }
			}
		}
		if err := json.Unmarshal([]byte(cm.Data["tollgate.json"]), &dash); err != nil || len(dash.Panels) == 0 {
			t.Fatalf("dashboard JSON: %v (%d panels)", err, len(dash.Panels))
		}
		var exprs string
		for _, p := range dash.Panels {
			for _, tg := range p.Targets {
				exprs += tg.Expr + "\n"
			}
		}
		for _, metric := range []string{"tollgate_http_requests_total", "tollgate_http_request_duration_seconds_bucket", "envoy_http_ext_authz_denied", "tollgate_authz_checks_total", "tollgate_authz_check_duration_seconds_bucket"} {
			if !strings.Contains(exprs, metric) {
				t.Errorf("dashboard does not chart %s", metric)
			}
		}
		// The ServiceMonitor's selector must pick the metrics Services.
		var scraped []string
		for _, o := range objs {
			if svc, ok := o.Object.(*corev1.Service); ok && svc.Labels["tollgate.dev/scrape"] == "true" &&
				svc.Labels["app.kubernetes.io/instance"] == sm.Spec.Selector.MatchLabels["app.kubernetes.io/instance"] {
				scraped = append(scraped, svc.Name)
			}
		}
		slices.Sort(scraped)
		want := []string{"tg-tollgate-books", "tg-tollgate-gateway-metrics", "tg-tollgate-issuer"}
		if !slices.Equal(scraped, want) {
			t.Errorf("Services the ServiceMonitor selects = %v, want %v", scraped, want)
		}
	})

	// Without the Prometheus Operator's CRD a ServiceMonitor cannot be
	// created, and one in the manifest fails the whole install or upgrade.
	t.Run("monitoring without the ServiceMonitor CRD: no ServiceMonitor, the rest rendered", func(t *testing.T) {
		objs := objsOf(t, "monitoring-without-crd")
		if n := kinds(objs)["ServiceMonitor"]; n != 0 {
			t.Errorf("%d ServiceMonitors rendered for a cluster without the CRD, want 0", n)
		}
		find[*corev1.ConfigMap](t, objs, "tg-tollgate-dashboard")
	})

	// Helm's three-way merge removes a replicas field the new manifest
	// lacks, and the Deployment drops to 1 replica until the HPA acts.
	t.Run("autoscaling: replicas stay rendered, within the HPA's bounds", func(t *testing.T) {
		objs := objsOf(t, "postgres-3-replicas")
		for _, name := range []string{"tg-tollgate-gateway", "tg-tollgate-books"} {
			d := find[*appsv1.Deployment](t, objs, name)
			if d.Spec.Replicas == nil {
				t.Errorf("%s: no replicas with autoscaling on, want a count (Helm's merge would drop it to 1)", name)
				continue
			}
			if *d.Spec.Replicas < 2 {
				t.Errorf("%s: replicas %d with autoscaling on, want at least minReplicas 2", name, *d.Spec.Replicas)
			}
		}
	})

	t.Run("trusted-issuers: a ConfigMap authz reads and reloads, Tollgate's issuer first", func(t *testing.T) {
		objs := objsOf(t, "trusted-issuers")
		cm := find[*corev1.ConfigMap](t, objs, "tg-tollgate-authz-config")
		file := cm.Data["authz.yaml"]
		cfg := authz.DefaultConfig()
		cfg.ConfigFile = "authz.yaml"
		if err := authz.CheckConfigFile(cfg, "authz.yaml", []byte(file)); err != nil {
			t.Errorf("the rendered authz.yaml is refused by authz: %v\n%s", err, file)
		}
		for _, want := range []string{"name: tollgate", "jwks_url: http://tg-tollgate-issuer", "name: keycloak", "path_prefix: /users"} {
			if !strings.Contains(file, want) {
				t.Errorf("authz.yaml lacks %q:\n%s", want, file)
			}
		}
		if strings.Index(file, "name: tollgate") > strings.Index(file, "name: keycloak") {
			t.Errorf("Tollgate's issuer is not first:\n%s", file)
		}
		gw := find[*appsv1.Deployment](t, objs, "tg-tollgate-gateway")
		c := gw.Spec.Template.Spec.InitContainers[0]
		if e, ok := envValue(c, "TOLLGATE_AUTHZ_CONFIG"); !ok || e.Value != "/etc/tollgate/authz/authz.yaml" {
			t.Errorf("authz TOLLGATE_AUTHZ_CONFIG = %+v, want /etc/tollgate/authz/authz.yaml", e)
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			if m.Name == "authz-config" {
				mounted = true
				// A subPath mount never sees a ConfigMap update.
				if m.SubPath != "" || m.MountPath != "/etc/tollgate/authz" {
					t.Errorf("authz-config mount = %+v, want the directory /etc/tollgate/authz without subPath", m)
				}
			}
		}
		if !mounted {
			t.Errorf("authz does not mount authz-config: %+v", c.VolumeMounts)
		}
		for k := range gw.Spec.Template.Annotations {
			if strings.Contains(k, "authz-config") {
				t.Errorf("gateway pods carry %s: a config change would restart them instead of being reloaded", k)
			}
		}
		if _, ok := envValue(find[*appsv1.Deployment](t, objsOf(t, "defaults"), "tg-tollgate-gateway").Spec.Template.Spec.InitContainers[0], "TOLLGATE_AUTHZ_CONFIG"); ok {
			t.Errorf("defaults set TOLLGATE_AUTHZ_CONFIG; without authz.config authz uses its flags")
		}
	})

	t.Run("kind: NodePort 30080, image loaded into the node", func(t *testing.T) {
		objs := objsOf(t, "kind")
		svc := find[*corev1.Service](t, objs, "tg-tollgate-gateway")
		if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].NodePort != 30080 {
			t.Errorf("gateway Service type %s nodePort %d, want NodePort 30080 (k8s/kind.yaml maps it)", svc.Spec.Type, svc.Spec.Ports[0].NodePort)
		}
		kindCfg, err := os.ReadFile(filepath.Join(repo, "k8s", "kind.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(kindCfg, []byte("containerPort: 30080")) {
			t.Errorf("k8s/kind.yaml does not map containerPort 30080")
		}
	})
}
