package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tollgate-dev/tollgate/issuer"
)

// TestChart runs the lifecycle first, on a cluster without the
// ServiceMonitor CRD, then installs the CRD and every value set.
func TestChart(t *testing.T) {
	setup(t)
	t.Run("lifecycle", testLifecycle)
	t.Run("older Secrets", testOlderSecrets)
	t.Run("install", testInstalls)
}

// lifecycle is one release through install, upgrades, rotation, password
// change, rollbacks, uninstall and reinstall, with what a user relies on
// checked after every step.
type lifecycle struct {
	t        *testing.T
	ns       string
	release  string
	fullname string
	alg      string   // issuer.signingAlg in force
	data     string   // the issuer's data directory, as its volume would keep it
	want     material // the keys and password the user expects
	tokens   []string // every token signed so far, by step
	steps    []string
	// hooks holds, by revision, the material (base64, as in YAML) its
	// stored hooks may hold: what that revision's hooks created, or, for
	// a rollback, what the hooks it copied from the target revision did.
	hooks map[int]map[string]bool
}

func testLifecycle(t *testing.T) {
	l := &lifecycle{t: t, ns: "lifecycle", release: "tg", fullname: "tg-tollgate", alg: issuer.ES256, data: t.TempDir(), hooks: map[int]map[string]bool{}}
	createNamespace(t, l.ns)
	chartArgs := func(verb string, extra ...string) []string {
		return append([]string{verb, l.release, chart, "-n", l.ns}, extra...)
	}

	// 1. Install with no values at all: the chart generates a key and a
	// password.
	mustHelm(t, chartArgs("install")...)
	l.want = readMaterial(t, l.ns, l.fullname)
	if len(l.want.keys) != 1 || len(l.want.password) != 24 {
		t.Fatalf("after install: %d keys and a %d-character password, want 1 generated key and 24 characters", len(l.want.keys), len(l.want.password))
	}
	l.remember(1, l.want)
	l.check("install")
	checkPods(t, l.ns, l.release)

	// 2, 3. Upgrades, with the same values and with changed ones.
	mustHelm(t, chartArgs("upgrade")...)
	l.check("upgrade, same values")
	mustHelm(t, chartArgs("upgrade", "--reuse-values", "--set", "log.level=debug", "--set", "gateway.replicas=3")...)
	l.check("upgrade, changed values")

	// 4. A key rotation as the README describes it: a new key from the
	// issuer's keygen added to the Secret beside the current one.
	pemData, kid, err := issuer.GenerateKeyPEM(issuer.ES256)
	if err != nil {
		t.Fatal(err)
	}
	l.patchSecret(l.fullname+"-signing-keys", map[string]string{kid + ".pem": base64.StdEncoding.EncodeToString(pemData)})
	l.want.keys[kid+".pem"] = pemData
	l.check("key rotation: new key added")

	// 5. The admin password changed as the README describes it.
	newPassword := "a new admin passphrase " + strconv.FormatInt(time.Now().UnixNano(), 36)
	l.patchSecret(l.fullname+"-admin", map[string]string{"password": base64.StdEncoding.EncodeToString([]byte(newPassword))})
	l.want.password = newPassword
	l.check("admin password changed")

	mustHelm(t, chartArgs("upgrade", "--reuse-values")...)
	l.check("upgrade after rotation and password change")

	// 6. Rollback to every earlier revision, revision 1 included: the
	// stored manifests must not bring old keys or passwords back, nor drop
	// the key added since.
	last := l.revision()
	for r := 1; r < last; r++ {
		mustHelm(t, "rollback", l.release, strconv.Itoa(r), "-n", l.ns)
		// A rollback's record copies the target's hooks (never re-run).
		l.hooks[l.revision()] = l.hooks[r]
		l.check("rollback to revision " + strconv.Itoa(r))
	}
	mustHelm(t, chartArgs("upgrade", "--reuse-values", "--set", "log.level=info")...)
	l.check("upgrade after the rollbacks")

	// 7. The rotation's second half: the old key removed from the Secret.
	l.removeSecretKey(l.fullname+"-signing-keys", "signing-key-0.pem")
	delete(l.want.keys, "signing-key-0.pem")
	l.checkMaterial("key rotation: old key removed")
	mustHelm(t, chartArgs("upgrade", "--reuse-values")...)
	l.checkMaterial("upgrade after the old key was removed")

	// 8. A signingAlg change adds a key of the new type beside the old
	// ones: the issuer must still start, and old tokens still verify.
	mustHelm(t, chartArgs("upgrade", "--reuse-values", "--set", "issuer.signingAlg=RS256")...)
	l.alg = issuer.RS256
	added := secretData(t, l.ns, l.fullname+"-signing-keys-rs256")
	if len(added) != 1 {
		t.Errorf("after signingAlg=RS256: Secret %s-signing-keys-rs256 has %d keys, want 1 new RS256 key", l.fullname, len(added))
	}
	maps.Copy(l.want.keys, added)
	l.remember(l.revision(), material{keys: added})
	l.check("upgrade to signingAlg RS256")
	mustHelm(t, chartArgs("upgrade", "--reuse-values")...)
	l.check("upgrade again with RS256")

	// 9. Autoscaling switched on keeps the gateway's replicas (Helm's merge
	// used to remove the field: one replica until the HPA acted), and a
	// count the HPA set survives the next upgrade.
	gw := l.fullname + "-gateway"
	mustHelm(t, chartArgs("upgrade", "--reuse-values", "--set", "gateway.replicas=2")...)
	if n := l.replicas(gw); n != 2 {
		t.Fatalf("gateway replicas = %d before autoscaling, want 2", n)
	}
	mustHelm(t, chartArgs("upgrade", "--reuse-values", "--set", "gateway.autoscaling.enabled=true")...)
	if n := l.replicas(gw); n != 2 {
		t.Errorf("gateway replicas = %d after autoscaling was switched on, want 2 (unchanged)", n)
	}
	l.scale(gw, 5) // what the HPA does
	mustHelm(t, chartArgs("upgrade", "--reuse-values", "--set", "log.level=debug")...)
	if n := l.replicas(gw); n != 5 {
		t.Errorf("gateway replicas = %d after an upgrade, want the HPA's 5", n)
	}
	l.check("autoscaling on")

	// 10. A ServiceMonitor asked for where the Prometheus Operator's CRDs
	// are not installed: the upgrade succeeds and says why there is none.
	res := mustHelm(t, chartArgs("upgrade", "--reuse-values", "--set", "metrics.serviceMonitor.enabled=true")...)
	if !strings.Contains(res.stdout, "no ServiceMonitor was created") {
		t.Errorf("upgrade with serviceMonitor.enabled and no CRD: NOTES do not say the ServiceMonitor was left out:\n%s", res.stdout)
	}
	installServiceMonitorCRD(t)
	mustHelm(t, chartArgs("upgrade", "--reuse-values")...)
	smGVR := schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: "servicemonitors"}
	if _, err := env.dyn.Resource(smGVR).Namespace(l.ns).Get(t.Context(), l.fullname, metav1.GetOptions{}); err != nil {
		t.Errorf("ServiceMonitor after the CRD was installed and the release upgraded: %v", err)
	}
	l.check("ServiceMonitor")

	// 11. SQLite to PostgreSQL: the data volumes stay in the release (so
	// uninstall lists them), and NOTES says they were kept.
	createSecret(t, l.ns, "tollgate-db", map[string][]byte{
		"issuer-url": []byte("postgres://issuer@db.invalid/issuer"),
		"books-url":  []byte("postgres://books@db.invalid/books"),
	})
	res = mustHelm(t, chartArgs("upgrade", "--reuse-values", "--set", "database.driver=postgres", "--set", "database.postgres.existingSecret=tollgate-db")...)
	for _, c := range []string{"issuer", "books"} {
		pvc := l.fullname + "-" + c + "-data"
		if !strings.Contains(res.stdout, "The SQLite volume "+pvc) {
			t.Errorf("upgrade to postgres: NOTES do not mention the kept volume %s:\n%s", pvc, res.stdout)
		}
		if !slices.ContainsFunc(releaseObjects(t, l.ns, l.release, false), func(o *unstructured.Unstructured) bool { return o.GetName() == pvc }) {
			t.Errorf("upgrade to postgres: PVC %s left the release manifest, so uninstall would not list it", pvc)
		}
	}
	l.check("database driver postgres")
	checkPods(t, l.ns, l.release)
	notes := res.stdout

	// 12. Uninstall says what it keeps, and nothing else is left.
	res = mustHelm(t, "uninstall", l.release, "-n", l.ns)
	kept := keptList(res.stdout)
	wantKept := []string{"PersistentVolumeClaim/" + l.fullname + "-books-data", "PersistentVolumeClaim/" + l.fullname + "-issuer-data"}
	if !slices.Equal(kept, wantKept) {
		t.Errorf("helm uninstall kept %v, want %v:\n%s", kept, wantKept, res.stdout)
	}
	left := l.leftBehind()
	// The generated Secrets are hooks, which Helm never lists; the
	// release's NOTES name them.
	var generated []string
	for _, name := range []string{l.fullname + "-admin", l.fullname + "-signing-keys", l.fullname + "-signing-keys-rs256"} {
		generated = append(generated, "Secret/"+name)
	}
	if !strings.Contains(notes, l.fullname+"-signing-keys, "+l.fullname+"-admin") || !strings.Contains(notes, l.fullname+"-signing-keys-<alg>") {
		t.Errorf("NOTES do not name the generated Secrets that uninstall keeps:\n%s", notes)
	}
	wantLeft := slices.Sorted(slices.Values(append(append([]string{"Secret/tollgate-db"}, wantKept...), generated...)))
	if !slices.Equal(left, wantLeft) {
		t.Errorf("left behind after uninstall = %v, want %v (what uninstall listed, the generated Secrets NOTES named, and the user's tollgate-db)", left, wantLeft)
	}
	l.checkMaterial("uninstall")
	// The new release's revisions start at 1 again; its hooks create
	// nothing, since the Secrets exist.
	l.hooks = map[int]map[string]bool{}

	// 13. Reinstall with the same name picks the Secrets and volumes up.
	mustHelm(t, chartArgs("install", "--set", "issuer.signingAlg=RS256")...)
	l.check("reinstall")
	for _, pvc := range wantKept {
		name := strings.TrimPrefix(pvc, "PersistentVolumeClaim/")
		if !slices.ContainsFunc(releaseObjects(t, l.ns, l.release, false), func(o *unstructured.Unstructured) bool { return o.GetName() == name }) {
			t.Errorf("reinstall: PVC %s is not in the new release", name)
		}
	}
	checkPods(t, l.ns, l.release)
	mustHelm(t, "uninstall", l.release, "-n", l.ns)
}

// check asserts, after a step, what the user relies on: the Secrets hold
// exactly the expected keys and password, a token signed now and every
// token signed before verify against the keys published now, no stored
// release carries key material outside the hook that created it, and
// the release's objects pass a strict server-side dry run.
func (l *lifecycle) check(step string) {
	l.t.Helper()
	l.checkMaterial(step)
	l.checkReleases(step)
	checkExist(l.t, l.ns, releaseObjects(l.t, l.ns, l.release, false))
	checkDryRun(l.t, l.ns, releaseObjects(l.t, l.ns, l.release, true))
}

func (l *lifecycle) checkMaterial(step string) {
	t := l.t
	t.Helper()
	got := readMaterial(t, l.ns, l.fullname)
	if !maps.EqualFunc(got.keys, l.want.keys, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Errorf("after %s: signing keys %v, want %v", step, slices.Sorted(maps.Keys(got.keys)), slices.Sorted(maps.Keys(l.want.keys)))
	}
	if got.password != l.want.password {
		t.Errorf("after %s: the admin password changed", step)
	}
	token, err := login(t, l.data, got, l.alg)
	if err != nil {
		t.Errorf("after %s: %v", step, err)
	} else {
		l.tokens = append(l.tokens, token)
		l.steps = append(l.steps, step)
	}
	for i, tok := range l.tokens {
		if err := verify(t, l.data, got, l.alg, tok); err != nil {
			t.Errorf("after %s: the token signed after %q: %v", step, l.steps[i], err)
		}
	}
}

// remember notes the material that revision's hooks created.
func (l *lifecycle) remember(revision int, m material) {
	created := map[string]bool{}
	for _, v := range m.keys {
		created[base64.StdEncoding.EncodeToString(v)] = true
	}
	if m.password != "" {
		created[base64.StdEncoding.EncodeToString([]byte(m.password))] = true
	}
	l.hooks[revision] = created
}

// checkReleases asserts that no revision's manifest holds key material
// or a password, and hooks only in the revision that created them.
func (l *lifecycle) checkReleases(step string) {
	t := l.t
	t.Helper()
	all := map[string]bool{}
	for _, set := range l.hooks {
		maps.Copy(all, set)
	}
	for _, v := range append(slices.Collect(maps.Values(l.want.keys)), []byte(l.want.password)) {
		all[base64.StdEncoding.EncodeToString(v)] = true
	}
	for _, r := range l.revisions() {
		manifest := mustHelm(t, "get", "manifest", l.release, "-n", l.ns, "--revision", strconv.Itoa(r)).stdout
		hooks := mustHelm(t, "get", "hooks", l.release, "-n", l.ns, "--revision", strconv.Itoa(r)).stdout
		for s := range all {
			if strings.Contains(manifest, s) {
				t.Errorf("after %s: revision %d's stored manifest holds a signing key or the admin password (a rollback to it would restore it)", step, r)
			}
			if strings.Contains(hooks, s) && !l.hooks[r][s] {
				t.Errorf("after %s: revision %d's stored hooks hold a signing key or password that revision did not create", step, r)
			}
		}
	}
}

// revisions are the stored revisions (helm keeps the last ten).
func (l *lifecycle) revisions() []int {
	out := mustHelm(l.t, "history", l.release, "-n", l.ns, "-o", "json").stdout
	var hist []struct {
		Revision int `json:"revision"`
	}
	if err := json.Unmarshal([]byte(out), &hist); err != nil || len(hist) == 0 {
		l.t.Fatalf("helm history: %v\n%s", err, out)
	}
	var rs []int
	for _, h := range hist {
		rs = append(rs, h.Revision)
	}
	slices.Sort(rs)
	return rs
}

func (l *lifecycle) revision() int { return slices.Max(l.revisions()) }

// patchSecret is `kubectl patch secret NAME --type merge -p '{"data":...}'`.
func (l *lifecycle) patchSecret(name string, data map[string]string) {
	l.t.Helper()
	body, _ := json.Marshal(map[string]any{"data": data})
	if _, err := env.kube.CoreV1().Secrets(l.ns).Patch(l.t.Context(), name, types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
		l.t.Fatalf("patch Secret %s: %v", name, err)
	}
}

// removeSecretKey is `kubectl patch secret NAME --type json -p '[{"op":"remove","path":"/data/KEY"}]'`.
func (l *lifecycle) removeSecretKey(name, key string) {
	l.t.Helper()
	body, _ := json.Marshal([]map[string]string{{"op": "remove", "path": "/data/" + key}})
	if _, err := env.kube.CoreV1().Secrets(l.ns).Patch(l.t.Context(), name, types.JSONPatchType, body, metav1.PatchOptions{}); err != nil {
		l.t.Fatalf("remove %s from Secret %s: %v", key, name, err)
	}
}

func (l *lifecycle) replicas(deployment string) int32 {
	l.t.Helper()
	d, err := env.kube.AppsV1().Deployments(l.ns).Get(l.t.Context(), deployment, metav1.GetOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

// scale sets the scale subresource, as the HPA controller does.
func (l *lifecycle) scale(deployment string, n int32) {
	l.t.Helper()
	_, err := env.kube.AppsV1().Deployments(l.ns).UpdateScale(l.t.Context(), deployment, &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: deployment, Namespace: l.ns},
		Spec:       autoscalingv1.ScaleSpec{Replicas: n},
	}, metav1.UpdateOptions{})
	if err != nil {
		l.t.Fatalf("scale %s to %d: %v", deployment, n, err)
	}
}

// leftBehind lists what remains in the namespace once the Pods and
// ReplicaSets of the uninstalled release are gone: Kind/name, sorted,
// without what every namespace has (the default ServiceAccount, the
// root CA ConfigMap).
func (l *lifecycle) leftBehind() []string {
	t := l.t
	t.Helper()
	ctx := t.Context()
	var out []string
	err := poll(ctx, 90*time.Second, func() (bool, error) {
		out = out[:0]
		secrets, err := env.kube.CoreV1().Secrets(l.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, s := range secrets.Items {
			out = append(out, "Secret/"+s.Name)
		}
		pvcs, err := env.kube.CoreV1().PersistentVolumeClaims(l.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range pvcs.Items {
			out = append(out, "PersistentVolumeClaim/"+p.Name)
		}
		cms, err := env.kube.CoreV1().ConfigMaps(l.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range cms.Items {
			if c.Name != "kube-root-ca.crt" {
				out = append(out, "ConfigMap/"+c.Name)
			}
		}
		sas, err := env.kube.CoreV1().ServiceAccounts(l.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, s := range sas.Items {
			if s.Name != "default" {
				out = append(out, "ServiceAccount/"+s.Name)
			}
		}
		svcs, err := env.kube.CoreV1().Services(l.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, s := range svcs.Items {
			out = append(out, "Service/"+s.Name)
		}
		deps, err := env.kube.AppsV1().Deployments(l.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, d := range deps.Items {
			out = append(out, "Deployment/"+d.Name)
		}
		pods, err := env.kube.CoreV1().Pods(l.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		rss, err := env.kube.AppsV1().ReplicaSets(l.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		slices.Sort(out)
		return len(pods.Items) == 0 && len(rss.Items) == 0, nil
	})
	if err != nil {
		t.Errorf("Pods and ReplicaSets still there after uninstall: %v", err)
	}
	return out
}

var keptLine = regexp.MustCompile(`^\[(\w+)\] (\S+)$`)

// keptList parses helm uninstall's "kept due to the resource policy"
// lines into sorted Kind/name.
func keptList(out string) []string {
	var kept []string
	for _, line := range strings.Split(out, "\n") {
		if m := keptLine.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			kept = append(kept, m[1]+"/"+m[2])
		}
	}
	slices.Sort(kept)
	return kept
}

// testOlderSecrets installs over Secrets made by an older chart, which
// templated them without the tollgate.dev/signing-alg annotation: the
// generated key's PEM type tells its algorithm, so the same algorithm
// adds no key and another one does. A passwordKey the generated admin
// Secret lacks fails the upgrade with a message, not a pod that cannot
// mount its password.
func testOlderSecrets(t *testing.T) {
	ns, fullname := "older-secrets", "tg-tollgate"
	createNamespace(t, ns)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	// What genPrivateKey "ecdsa" writes: a SEC 1 "EC PRIVATE KEY" block.
	want := material{
		keys:     map[string][]byte{"signing-key-0.pem": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})},
		password: "an older chart's generated password",
	}
	createSecret(t, ns, fullname+"-signing-keys", want.keys)
	createSecret(t, ns, fullname+"-admin", map[string][]byte{"password": []byte(want.password)})
	data := t.TempDir()
	token, err := login(t, data, want, issuer.ES256)
	if err != nil {
		t.Fatal(err)
	}

	mustHelm(t, "install", "tg", chart, "-n", ns)
	if got := readMaterial(t, ns, fullname); len(got.keys) != 1 || got.password != want.password {
		t.Errorf("install over an older chart's ES256 Secrets: %d keys, password kept %v; want the 1 key and the password unchanged", len(got.keys), got.password == want.password)
	}

	mustHelm(t, "upgrade", "tg", chart, "-n", ns, "--set", "issuer.signingAlg=EdDSA")
	got := readMaterial(t, ns, fullname)
	added := secretData(t, ns, fullname+"-signing-keys-eddsa")
	if len(added) != 1 || len(got.keys) != 2 {
		t.Errorf("upgrade to EdDSA: %s-signing-keys-eddsa has %d keys (want 1), %d keys in all (want 2)", fullname, len(added), len(got.keys))
	}
	if err := verify(t, data, got, issuer.EdDSA, token); err != nil {
		t.Errorf("upgrade to EdDSA: the ES256 token signed before: %v", err)
	}
	if _, err := login(t, data, got, issuer.EdDSA); err != nil {
		t.Errorf("upgrade to EdDSA: %v", err)
	}

	res, err := helmRun(t.Context(), "upgrade", "tg", chart, "-n", ns, "--reuse-values", "--set", "issuer.admin.passwordKey=admin-password")
	if err == nil || !strings.Contains(res.stderr, "has no such key") {
		t.Errorf("upgrade with a passwordKey the generated Secret lacks = %v, want a failure saying the Secret has no such key\n%s", err, res.stderr)
	}
	mustHelm(t, "uninstall", "tg", "-n", ns)
}
