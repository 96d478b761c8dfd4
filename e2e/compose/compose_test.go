package compose

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/envoy"
)

// root is the repository root, from this package.
var root = func() string {
	p, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return p
}()

const (
	composeFile     = "compose.yaml"
	composeEnvoy    = "examples/compose/envoy.yaml"
	shippedEnvoy    = "envoy/envoy.yaml"
	projectImage    = "tollgate:dev"
	publicIssuerURL = "http://localhost:8080"
)

// composeAddrs are where examples/compose/envoy.yaml must point: the
// compose services by name, on the ports the services listen on.
var composeAddrs = envoy.Addresses{
	Listen: "0.0.0.0:8080",
	Admin:  "127.0.0.1:9901",
	Endpoints: map[string]string{
		"issuer": "issuer:8081",
		"books":  "books:8082",
		"authz":  "authz:9001",
	},
}

// TestComposeEnvoyConfigIsShippedRelocated holds examples/compose/envoy.yaml
// to envoy/envoy.yaml relocated to the compose service names, with those
// clusters resolved by DNS (a STATIC cluster takes only IP addresses), so
// the two cannot drift apart.
func TestComposeEnvoyConfigIsShippedRelocated(t *testing.T) {
	got, err := envoy.LoadFile(filepath.Join(root, composeEnvoy))
	if err != nil {
		t.Fatalf("envoy.LoadFile(%s): %v", composeEnvoy, err)
	}
	want, err := envoy.LoadFile(filepath.Join(root, shippedEnvoy))
	if err != nil {
		t.Fatal(err)
	}
	if err := envoy.Relocate(want, composeAddrs); err != nil {
		t.Fatal(err)
	}
	for _, c := range want.GetStaticResources().GetClusters() {
		if _, ok := composeAddrs.Endpoints[c.GetName()]; ok {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		}
	}
	if err := envoy.Validate(want); err != nil {
		t.Fatalf("relocated %s does not validate: %v", shippedEnvoy, err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("%s is not %s relocated to %v with STRICT_DNS clusters (-want +got):\n%s", composeEnvoy, shippedEnvoy, composeAddrs, diff)
	}
}

// TestComposeFile loads compose.yaml with compose-go's loader (schema
// validation on, so an unknown key is an error) and checks the project
// against the rules below; each variant shows one rule catching a
// breach.
func TestComposeFile(t *testing.T) {
	shipped, err := os.ReadFile(filepath.Join(root, composeFile))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(old, new string) []byte {
		t.Helper()
		if !strings.Contains(string(shipped), old) {
			t.Fatalf("%s has no %q; the variant is out of date", composeFile, old)
		}
		return []byte(strings.Replace(string(shipped), old, new, 1))
	}
	tests := []struct {
		name    string
		content []byte
		env     map[string]string
		wantErr string // "" = loads and passes every rule
	}{
		{name: "shipped", content: shipped},
		{name: "shipped, admin password set", content: shipped, env: map[string]string{"TOLLGATE_ADMIN_PASSWORD": "a long admin password"}},
		{name: "unknown key", content: edit("    entrypoint:", "    entrypoints: [x]\n    entrypoint:"), wantErr: "services.envoy.entrypoints"},
		{name: "envoy on every host interface", content: edit(`"127.0.0.1:8080:8080"`, `"8080:8080"`), wantErr: "envoy publishes"},
		{name: "books published", content: edit("    command: [\"books\"]\n", "    command: [\"books\"]\n    ports: [\"127.0.0.1:8082:8082\"]\n"), wantErr: "books publishes ports"},
		{name: "envoy not the pinned release", content: edit("envoyproxy/envoy:distroless-v1.38.4", "envoyproxy/envoy:latest"), wantErr: "envoy image"},
		{name: "envoy on the unrelocated bootstrap", content: edit("./examples/compose/envoy.yaml:", "./envoy/envoy.yaml:"), wantErr: "envoy mounts"},
		{name: "books listens elsewhere than its cluster", content: edit(`TOLLGATE_BOOKS_ADDR: ":8082"`, `TOLLGATE_BOOKS_ADDR: ":18082"`), wantErr: "books listens on"},
		{name: "authz fetches the keys through localhost", content: edit("http://issuer:8081/.well-known/jwks.json", "http://localhost:8080/.well-known/jwks.json"), wantErr: "authz JWKS URL"},
		{name: "issuer trusts the whole network", content: edit("TOLLGATE_ISSUER_TRUSTED_PROXIES: 172.30.80.10", "TOLLGATE_ISSUER_TRUSTED_PROXIES: 172.30.80.0/24"), wantErr: "issuer trusts X-Forwarded-For"},
		{name: "issuer from another image", content: edit("  image: tollgate:dev\n", "  image: tollgate:latest\n"), wantErr: "image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := load(t.Context(), tt.content, tt.env)
			if err == nil {
				err = checkProject(p, tt.env)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("load %s (%s) = %v, want no error", composeFile, tt.name, err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("load %s (%s) = no error, want one containing %q", composeFile, tt.name, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("load %s (%s) = %v, want an error containing %q", composeFile, tt.name, err, tt.wantErr)
			}
		})
	}
}

// load loads content as the repository's compose.yaml would be, in the
// repository root, with env as the only environment.
func load(ctx context.Context, content []byte, env map[string]string) (*types.Project, error) {
	details := types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, composeFile), Content: content}},
		Environment: types.Mapping(env),
	}
	return loader.LoadWithContext(ctx, details, func(o *loader.Options) {
		o.ResolvePaths = true
	})
}

// checkProject holds the project to the rules compose.yaml is written to.
func checkProject(p *types.Project, env map[string]string) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if got, want := slices.Sorted(slices.Values(p.ServiceNames())), []string{"authz", "books", "envoy", "issuer"}; !slices.Equal(got, want) {
		fail("services %v, want %v", got, want)
	}
	svc := func(name string) types.ServiceConfig {
		s, err := p.GetService(name)
		if err != nil {
			fail("%v", err)
		}
		return s
	}
	envOf := func(s types.ServiceConfig, key string) string {
		if v := s.Environment[key]; v != nil {
			return *v
		}
		return ""
	}

	// Envoy: the pinned release, on the relocated bootstrap, published on
	// the host's loopback only.
	e := svc("envoy")
	if want := "envoyproxy/envoy:" + pinnedEnvoyTag(fail); e.Image != want {
		fail("envoy image %q, want %q (the release pinned in charts/tollgate/values.yaml)", e.Image, want)
	}
	configPath := ""
	if i := slices.Index(e.Command, "--config-path"); i >= 0 && i+1 < len(e.Command) {
		configPath = e.Command[i+1]
	}
	wantSource := filepath.Join(root, composeEnvoy)
	if !slices.ContainsFunc(e.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeBind && v.Source == wantSource && v.Target == configPath && v.ReadOnly
	}) {
		fail("envoy mounts %v, want %s read-only at its --config-path %q", e.Volumes, composeEnvoy, configPath)
	}
	if len(e.Ports) != 1 || e.Ports[0].HostIP != "127.0.0.1" || e.Ports[0].Published != "8080" || e.Ports[0].Target != 8080 {
		fail("envoy publishes %+v, want only 127.0.0.1:8080 -> 8080", e.Ports)
	}

	// The services: the project image, never published, listening where
	// the compose bootstrap's clusters point.
	clusters, err := clusterAddrs(filepath.Join(root, composeEnvoy))
	if err != nil {
		fail("%v", err)
	}
	for name, addrVar := range map[string]string{
		"issuer": "TOLLGATE_ISSUER_ADDR", "books": "TOLLGATE_BOOKS_ADDR", "authz": "TOLLGATE_AUTHZ_GRPC_ADDR",
	} {
		s := svc(name)
		if s.Image != projectImage || s.Build == nil || s.Build.Context != root {
			fail("%s: image %q built from %v, want %s built from the repository", name, s.Image, s.Build, projectImage)
		}
		if !slices.Equal(s.Command, []string{name}) {
			fail("%s: command %v, want [%s]", name, s.Command, name)
		}
		if len(s.Ports) != 0 {
			fail("%s publishes ports %+v; only envoy may be reached from the host", name, s.Ports)
		}
		_, port, _ := net.SplitHostPort(envOf(s, addrVar))
		if want := name + ":" + port; clusters[name] != want {
			fail("%s listens on %q (%s), but the compose bootstrap's cluster %s reaches %q", name, envOf(s, addrVar), addrVar, name, clusters[name])
		}
	}

	// Tokens: the iss claim is the URL clients use (Envoy's published
	// port); authz expects it and fetches keys from the issuer by name.
	is, az := svc("issuer"), svc("authz")
	if got := envOf(is, "TOLLGATE_ISSUER_URL"); got != publicIssuerURL {
		fail("issuer URL %q, want %q", got, publicIssuerURL)
	}
	if got := envOf(az, "TOLLGATE_AUTHZ_ISSUER"); got != publicIssuerURL {
		fail("authz issuer %q, want %q", got, publicIssuerURL)
	}
	if got, want := envOf(az, "TOLLGATE_AUTHZ_JWKS_URL"), "http://"+clusters["issuer"]+"/.well-known/jwks.json"; got != want {
		fail("authz JWKS URL %q, want %q (inside compose, localhost is not Envoy)", got, want)
	}
	// Login throttling: the issuer believes X-Forwarded-For from Envoy's
	// fixed address and from nobody else.
	var envoyAddr string
	for _, n := range svc("envoy").Networks {
		if n != nil && n.Ipv4Address != "" {
			envoyAddr = n.Ipv4Address
		}
	}
	if got := envOf(is, "TOLLGATE_ISSUER_TRUSTED_PROXIES"); envoyAddr == "" || got != envoyAddr {
		fail("issuer trusts X-Forwarded-For from %q, want exactly envoy's fixed address %q", got, envoyAddr)
	}
	if got, want := envOf(is, "TOLLGATE_ADMIN_PASSWORD"), env["TOLLGATE_ADMIN_PASSWORD"]; got != want {
		fail("issuer admin password %q, want %q from the environment", got, want)
	}
	return errors.Join(errs...)
}

// clusterAddrs returns each cluster's one endpoint in the bootstrap at
// path, as host:port.
func clusterAddrs(path string) (map[string]string, error) {
	b, err := envoy.LoadFile(path)
	if err != nil {
		return nil, err
	}
	addrs := map[string]string{}
	for _, c := range b.GetStaticResources().GetClusters() {
		for _, le := range c.GetLoadAssignment().GetEndpoints() {
			for _, ep := range le.GetLbEndpoints() {
				sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
				addrs[c.GetName()] = net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue()))
			}
		}
	}
	return addrs, nil
}

// pinnedEnvoyTag is the Envoy image tag the chart pins.
func pinnedEnvoyTag(fail func(string, ...any)) string {
	data, err := os.ReadFile(filepath.Join(root, "charts", "tollgate", "values.yaml"))
	if err != nil {
		fail("%v", err)
		return ""
	}
	var v struct {
		Gateway struct {
			Envoy struct {
				Image struct {
					Tag string `json:"tag"`
				} `json:"image"`
			} `json:"envoy"`
		} `json:"gateway"`
	}
	if err := yaml.Unmarshal(data, &v); err != nil || v.Gateway.Envoy.Image.Tag == "" {
		fail("charts/tollgate/values.yaml: no gateway.envoy.image.tag (%v)", err)
	}
	return v.Gateway.Envoy.Image.Tag
}
