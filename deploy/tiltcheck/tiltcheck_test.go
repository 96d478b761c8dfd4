package tiltcheck

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/deploy/chartcheck"
	"github.com/tollgate-dev/tollgate/internal/testenv"
)

var repo = func() string {
	p, err := filepath.Abs("../..")
	if err != nil {
		panic(err)
	}
	return p
}()

var helmOnce struct {
	sync.Once
	dir  string
	helm chartcheck.Helm
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if helmOnce.dir != "" {
		os.RemoveAll(helmOnce.dir)
	}
	os.Exit(code)
}

// render is helm() for the Tiltfile: the pinned helm CLI's `helm template`.
func render(t *testing.T) HelmFunc {
	t.Helper()
	helmOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		helmOnce.dir, helmOnce.err = os.MkdirTemp("", "tiltcheck")
		if helmOnce.err == nil {
			helmOnce.helm, helmOnce.err = chartcheck.BuildHelm(ctx, repo, helmOnce.dir)
		}
	})
	if helmOnce.err != nil {
		testenv.Missing(t, "helm could not be built from tools/helm: "+helmOnce.err.Error())
	}
	return func(chart, release, namespace string, values, set []string) (string, error) {
		out, err := helmOnce.helm.Template(t.Context(), chart, release, namespace, values, set...)
		return string(out), err
	}
}

func TestTiltfileLoads(t *testing.T) {
	res, err := Load(filepath.Join(repo, "Tiltfile"), render(t))
	if err != nil {
		t.Fatalf("Load(Tiltfile): %v", err)
	}
	names := map[string]Resource{}
	for _, r := range res.Resources {
		names[r.Name] = r
	}
	gw, ok := names["tollgate-gateway"]
	if !ok || !strings.Contains(strings.Join(gw.PortForwards, " "), "8080:8080") {
		t.Errorf("tollgate-gateway resource = %+v, want a port-forward 8080:8080", gw)
	}
	for _, want := range []string{"tollgate-issuer", "tollgate-books", "tollgate-gateway", "tutorial-curl", "tutorial-go"} {
		if len(names[want].Labels) == 0 {
			t.Errorf("resource %s has no labels (or is missing): %+v", want, names[want])
		}
	}
	for _, doc := range res.YAML {
		if strings.Contains(doc, "helm.sh/hook: test") {
			t.Errorf("the helm test pod is deployed by Tilt:\n%.300s", doc)
		}
	}
	if len(res.DockerBuilds) != 1 || res.DockerBuilds[0].Ref != "tollgate" {
		t.Errorf("docker builds = %+v, want one of image tollgate", res.DockerBuilds)
	}
}

// TestLoadCatches feeds broken copies of the Tiltfile to Load: each must
// fail, as Tilt itself would (or as the deployment would, later).
func TestLoadCatches(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(repo, "Tiltfile"))
	if err != nil {
		t.Fatal(err)
	}
	helm := render(t)
	tests := []struct {
		name, old, new, want string
	}{
		{"misspelt builtin", "docker_build(", "docker_buidl(", "undefined: docker_buidl"},
		{"unknown builtin", "k8s_yaml(manifests)", "k8s_yaml(manifests)\nk8s_apply(manifests)", "undefined: k8s_apply"},
		{"misspelt keyword", "port_forwards=['8080:8080'", "port_forward=['8080:8080'", "unexpected keyword argument"},
		{"missing Dockerfile", "k8s/tilt.Dockerfile", "k8s/tilt.dockerfile", "does not exist"},
		{"missing values file", "'charts/tollgate/values-dev.yaml'", "'charts/tollgate/values-devel.yaml'", "does not exist"},
		{"missing chart", "'charts/tollgate',", "'charts/tolgate',", "does not exist"},
		{"missing dependency", "'internal', 'issuer'", "'internals', 'issuer'", "does not exist"},
		{"missing script", "files/tutorial.sh", "files/tutorial-flow.sh", "does not exist"},
		{"missing directory", "cd e2e/kind", "cd e2e/knd", "not a directory"},
		{"unknown workload", "'tollgate-books',\n    resource_deps", "'tollgate-book',\n    resource_deps", "no such workload"},
		{"unknown resource dependency", "resource_deps=['tollgate-issuer', 'tollgate-books']", "resource_deps=['tollgate-issuer', 'books']", "not a resource"},
		{"image nobody uses", "docker_build(\n    'tollgate',", "docker_build(\n    'tollgate-dev',", "no container"},
		{"Dockerfile copies a file outside only", "only=['bin/linux/tollgate', 'envoy/envoy.yaml']", "only=['bin/linux/tollgate']", "leaves out"},
		{"bad trigger mode", "trigger_mode=TRIGGER_MODE_MANUAL", "trigger_mode='manual'", "trigger_mode"},
		{"syntax error", "namespace = 'tollgate'", "namespace = 'tollgate", "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(good), tt.old) {
				t.Fatalf("the Tiltfile has no %q to mutate", tt.old)
			}
			bad := strings.Replace(string(good), tt.old, tt.new, 1)
			_, err := LoadSource(repo, "Tiltfile", []byte(bad), helm)
			if err == nil {
				t.Fatalf("Load(Tiltfile with %s) = nil, want an error", tt.name)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load(Tiltfile with %s) = %v, want an error about %q", tt.name, err, tt.want)
			}
		})
	}
}
