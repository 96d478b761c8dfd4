package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/otlptest"
	"github.com/tollgate-dev/tollgate/internal/testenv"
	"github.com/tollgate-dev/tollgate/internal/tutorial"
)

// TestUpObservability runs `tollgate up` with the standard OTEL_*
// variables pointing at an in-process OTLP receiver, and the commands of
// docs/observability.md against it: every part exports spans under its
// own service.name, `tollgate authz explain -authz` and curl on POST
// /explain say why a token is allowed or refused, and the gateway's
// admin answers /clusters and /stats/prometheus.
func TestUpObservability(t *testing.T) {
	recv, err := otlptest.New()
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	bin := buildTollgate(t)
	a := freeAddrs(t, 6)
	p := startUpEnv(t, bin, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + recv.GRPCAddr,
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_TRACES_SAMPLER=always_on",
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_SERVICE_NAME=ignored-under-up",
	},
		"-data-dir", filepath.Join(t.TempDir(), "data"),

		"-gateway-addr", a[0], "-gateway-admin-addr", a[1],
		"-issuer-addr", a[2], "-books-addr", a[3],
		"-authz-grpc-addr", a[4], "-authz-http-addr", a[5],
		"-log-format", "text", "-shutdown-timeout", "5s",
	)
	_, port, _ := net.SplitHostPort(a[0])
	base := "http://localhost:" + port
	client := &http.Client{Timeout: 10 * time.Second}
	ctx := t.Context()
	if err := tutorial.Register(ctx, base, client, "alain", "alain-reads-books"); err != nil {
		t.Fatal(err)
	}
	token, err := tutorial.Login(ctx, base, client, "alain", "alain-reads-books")
	if err != nil {
		t.Fatal(err)
	}
	if got := status(t, client, base+"/books", "Authorization", "Bearer "+token); got != http.StatusOK {
		t.Fatalf("GET /books = %d, want 200", got)
	}

	t.Run("every part exports its spans", func(t *testing.T) {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		want := []string{"tollgate-gateway", "tollgate-issuer", "tollgate-authz", "tollgate-books"}
		spans, err := recv.WaitFor(wctx, func(ss []otlptest.Span) bool {
			seen := map[string]bool{}
			for _, s := range ss {
				seen[s.Service] = true
			}
			for _, w := range want {
				if !seen[w] {
					return false
				}
			}
			return true
		})
		if err != nil {
			seen := map[string]int{}
			for _, s := range spans {
				seen[s.Service]++
			}
			t.Fatalf("spans by service.name = %v, want some from each of %v", seen, want)
		}
		for _, s := range spans {
			if s.Service == "ignored-under-up" {
				t.Errorf("span %q has service.name %q; under tollgate up each part names itself", s.Name, s.Service)
			}
		}
	})

	tampered := token[:len(token)-4] + "AAAA"
	authzURL := "http://" + a[5]
	t.Run("tollgate authz explain -authz", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			want []string
		}{
			{"allowed", []string{"authz", "explain", "-authz", authzURL, token},
				[]string{"decision: allow\n", "reason: signature by key ", "  x-user-name: alain\n"}},
			{"refused", []string{"authz", "explain", "-authz", authzURL, "-policy", "require=admin", token},
				[]string{"decision: deny\n", "reason: token lacks role admin (the route requires admin; the token has: user)\n", "status: 403\n"}},
			{"tampered", []string{"authz", "explain", "-authz", authzURL, tampered},
				[]string{"decision: deny\n", "reason: signature does not verify with key "}},
		} {
			out, err := exec.CommandContext(ctx, bin, tc.args...).CombinedOutput()
			if err != nil {
				t.Fatalf("tollgate %s: %v\n%s", strings.Join(tc.args[:3], " "), err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("tollgate authz explain (%s) lacks %q:\n%s", tc.name, w, out)
				}
			}
			if strings.Contains(string(out), token[len(token)-20:]) {
				t.Errorf("tollgate authz explain (%s) repeats the token:\n%s", tc.name, out)
			}
			t.Logf("tollgate authz explain (%s):\n%s", tc.name, out)
		}
		// The token from stdin.
		cmd := exec.CommandContext(ctx, bin, "authz", "explain", "-authz", authzURL, "-json")
		cmd.Stdin = strings.NewReader(token + "\n")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"decision": "allow"`) {
			t.Errorf("tollgate authz explain -json < token = %v:\n%s", err, out)
		}
	})

	t.Run("curl", func(t *testing.T) {
		curl := testenv.LookPath(t, "curl", "apt-get install curl")
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"POST /explain", []string{"-s", "-X", "POST", authzURL + "/explain", "-d", `{"token":"` + tampered + `"}`}, `"code":"bad_signature"`},
			{"admin /clusters", []string{"-s", "http://" + a[1] + "/clusters"}, "books::" + a[3] + "::rq_total::1\n"},
			{"admin /stats/prometheus", []string{"-s", "http://" + a[1] + "/stats/prometheus"}, `envoy_http_ext_authz_ok{envoy_http_conn_manager_prefix="ingress_http"} 1`},
			{"admin /config_dump", []string{"-s", "http://" + a[1] + "/config_dump"}, `"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"`},
		} {
			out, err := exec.CommandContext(ctx, curl, tc.args...).Output()
			if err != nil {
				t.Fatalf("curl %s: %v", tc.name, err)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("curl %s lacks %q:\n%s", tc.name, tc.want, out)
			}
			if os.Getenv("TOLLGATE_SHOW_DOCS_OUTPUT") != "" {
				t.Logf("curl %s:\n%s", tc.name, out)
			}
		}
	})
	p.stop(t, os.Interrupt)
}
