package chartcheck

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	tplBegin = "  # BEGIN listeners copied from envoy/envoy.yaml (go test ./deploy/chartcheck -run TestEnvoyTemplate -update)\n"
	tplEnd   = "  # END listeners copied from envoy/envoy.yaml\n"
)

// chartListeners turns envoy/envoy.yaml's listeners block into the
// chart template's: the same text, with the port from the chart's helper.
func chartListeners(envoyYAML string) (string, error) {
	start := strings.Index(envoyYAML, "\n  listeners:\n")
	end := strings.Index(envoyYAML, "\n  clusters:")
	if start < 0 || end < start {
		return "", errors.New("envoy.yaml: no static_resources.listeners block before clusters")
	}
	block := strings.TrimRight(envoyYAML[start+1:end], "\n") + "\n"
	const port = "port_value: 8080}"
	if strings.Count(block, port) != 1 {
		return "", errors.New("envoy.yaml: want exactly one listener on port 8080")
	}
	block = strings.Replace(block, port, `port_value: {{ include "tollgate.gatewayPort" . }}}`, 1)
	// The chart adds its optional tracing block (tracing.enabled) right
	// after use_remote_address; off, it renders to nothing.
	const remote = "          use_remote_address: true\n"
	if strings.Count(block, remote) != 1 {
		return "", errors.New("envoy.yaml: want exactly one use_remote_address: true")
	}
	return strings.Replace(block, remote, remote+`          {{- include "tollgate.envoyTracing" . | nindent 10 }}`+"\n", 1), nil
}

// TestEnvoyTemplate keeps the chart's public listener a copy of
// envoy/envoy.yaml's (CompareWithLocal then checks the rendered result).
func TestEnvoyTemplate(t *testing.T) {
	local, err := os.ReadFile(filepath.Join(repo, "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := chartListeners(string(local))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(chart, "templates", "_envoy.tpl")
	tpl, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok1 := strings.Cut(string(tpl), tplBegin)
	got, after, ok2 := strings.Cut(rest, tplEnd)
	if !ok1 || !ok2 {
		t.Fatalf("%s: no BEGIN/END markers around the copied listeners", path)
	}
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(before+tplBegin+want+tplEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s: the listeners differ from envoy/envoy.yaml's; run go test ./deploy/chartcheck -run TestEnvoyTemplate -update", path)
}
