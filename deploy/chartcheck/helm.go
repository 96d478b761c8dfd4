package chartcheck

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// HelmPackage is the helm CLI's main package; tools/helm/go.mod pins its
// version outside the main module.
const HelmPackage = "helm.sh/helm/v3/cmd/helm"

// Helm runs a helm binary with its cache, config and data directories
// kept under Home, so it never reads or writes the user's.
type Helm struct {
	Path string
	Home string
}

// BuildHelm builds the helm CLI pinned in <repo>/tools/helm into dir
// (fast after the first time: the Go build cache keeps the packages).
func BuildHelm(ctx context.Context, repo, dir string) (Helm, error) {
	bin := filepath.Join(dir, "helm")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, HelmPackage)
	cmd.Dir = filepath.Join(repo, "tools", "helm")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Helm{}, fmt.Errorf("build helm in tools/helm: %w\n%s", err, out)
	}
	home := filepath.Join(dir, "helm-home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return Helm{}, err
	}
	return Helm{Path: bin, Home: home}, nil
}

// Run runs helm with args and returns its standard output; a failure's
// error includes standard error.
func (h Helm) Run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.Path, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(h.Home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.Home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.Home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %v: %w\n%s%s", args, err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.Bytes(), nil
}

// Template renders chart as release in namespace with the values files
// and --set arguments given, hooks (helm test pods) included.
func (h Helm) Template(ctx context.Context, chart, release, namespace string, values []string, set ...string) ([]byte, error) {
	args := []string{"template", release, chart, "--namespace", namespace}
	for _, v := range values {
		args = append(args, "--values", v)
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return h.Run(ctx, args...)
}

// TemplateAPI is Template for a cluster that also serves the API
// versions given (group/version/kind), as .Capabilities.APIVersions sees
// them.
func (h Helm) TemplateAPI(ctx context.Context, chart, release, namespace string, values, apiVersions []string, set ...string) ([]byte, error) {
	args := []string{"template", release, chart, "--namespace", namespace}
	for _, a := range apiVersions {
		args = append(args, "--api-versions", a)
	}
	for _, v := range values {
		args = append(args, "--values", v)
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return h.Run(ctx, args...)
}

// Lint runs helm lint --strict on chart with the values files given.
func (h Helm) Lint(ctx context.Context, chart string, values []string, set ...string) error {
	args := []string{"lint", "--strict", chart}
	for _, v := range values {
		args = append(args, "--values", v)
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	_, err := h.Run(ctx, args...)
	return err
}
