// Package cluster runs the Helm chart against a real Kubernetes control
// plane: etcd, kube-apiserver and kube-controller-manager, built from the
// versions pinned in tools/etcd and tools/kubernetes and started on
// loopback for one test run. There is no kubelet, scheduler or container
// runtime: the API server's validation, defaulting and admission (Pod
// Security included) and the controllers that turn Deployments into
// ReplicaSets and Pods run for real; Pods stay Pending.
//
// It must never reach anything but 127.0.0.1: the service CIDR it gives
// the API server is one that nothing connects to.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binaries are the control plane's programs.
type Binaries struct {
	Etcd, APIServer, ControllerManager string
}

// pinnedVersion reads the version of module from the go.mod in dir.
func pinnedVersion(dir, module string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return "", err
	}
	re := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(module) + `\s+(v\S+)`)
	m := re.FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf("%s/go.mod does not require %s", dir, module)
	}
	return string(m[1]), nil
}

// CacheDir is where built control-plane binaries are kept, one directory
// per pinned version, outside the repository: TOLLGATE_CONTROLPLANE_CACHE,
// or tollgate/controlplane under the user's cache directory.
func CacheDir() (string, error) {
	if d := os.Getenv("TOLLGATE_CONTROLPLANE_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "tollgate", "controlplane"), nil
}

// kubeLDFlags stamp the release into the binaries, as Kubernetes' own
// build does, so /version (and Helm's .Capabilities.KubeVersion) report
// it rather than v0.0.0-master.
func kubeLDFlags(version string) string {
	major, minor, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	p := "k8s.io/component-base/version."
	return strings.Join([]string{"-s", "-w",
		"-X", p + "gitVersion=" + version,
		"-X", p + "gitMajor=" + major,
		"-X", p + "gitMinor=" + minor,
		"-X", p + "gitTreeState=clean",
	}, " ")
}

// EnsureBinaries returns the control-plane binaries for the versions
// pinned in repo/tools, building the missing ones into the cache (etcd
// about a minute and a half, kube-apiserver and kube-controller-manager
// together about a quarter of an hour on two busy cores with a cold Go
// build cache). log receives one line per build.
func EnsureBinaries(ctx context.Context, repo string, log func(string)) (Binaries, error) {
	cache, err := CacheDir()
	if err != nil {
		return Binaries{}, err
	}
	etcdDir := filepath.Join(repo, "tools", "etcd")
	kubeDir := filepath.Join(repo, "tools", "kubernetes")
	etcdVersion, err := pinnedVersion(etcdDir, "go.etcd.io/etcd/server/v3")
	if err != nil {
		return Binaries{}, err
	}
	kubeVersion, err := pinnedVersion(kubeDir, "k8s.io/kubernetes")
	if err != nil {
		return Binaries{}, err
	}
	etcdOut := filepath.Join(cache, "etcd-"+etcdVersion)
	kubeOut := filepath.Join(cache, "kubernetes-"+kubeVersion)
	b := Binaries{
		Etcd:              filepath.Join(etcdOut, "etcd"),
		APIServer:         filepath.Join(kubeOut, "kube-apiserver"),
		ControllerManager: filepath.Join(kubeOut, "kube-controller-manager"),
	}
	if !exists(b.Etcd) {
		log("building etcd " + etcdVersion + " from tools/etcd into " + etcdOut)
		if err := goBuild(ctx, etcdDir, etcdOut, "-s -w", "go.etcd.io/etcd/server/v3"); err != nil {
			return Binaries{}, err
		}
		// go build names a /v3 main package after the element before it.
		if err := os.Rename(filepath.Join(etcdOut, "server"), b.Etcd); err != nil {
			return Binaries{}, err
		}
	}
	if !exists(b.APIServer) || !exists(b.ControllerManager) {
		log("building kube-apiserver and kube-controller-manager " + kubeVersion + " from tools/kubernetes into " + kubeOut + " (minutes with a cold build cache)")
		if err := goBuild(ctx, kubeDir, kubeOut, kubeLDFlags(kubeVersion),
			"k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager"); err != nil {
			return Binaries{}, err
		}
	}
	return b, nil
}

func exists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// goBuild builds pkgs of the module in dir into out. The binaries are
// linked into a temporary directory and renamed into place, so an
// interrupted build never leaves a truncated binary in the cache.
func goBuild(ctx context.Context, dir, out, ldflags string, pkgs ...string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	args := append([]string{"build", "-ldflags", ldflags, "-o", tmp + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s in %s: %w\n%s", strings.Join(args, " "), dir, err, out)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(out, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// ControlPlane is a running etcd, kube-apiserver and
// kube-controller-manager on 127.0.0.1.
type ControlPlane struct {
	// URL is the API server's https address.
	URL string
	// Kubeconfig is a kubeconfig file for a system:masters client.
	Kubeconfig string
	// CA, ClientCert and ClientKey are PEM, for clients built in Go.
	CA, ClientCert, ClientKey []byte

	dir   string
	procs []*process
}

// process is one started program and where its output goes.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// Start starts the control plane with its files in dir (which it owns
// until Stop). Ports are chosen free on 127.0.0.1.
func Start(ctx context.Context, b Binaries, dir string) (*ControlPlane, error) {
	cp := &ControlPlane{dir: dir}
	if err := cp.start(ctx, b); err != nil {
		cp.Stop()
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) start(ctx context.Context, b Binaries) error {
	pki, err := newPKI(cp.dir)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	cp.CA, cp.ClientCert, cp.ClientKey = pki.caPEM, pki.adminCert, pki.adminKey

	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	if err := cp.run(ctx, "etcd", b.Etcd,
		"--name", "tollgate-test",
		"--data-dir", filepath.Join(cp.dir, "etcd"),
		"--listen-client-urls", etcdURL,
		"--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "tollgate-test="+peerURL,
		"--unsafe-no-fsync", // a test's data need not survive a power cut
		"--log-level", "warn",
	); err != nil {
		return err
	}
	if err := cp.waitHTTP(ctx, "etcd", etcdURL+"/health", http.DefaultClient); err != nil {
		return err
	}

	cp.URL = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	if err := cp.run(ctx, "kube-apiserver", b.APIServer,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(apiPort),
		"--cert-dir", filepath.Join(cp.dir, "apiserver"),
		"--tls-cert-file", pki.file("apiserver.crt"),
		"--tls-private-key-file", pki.file("apiserver.key"),
		"--client-ca-file", pki.file("ca.crt"),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", pki.file("sa.pub"),
		"--service-account-signing-key-file", pki.file("sa.key"),
		// A range nothing here routes to or connects to: Services get
		// addresses from it, and no traffic ever goes there.
		"--service-cluster-ip-range", "10.96.0.0/24",
		// Endpoints may not hold 127.x addresses, so the API server must
		// not publish its own.
		"--endpoint-reconciler-type", "none",
		"--authorization-mode", "RBAC",
		"--profiling=false",
	); err != nil {
		return err
	}
	client, err := cp.httpClient()
	if err != nil {
		return err
	}
	if err := cp.waitHTTP(ctx, "kube-apiserver", cp.URL+"/readyz", client); err != nil {
		return err
	}

	if cp.Kubeconfig, err = pki.kubeconfig("admin.kubeconfig", cp.URL, pki.adminCert, pki.adminKey); err != nil {
		return err
	}
	cmKubeconfig, err := pki.kubeconfig("controller-manager.kubeconfig", cp.URL, pki.cmCert, pki.cmKey)
	if err != nil {
		return err
	}
	return cp.run(ctx, "kube-controller-manager", b.ControllerManager,
		"--kubeconfig", cmKubeconfig,
		"--leader-elect=false",
		"--secure-port", "0",
		// Each controller acts as its own service account, which the
		// bootstrap RBAC policy grants what it needs (the manager's own
		// identity may not create ReplicaSets or Pods).
		"--use-service-account-credentials=true",
		// What the chart's lifecycle needs: Deployments make ReplicaSets,
		// ReplicaSets make Pods (admission runs on them), uninstall's
		// deletions cascade. No HPA controller: with no metrics it would
		// only log, and the tests set the scale an HPA would.
		"--controllers", "deployment,replicaset,garbagecollector,namespace,serviceaccount,serviceaccount-token",
		"--service-account-private-key-file", pki.file("sa.key"),
		"--root-ca-file", pki.file("ca.crt"),
	)
}

// run starts a program with its output in dir/<name>.log.
func (cp *ControlPlane) run(ctx context.Context, name, bin string, args ...string) error {
	logPath := filepath.Join(cp.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so Stop can end it and anything it started;
	// killed by the kernel if the test binary dies without Stop (a
	// go test -timeout panic, a kill).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startOnSpawner(cmd); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	cp.procs = append(cp.procs, p)
	return nil
}

// Pdeathsig fires when the thread that started the child exits, and Go
// retires threads at will; so every child is started from one goroutine
// locked to its thread for the life of the process.
var (
	spawnOnce sync.Once
	spawnCh   = make(chan spawnRequest)
)

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

func startOnSpawner(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for req := range spawnCh {
				req.done <- req.cmd.Start()
			}
		}()
	})
	done := make(chan error)
	spawnCh <- spawnRequest{cmd: cmd, done: done}
	return <-done
}

// waitHTTP polls url until it answers 200, the process named exits, or
// two minutes pass.
func (cp *ControlPlane) waitHTTP(ctx context.Context, name, url string, client *http.Client) error {
	p := cp.procs[len(cp.procs)-1]
	deadline := time.Now().Add(2 * time.Minute)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v) before it was ready:\n%s", name, p.err, tail(p.log, 40))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s after 2 minutes:\n%s", name, url, tail(p.log, 40))
		}
	}
}

// Check reports a control-plane process that has exited, with the end of
// its log.
func (cp *ControlPlane) Check() error {
	for _, p := range cp.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v):\n%s", p.name, p.err, tail(p.log, 40))
		default:
		}
	}
	return nil
}

// Logs returns the end of every process's log, for a failing test.
func (cp *ControlPlane) Logs(lines int) string {
	var b strings.Builder
	for _, p := range cp.procs {
		fmt.Fprintf(&b, "--- %s\n%s\n", p.name, tail(p.log, lines))
	}
	return b.String()
}

// Stop ends every process (SIGTERM, then SIGKILL after ten seconds),
// latest first, and waits for each.
func (cp *ControlPlane) Stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		p := cp.procs[i]
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	cp.procs = nil
}

func (cp *ControlPlane) httpClient() (*http.Client, error) {
	cert, err := tls.X509KeyPair(cp.ClientCert, cp.ClientKey)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.CA)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}

// freePorts returns n distinct ports that were free on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pki is the control plane's certificates and keys, as files in dir.
type pki struct {
	dir                 string
	caPEM               []byte
	adminCert, adminKey []byte
	cmCert, cmKey       []byte
	caCert              *x509.Certificate
	caKey               *ecdsa.PrivateKey
}

func (p *pki) file(name string) string { return filepath.Join(p.dir, name) }

func newPKI(root string) (*pki, error) {
	p := &pki{dir: filepath.Join(root, "pki")}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if p.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tollgate-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		return nil, err
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(p.file("ca.crt"), p.caPEM, 0o600); err != nil {
		return nil, err
	}

	serverCert, serverKey, err := p.issue(2, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.file("apiserver.crt"), serverCert, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.file("apiserver.key"), serverKey, 0o600); err != nil {
		return nil, err
	}
	if p.adminCert, p.adminKey, err = p.issue(3, pkix.Name{CommonName: "tollgate-test", Organization: []string{"system:masters"}}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return nil, err
	}
	if p.cmCert, p.cmKey, err = p.issue(4, pkix.Name{CommonName: "system:kube-controller-manager"}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return nil, err
	}

	// The service-account token signing pair.
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.file("sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.file("sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return nil, err
	}
	return p, nil
}

// issue returns a certificate signed by the CA and its key, as PEM.
func (p *pki) issue(serial int64, subject pkix.Name, usage x509.ExtKeyUsage, dns []string, ips []net.IP) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// kubeconfig writes a kubeconfig for url with a client certificate.
func (p *pki) kubeconfig(name, url string, cert, key []byte) (string, error) {
	path := filepath.Join(p.dir, "..", name)
	for _, f := range []struct {
		name string
		data []byte
	}{{name + ".crt", cert}, {name + ".key", key}} {
		if err := os.WriteFile(p.file(f.name), f.data, 0o600); err != nil {
			return "", err
		}
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: user
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: test
  context: {cluster: test, user: user}
current-context: test
`, url, p.file("ca.crt"), p.file(name+".crt"), p.file(name+".key"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	return filepath.Clean(path), nil
}
