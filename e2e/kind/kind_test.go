//go:build kind

package kinde2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	kindcmd "sigs.k8s.io/kind/pkg/cmd"
	dockerimage "sigs.k8s.io/kind/pkg/cmd/kind/load/docker-image"

	"github.com/tollgate-dev/tollgate/deploy/chartcheck"
	"github.com/tollgate-dev/tollgate/internal/testenv"
	"github.com/tollgate-dev/tollgate/internal/tutorial"
)

// TestKind is the whole delivery path on a real cluster: kind from
// k8s/kind.yaml, the image built and loaded, the chart installed with
// values-kind.yaml in a namespace that enforces the restricted Pod
// Security Standard, then the tutorial flow, the forged-header checks and
// fail-closed against the real Envoy, in sidecar and in service mode.
// Set TOLLGATE_KEEP_CLUSTER=1 to keep the cluster for a look afterwards.
func TestKind(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		testenv.Missing(t, "docker not found: the kind end-to-end test runs Kubernetes in Docker; install Docker Engine or Docker Desktop")
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		testenv.Missing(t, "docker does not answer (docker info failed): start the Docker daemon")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 25*time.Minute)
	defer cancel()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()

	// The cluster: k8s/kind.yaml, with a unique name and the gateway's
	// node port on a free host port so a `make kind-up` cluster can coexist.
	cfg, err := LoadConfig(filepath.Join(repo, "k8s", "kind.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	hostPort := freePort(t)
	for i := range cfg.Nodes {
		for j := range cfg.Nodes[i].ExtraPortMappings {
			if cfg.Nodes[i].ExtraPortMappings[j].ContainerPort == 30080 {
				cfg.Nodes[i].ExtraPortMappings[j].HostPort = hostPort
			}
		}
	}
	name := fmt.Sprintf("tollgate-e2e-%d", time.Now().Unix()%100000)
	cfg.Name = name
	kubeconfig := filepath.Join(work, "kubeconfig")
	logger := kindcmd.NewLogger()
	provider := cluster.NewProvider(cluster.ProviderWithDocker(), cluster.ProviderWithLogger(logger))
	t.Logf("creating kind cluster %s (gateway on 127.0.0.1:%d)", name, hostPort)
	if err := provider.Create(name, cluster.CreateWithV1Alpha4Config(cfg), cluster.CreateWithKubeconfigPath(kubeconfig),
		cluster.CreateWithWaitForReady(3*time.Minute), cluster.CreateWithDisplayUsage(false), cluster.CreateWithDisplaySalutation(false)); err != nil {
		t.Fatalf("create cluster: %v", err)
	}
	t.Cleanup(func() {
		if os.Getenv("TOLLGATE_KEEP_CLUSTER") == "1" {
			t.Logf("keeping cluster %s (kubeconfig %s)", name, kubeconfig)
			return
		}
		if t.Failed() {
			dir := filepath.Join(os.TempDir(), name+"-logs")
			if err := provider.CollectLogs(name, dir); err == nil {
				t.Logf("cluster logs in %s", dir)
			}
		}
		if err := provider.Delete(name, kubeconfig); err != nil {
			t.Errorf("delete cluster %s: %v", name, err)
		}
	})
	nodeList, err := provider.ListNodes(name)
	if err != nil || len(nodeList) == 0 {
		t.Fatalf("list nodes: %v (%d nodes)", err, len(nodeList))
	}
	node := nodeList[0]

	// The image, built like `make image` and loaded into the node.
	image := "tollgate:e2e-" + fmt.Sprint(time.Now().Unix())
	run(t, ctx, repo, "docker", "build", "-t", image, "--build-arg", "VERSION=e2e", ".")
	load := dockerimage.NewCommand(logger, kindcmd.StandardIOStreams())
	load.SetArgs([]string{image, "--name", name})
	if err := load.Execute(); err != nil {
		t.Fatalf("kind load docker-image: %v", err)
	}

	// The namespace enforces the restricted Pod Security Standard, so a
	// pod that does not meet it is refused by the API server itself.
	const ns, release = "tollgate", "tollgate"
	kubectl(t, ctx, node, "create", "namespace", ns)
	kubectl(t, ctx, node, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")

	helm, err := chartcheck.BuildHelm(ctx, repo, work)
	if err != nil {
		t.Fatalf("build helm: %v", err)
	}
	repoTag := strings.SplitN(image, ":", 2)
	install := func(t *testing.T, set ...string) {
		t.Helper()
		args := []string{"upgrade", "--install", release, filepath.Join(repo, "charts", "tollgate"),
			"--kubeconfig", kubeconfig, "--namespace", ns,
			"--values", filepath.Join(repo, "charts", "tollgate", "values-kind.yaml"),
			"--set", "image.repository=" + repoTag[0], "--set", "image.tag=" + repoTag[1],
			"--set", fmt.Sprintf("publicURL=http://127.0.0.1:%d", hostPort),
			"--wait", "--timeout", "5m"}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		if _, err := helm.Run(ctx, args...); err != nil {
			t.Fatalf("helm upgrade --install: %v", err)
		}
		kubectl(t, ctx, node, "-n", ns, "rollout", "status", "deployment", "-l", "app.kubernetes.io/instance="+release, "--timeout=180s")
	}

	base := fmt.Sprintf("http://127.0.0.1:%d", hostPort)
	client := &http.Client{Timeout: 10 * time.Second}
	adminPassword := func(t *testing.T) string {
		out := kubectl(t, ctx, node, "-n", ns, "get", "secret", release+"-admin", "-o", "jsonpath={.data.password}")
		p, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("admin password: %v", err)
		}
		return string(p)
	}
	flow := func(t *testing.T) {
		waitFor(t, ctx, base+"/.well-known/jwks.json")
		opts := tutorial.Options{AdminName: "admin", AdminPassword: adminPassword(t)}
		for _, s := range tutorial.Steps(base, client, opts) {
			if !t.Run(s.Name, func(t *testing.T) {
				if err := s.Run(ctx); err != nil {
					t.Fatal(err)
				}
			}) {
				t.FailNow()
			}
		}
	}

	t.Run("sidecar mode", func(t *testing.T) {
		install(t)
		flow(t)
		t.Run("helm test", func(t *testing.T) {
			if _, err := helm.Run(ctx, "test", release, "--kubeconfig", kubeconfig, "--namespace", ns, "--logs", "--timeout", "3m"); err != nil {
				t.Errorf("helm test: %v", err)
			}
		})
	})

	t.Run("service mode and fail closed", func(t *testing.T) {
		install(t, "authz.mode=service", "authz.replicas=2")
		flow(t)
		if err := tutorial.Register(ctx, base, client, "closed-user", "a long passphrase"); err != nil {
			t.Fatal(err)
		}
		token, err := tutorial.Login(ctx, base, client, "closed-user", "a long passphrase")
		if err != nil {
			t.Fatal(err)
		}
		kubectl(t, ctx, node, "-n", ns, "scale", "deployment", release+"-authz", "--replicas=0")
		for deadline := time.Now().Add(2 * time.Minute); ; {
			pods := kubectl(t, ctx, node, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/component=authz", "-o", "name")
			if strings.TrimSpace(pods) == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("authz pods still running after scaling to 0: %s", pods)
			}
			time.Sleep(2 * time.Second)
		}
		// Envoy notices through its gRPC health checks and DNS refresh;
		// until then a request may still reach a terminating pod.
		deadline := time.Now().Add(time.Minute)
		for {
			err := tutorial.FailClosed(ctx, base, client, token)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("with authz scaled to 0: %v", err)
			}
			time.Sleep(2 * time.Second)
		}
		if err := tutorial.Public(ctx, base, client); err != nil {
			t.Errorf("public routes with authz scaled to 0: %v", err)
		}
	})
}

// kubectl runs kubectl inside the kind node (every node image has it).
func kubectl(t *testing.T, ctx context.Context, node nodes.Node, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := node.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig=/etc/kubernetes/admin.conf"}, args...)...)
	if err := cmd.SetStdout(&out).SetStderr(&errb).Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

func run(t *testing.T, ctx context.Context, dir, name string, args ...string) {
	t.Helper()
	t.Logf("%s %s", name, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

// waitFor polls url until it answers 200: the NodePort and Envoy's
// listeners take a moment after the rollout.
func waitFor(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s never answered 200 (last: %v)", url, err)
		}
		time.Sleep(time.Second)
	}
}
