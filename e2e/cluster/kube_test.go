package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/deploy/chartcheck"
	"github.com/tollgate-dev/tollgate/internal/testenv"
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

// env is the control plane and the clients every test shares, started
// once per test binary.
var env struct {
	once sync.Once
	err  error
	dir  string
	cp   *ControlPlane
	helm chartcheck.Helm
	kube *kubernetes.Clientset
	dyn  *dynamic.DynamicClient
	rest *rest.Config
}

func TestMain(m *testing.M) {
	// An interrupt still stops the control plane and removes its files.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		teardown()
		os.Exit(1)
	}()
	code := m.Run()
	teardown()
	os.Exit(code)
}

var teardownOnce sync.Once

func teardown() {
	teardownOnce.Do(func() {
		if env.cp != nil {
			env.cp.Stop()
		}
		if env.dir != "" {
			os.RemoveAll(env.dir)
		}
	})
}

// setup builds (when not cached) and starts the control plane, or skips
// t with the reason, which is a failure under TOLLGATE_REQUIRE_ALL=1.
func setup(t *testing.T) {
	t.Helper()
	env.once.Do(func() {
		if _, err := exec.LookPath("go"); err != nil {
			env.err = fmt.Errorf("no go toolchain on PATH to build the control plane: %w", err)
			return
		}
		// A cold build of kube-apiserver takes a quarter of an hour on two
		// busy cores; the binaries are cached by version afterwards.
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
		defer cancel()
		bins, err := EnsureBinaries(ctx, repo, func(s string) { fmt.Fprintln(os.Stderr, "e2e/cluster:", s) })
		if err != nil {
			env.err = fmt.Errorf("the control plane could not be built from tools/etcd and tools/kubernetes: %w", err)
			return
		}
		if env.dir, err = os.MkdirTemp("", "tollgate-cluster-"); err != nil {
			env.err = err
			return
		}
		if env.helm, err = chartcheck.BuildHelm(ctx, repo, env.dir); err != nil {
			env.err = fmt.Errorf("helm could not be built from tools/helm: %w", err)
			return
		}
		if env.cp, err = Start(ctx, bins, filepath.Join(env.dir, "controlplane")); err != nil {
			env.err = fmt.Errorf("start the control plane: %w", err)
			return
		}
		env.rest = env.cp.restConfig(nil)
		if env.kube, err = kubernetes.NewForConfig(env.rest); err != nil {
			env.err = err
			return
		}
		env.dyn, env.err = dynamic.NewForConfig(env.rest)
	})
	if env.err != nil {
		if env.cp == nil {
			testenv.Missing(t, env.err.Error())
		}
		t.Fatal(env.err)
	}
	t.Cleanup(func() {
		if err := env.cp.Check(); err != nil {
			t.Errorf("control plane: %v", err)
		}
		if t.Failed() {
			t.Logf("control plane logs:\n%s", env.cp.Logs(15))
		}
	})
}

// restConfig is a system:masters client; warnings, if w is not nil, are
// recorded there instead of logged.
func (cp *ControlPlane) restConfig(w *warnings) *rest.Config {
	cfg := &rest.Config{
		Host:            cp.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.CA, CertData: cp.ClientCert, KeyData: cp.ClientKey},
		QPS:             100,
		Burst:           200,
	}
	if w != nil {
		cfg.WarningHandler = w
	}
	return cfg
}

// warnings records the API server's Warning headers.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

func (w *warnings) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.list)
}

// helmResult is one helm command's output.
type helmResult struct {
	stdout, stderr string
}

// helmRun runs the pinned helm against the control plane.
func helmRun(ctx context.Context, args ...string) (helmResult, error) {
	args = append(args, "--kubeconfig", env.cp.Kubeconfig)
	cmd := exec.CommandContext(ctx, env.helm.Path, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(env.helm.Home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(env.helm.Home, "config"),
		"HELM_DATA_HOME="+filepath.Join(env.helm.Home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := helmResult{stdout: stdout.String(), stderr: stderr.String()}
	if err != nil {
		return res, fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args[:len(args)-2], " "), err, res.stderr, res.stdout)
	}
	return res, nil
}

// mustHelm runs helm and fails t on an error or on anything on standard
// error: Helm prints the API server's warnings there (a Pod Security
// violation in warn mode, a deprecated API, an unknown field).
func mustHelm(t *testing.T, args ...string) helmResult {
	t.Helper()
	res, err := helmRun(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.TrimSpace(res.stderr); s != "" {
		t.Errorf("helm %s printed warnings, want none:\n%s", args[0], s)
	}
	return res
}

// createNamespace makes a namespace that enforces (and warns and audits
// at) the restricted Pod Security Standard.
func createNamespace(t *testing.T, name string) {
	t.Helper()
	labels := map[string]string{}
	for _, mode := range []string{"enforce", "warn", "audit"} {
		labels["pod-security.kubernetes.io/"+mode] = "restricted"
		labels["pod-security.kubernetes.io/"+mode+"-version"] = "latest"
	}
	_, err := env.kube.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// createSecret creates an Opaque Secret, as a user would for the values
// that name an existing one.
func createSecret(t *testing.T, ns, name string, data map[string][]byte) {
	t.Helper()
	_, err := env.kube.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Data:       data,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Secret %s/%s: %v", ns, name, err)
	}
}

// installCRD creates the ServiceMonitor CRD once and waits until it is
// served.
var crdOnce sync.Once

func installServiceMonitorCRD(t *testing.T) {
	t.Helper()
	var err error
	crdOnce.Do(func() {
		var data []byte
		if data, err = os.ReadFile("testdata/servicemonitor-crd.yaml"); err != nil {
			return
		}
		var objs []*unstructured.Unstructured
		if objs, err = decodeManifests(data); err != nil {
			return
		}
		gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
		if _, err = env.dyn.Resource(gvr).Create(t.Context(), objs[0], metav1.CreateOptions{}); err != nil {
			return
		}
		err = poll(t.Context(), time.Minute, func() (bool, error) {
			crd, err := env.dyn.Resource(gvr).Get(t.Context(), objs[0].GetName(), metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
	})
	if err != nil {
		t.Fatalf("install the ServiceMonitor CRD: %v", err)
	}
}

// decodeManifests splits a multi-document YAML stream into objects.
func decodeManifests(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// errFinal wraps an error that waiting longer cannot cure.
type errFinal struct{ error }

// poll calls cond every 250ms until it is true, returns an errFinal, or
// timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if f, final := err.(errFinal); final {
			return f.error
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("not true after %v: %w", timeout, last)
			}
			return fmt.Errorf("not true after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// mapper maps kinds to resources, rediscovering after a CRD appears.
func newMapper() meta.RESTMapper {
	return restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.kube.Discovery()))
}

// releaseObjects returns the objects of a release as stored: its
// manifest and, with hooks, its hooks (the helm test pod, the generated
// Secrets of the revision that created them).
func releaseObjects(t *testing.T, ns, release string, hooks bool) []*unstructured.Unstructured {
	t.Helper()
	out := mustHelm(t, "get", "manifest", release, "-n", ns).stdout
	if hooks {
		out += "\n---\n" + mustHelm(t, "get", "hooks", release, "-n", ns).stdout
	}
	objs, err := decodeManifests([]byte(out))
	if err != nil {
		t.Fatalf("decode the release's manifest: %v", err)
	}
	return objs
}

// checkDryRun applies every object with a server-side dry run and strict
// field validation, as the release's own field manager would not, and
// fails on an error or a warning: an unknown or duplicate field, a
// value the API server's validation refuses, a Pod Security violation
// (the helm test pod is created only by this dry run).
func checkDryRun(t *testing.T, ns string, objs []*unstructured.Unstructured) {
	t.Helper()
	w := &warnings{}
	dyn, err := dynamic.NewForConfig(env.cp.restConfig(w))
	if err != nil {
		t.Fatal(err)
	}
	mapper := newMapper()
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("%s %s: no resource for it: %v", gvk.Kind, o.GetName(), err)
			continue
		}
		o = o.DeepCopy()
		// Helm sets these on what it creates; an apply must not fight them.
		data, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		force := true
		_, err = ri.Patch(t.Context(), o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
			DryRun:          []string{metav1.DryRunAll},
			FieldManager:    "tollgate-e2e-dry-run",
			Force:           &force,
			FieldValidation: "Strict",
		})
		if err != nil {
			t.Errorf("server-side dry run of %s %s: %v", gvk.Kind, o.GetName(), err)
		}
	}
	for _, warn := range w.get() {
		t.Errorf("server-side dry run warned: %s", warn)
	}
}

// checkPods waits until each Deployment of release has a ReplicaSet that
// created all its Pods, and fails on a Pod admission refused (the
// ReplicaSet's ReplicaFailure condition, with the refusal's message).
func checkPods(t *testing.T, ns, release string) {
	t.Helper()
	sel := "app.kubernetes.io/instance=" + release
	deps, err := env.kube.AppsV1().Deployments(ns).List(t.Context(), metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) == 0 {
		t.Fatalf("release %s has no Deployments in %s", release, ns)
	}
	for _, d := range deps.Items {
		err := poll(t.Context(), 90*time.Second, func() (bool, error) {
			rss, err := env.kube.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: sel})
			if err != nil {
				return false, err
			}
			rs := newestReplicaSet(rss.Items, d)
			if rs == nil {
				return false, fmt.Errorf("no ReplicaSet yet")
			}
			for _, c := range rs.Status.Conditions {
				if c.Type == appsv1.ReplicaSetReplicaFailure && c.Status == corev1.ConditionTrue {
					err := fmt.Errorf("ReplicaSet %s cannot create Pods: %s", rs.Name, c.Message)
					// A refusal by Pod Security stands; another (a
					// ServiceAccount the admission cache has not seen
					// yet) may pass on the controller's retry.
					if strings.Contains(c.Message, "violates PodSecurity") {
						return false, errFinal{err}
					}
					return false, err
				}
			}
			want := int32(1)
			if rs.Spec.Replicas != nil {
				want = *rs.Spec.Replicas
			}
			if rs.Status.Replicas != want {
				return false, fmt.Errorf("ReplicaSet %s has %d of %d Pods", rs.Name, rs.Status.Replicas, want)
			}
			return true, nil
		})
		if err != nil {
			t.Errorf("Deployment %s: %v", d.Name, err)
		}
	}
}

// newestReplicaSet is the ReplicaSet d owns with the highest revision.
func newestReplicaSet(rss []appsv1.ReplicaSet, d appsv1.Deployment) *appsv1.ReplicaSet {
	var best *appsv1.ReplicaSet
	for i := range rss {
		rs := &rss[i]
		if !slices.ContainsFunc(rs.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == d.UID }) {
			continue
		}
		if best == nil || rsRevision(rs) > rsRevision(best) {
			best = rs
		}
	}
	return best
}

func rsRevision(rs *appsv1.ReplicaSet) int {
	n, _ := strconv.Atoi(rs.Annotations["deployment.kubernetes.io/revision"])
	return n
}

// checkExist asserts that every object of the release exists.
func checkExist(t *testing.T, ns string, objs []*unstructured.Unstructured) {
	t.Helper()
	mapper := newMapper()
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("%s %s: %v", gvk.Kind, o.GetName(), err)
			continue
		}
		if _, err := env.dyn.Resource(m.Resource).Namespace(ns).Get(t.Context(), o.GetName(), metav1.GetOptions{}); err != nil {
			t.Errorf("%s %s of the release: %v", gvk.Kind, o.GetName(), err)
		}
	}
}

// secretData returns a Secret's data, or nil when it does not exist.
func secretData(t *testing.T, ns, name string) map[string][]byte {
	t.Helper()
	s, err := env.kube.CoreV1().Secrets(ns).Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return s.Data
}

// toYAML is for failure messages.
func toYAML(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}
