package cluster

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tollgate-dev/tollgate/issuer"
)

// installCase is one way of installing the chart.
type installCase struct {
	name    string
	files   []string // values files, relative to the repository root
	set     []string
	secrets map[string]map[string][]byte // Secrets the user creates first
	crd     bool                         // needs the ServiceMonitor CRD
	// exclusive cases hold a fixed node port, which one Service at a time
	// can have in a cluster: they run one after another, not in parallel.
	exclusive bool
}

func installCases(t *testing.T) []installCase {
	t.Helper()
	db := map[string]map[string][]byte{"tollgate-db": {
		"issuer-url": []byte("postgres://issuer@db.invalid/issuer"),
		"books-url":  []byte("postgres://books@db.invalid/books"),
	}}
	postgres := []string{"database.driver=postgres", "database.postgres.existingSecret=tollgate-db"}
	cases := []installCase{{name: "defaults"}}

	// Every values file the repository ships.
	var files []string
	for _, glob := range []string{"charts/tollgate/values-*.yaml", "deploy/chartcheck/testdata/values/*.yaml"} {
		m, err := filepath.Glob(filepath.Join(repo, glob))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 10 {
		t.Fatalf("found %d values files, want the chart's and deploy/chartcheck's", len(files))
	}
	pemData, _, err := issuer.GenerateKeyPEM(issuer.ES256)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(repo, f)
		c := installCase{name: rel, files: []string{rel}}
		switch filepath.Base(f) {
		case "postgres.yaml", "dpop.yaml":
			c.secrets = db
		case "existing-secrets.yaml":
			c.secrets = map[string]map[string][]byte{
				"tollgate-keys":  {"key-0.pem": pemData},
				"tollgate-admin": {"admin-password": []byte("an operator's own passphrase")},
			}
		case "monitoring.yaml":
			c.crd = true
		case "sidecar-nodeport.yaml", "values-kind.yaml":
			c.exclusive = true
		}
		cases = append(cases, c)
	}

	// The combinations the docs recommend.
	for _, mode := range []string{"sidecar", "service"} {
		cases = append(cases,
			installCase{name: mode + " mode, SQLite", set: []string{"authz.mode=" + mode}},
			installCase{name: mode + " mode, PostgreSQL, 3 replicas", set: append([]string{"authz.mode=" + mode, "issuer.replicas=3", "books.replicas=3"}, postgres...), secrets: db},
		)
	}
	cases = append(cases,
		installCase{name: "RS256", set: []string{"issuer.signingAlg=RS256"}},
		installCase{name: "EdDSA", set: []string{"issuer.signingAlg=EdDSA"}},
		installCase{name: "ServiceMonitor and dashboard with the CRD", set: []string{"metrics.serviceMonitor.enabled=true", "metrics.grafanaDashboard.enabled=true"}, crd: true},
		installCase{name: "gateway autoscaling", set: []string{"gateway.autoscaling.enabled=true"}},
		installCase{name: "PostgreSQL, books and gateway autoscaling", set: append([]string{"books.autoscaling.enabled=true", "gateway.autoscaling.enabled=true"}, postgres...), secrets: db},
	)
	return cases
}

// testInstalls installs each case into its own namespace, which enforces
// the restricted Pod Security Standard, and checks that the API server
// accepted every object without a warning, that every ReplicaSet
// created its Pods, and that the rendered set passes a server-side dry
// run with strict field validation.
func testInstalls(t *testing.T) {
	for i, c := range installCases(t) {
		t.Run(c.name, func(t *testing.T) {
			if !c.exclusive {
				t.Parallel()
			}
			ns := fmt.Sprintf("install-%d", i)
			createNamespace(t, ns)
			for name, data := range c.secrets {
				createSecret(t, ns, name, data)
			}
			if c.crd {
				installServiceMonitorCRD(t)
			}
			args := []string{"install", "tg", chart, "-n", ns}
			for _, f := range c.files {
				args = append(args, "--values", filepath.Join(repo, f))
			}
			for _, s := range c.set {
				args = append(args, "--set", s)
			}
			mustHelm(t, args...)
			manifest := releaseObjects(t, ns, "tg", false)
			checkExist(t, ns, manifest)
			if c.crd && !slices.ContainsFunc(manifest, func(o *unstructured.Unstructured) bool { return o.GetKind() == "ServiceMonitor" }) {
				t.Errorf("no ServiceMonitor in the release, with its CRD installed")
			}
			checkDryRun(t, ns, releaseObjects(t, ns, "tg", true))
			checkPods(t, ns, "tg")
			mustHelm(t, "uninstall", "tg", "-n", ns)
		})
	}
}
