package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

func adminGet(t *testing.T, h *harness, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + h.gw.AdminAddr().String() + path)
	if err != nil {
		t.Fatalf("GET admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminStats pins the emulated Envoy stats on /stats/prometheus:
// downstream and upstream request counts, status classes by cluster,
// and the ext_authz filter's ok, denied, error counters.
func TestAdminStats(t *testing.T) {
	h := newHarness(t)
	type checkFn = func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
	steps := []struct {
		name string
		fn   checkFn
		path string
		want int
	}{
		{"allowed", func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) { return allow(), nil }, "/books", 200},
		{"allowed again", func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) { return allow(), nil }, "/books", 200},
		{"denied", func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
			return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)}}, nil
		}, "/books", 403},
		{"authz error", func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
			return nil, errors.New("boom")
		}, "/books", 503},
		{"public route", nil, "/.well-known/jwks.json", 200},
		{"no route", nil, "/nope", 404},
	}
	for _, s := range steps {
		if s.fn != nil {
			h.authz.set(s.fn)
		}
		if resp, _ := h.do(t, "GET", s.path, nil); resp.StatusCode != s.want {
			t.Fatalf("GET %s (%s) = %d, want %d", s.path, s.name, resp.StatusCode, s.want)
		}
	}
	code, body := adminGet(t, h, "/stats/prometheus")
	if code != 200 {
		t.Fatalf("GET /stats/prometheus = %d", code)
	}
	for _, want := range []string{
		`envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="ingress_http"} 6`,
		`envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="ingress_http",envoy_response_code_class="2"} 3`,
		`envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="ingress_http",envoy_response_code_class="4"} 2`,
		`envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="ingress_http",envoy_response_code_class="5"} 1`,
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="books"} 2`,
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="issuer"} 1`,
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="authz"} 4`,
		`envoy_cluster_upstream_rq_xx{envoy_cluster_name="books",envoy_response_code_class="2"} 2`,
		`envoy_http_ext_authz_ok{envoy_http_conn_manager_prefix="ingress_http"} 2`,
		`envoy_http_ext_authz_denied{envoy_http_conn_manager_prefix="ingress_http"} 1`,
		`envoy_http_ext_authz_error{envoy_http_conn_manager_prefix="ingress_http"} 1`,
		`envoy_http_ext_authz_failure_mode_allowed{envoy_http_conn_manager_prefix="ingress_http"} 0`,
		`envoy_cluster_upstream_rq_pending_overflow{envoy_cluster_name="books"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("GET /stats/prometheus lacks %s", want)
		}
	}
}

// TestAdminClusters pins /clusters: one NAME::HOST:PORT::STAT::VALUE
// line per host stat, the breaker limits, and the health flags.
func TestAdminClusters(t *testing.T) {
	h := newHarness(t)
	h.authz.set(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) { return allow(), nil })
	h.do(t, "GET", "/books", nil)
	code, body := adminGet(t, h, "/clusters")
	if code != 200 {
		t.Fatalf("GET /clusters = %d", code)
	}
	books := h.books.addr()
	for _, want := range []string{
		"books::default_priority::max_connections::512",
		"books::default_priority::max_pending_requests::128",
		"books::" + books + "::rq_total::1",
		"books::" + books + "::rq_error::0",
		"books::" + books + "::health_flags::healthy",
		"issuer::" + h.issuer.addr() + "::rq_total::0",
		"authz::" + h.authz.addr + "::rq_total::1",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("GET /clusters lacks %q:\n%s", want, body)
		}
	}
}

// TestAdminConfigDump pins /config_dump: the loaded bootstrap inside a
// BootstrapConfigDump, as Envoy answers it.
func TestAdminConfigDump(t *testing.T) {
	h := newHarness(t)
	code, body := adminGet(t, h, "/config_dump")
	if code != 200 {
		t.Fatalf("GET /config_dump = %d", code)
	}
	var dump struct {
		Configs []struct {
			Type      string `json:"@type"`
			Bootstrap struct {
				StaticResources struct {
					Clusters []struct {
						Name string `json:"name"`
					} `json:"clusters"`
				} `json:"static_resources"`
			} `json:"bootstrap"`
			LastUpdated string `json:"last_updated"`
		} `json:"configs"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("GET /config_dump is not JSON: %v", err)
	}
	if len(dump.Configs) != 1 || dump.Configs[0].Type != "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump" {
		t.Fatalf("GET /config_dump configs = %+v, want one BootstrapConfigDump", dump.Configs)
	}
	var names []string
	for _, c := range dump.Configs[0].Bootstrap.StaticResources.Clusters {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "issuer,books,authz" || dump.Configs[0].LastUpdated == "" {
		t.Errorf("GET /config_dump clusters = %v, last_updated %q; want issuer,books,authz and a time", names, dump.Configs[0].LastUpdated)
	}
}
