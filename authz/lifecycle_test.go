package authz

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/tollgate-dev/tollgate/internal/server"
)

// TestGracefulStop runs authz the way `tollgate authz` does (server.Run
// with SetStopping first) on loopback ports: a check in flight when the
// stop begins still gets its answer, readiness fails from the start of
// the stop, and Run returns cleanly.
func TestGracefulStop(t *testing.T) {
	k := newTestKey(t, "ES256", "main")
	next := newTestKey(t, "ES256", "next")
	jw := newJWKSServer(t, k)
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	slow := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if jw.hits.Load() > 0 { // the refetch: hold it until released
			once.Do(func() { close(entered) })
			<-release
			jw.setKeys(t, k, next)
		}
		jw.serve(w, r)
	})
	srv, err := New(context.Background(), testConfig(Config{
		Issuer: testIssuer, JWKSURL: slow + "/jwks.json", RefetchInterval: time.Millisecond,
		MinRefresh: time.Hour, MaxRefresh: time.Hour,
	}), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	waitFor(t, "ready", func() bool { return srv.Ready(context.Background()) == nil })

	gs := grpc.NewServer(ServerOptions()...)
	srv.RegisterGRPC(gs)
	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() {
		runErr <- server.Run(ctx, slog.New(slog.DiscardHandler), 10*time.Second, srv.SetStopping,
			server.Bound{Name: "grpc", Unit: server.GRPC{Server: gs}, Listener: gl},
			server.Bound{Name: "http", Unit: server.NewHTTP(srv.HTTPHandler(), slog.New(slog.DiscardHandler)), Listener: hl})
	}()
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	if resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: AuthorizationService}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before the stop = %v, %v; want SERVING", resp.GetStatus(), err)
	}

	// A token by a key authz does not know yet: its check waits for the
	// (held) refetch, so it is in flight when the stop begins.
	c := claimsFor("u-1", "user")
	type result struct {
		resp *authv3.CheckResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(),
			envoyRequest("GET", "/books", bearer(next.sign(t, c, nil)), nil))
		done <- result{resp, err}
	}()
	<-entered
	stop()
	waitFor(t, "readiness to fail", func() bool { return srv.Ready(context.Background()) != nil })
	resp, err := http.Get("http://" + hl.Addr().String() + "/readyz")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET /readyz during the stop = %d, want 503", resp.StatusCode)
		}
	}
	close(release)
	r := <-done
	if r.err != nil {
		t.Fatalf("in-flight Check failed during a graceful stop: %v", r.err)
	}
	if diff := diffResponse(wantAllow("u-1", "alice", "user", c["jti"].(string)), r.resp); diff != "" {
		t.Errorf("in-flight Check = %s, want OK; diff:\n%s", describe(r.resp), diff)
	}
	if err := <-runErr; err != nil {
		t.Errorf("server.Run = %v, want nil after a graceful stop", err)
	}
}

func httptestServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return "http://" + l.Addr().String()
}

// TestReflection: grpcurl needs server reflection to list and call
// Check without the proto files.
func TestReflection(t *testing.T) {
	e := newTestEnv(t, Config{})
	stream, err := reflectionpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		got = append(got, s.GetName())
	}
	for _, want := range []string{AuthorizationService, "grpc.health.v1.Health"} {
		found := false
		for _, g := range got {
			found = found || g == want
		}
		if !found {
			t.Errorf("reflection lists %v, want %s among them", got, want)
		}
	}
}
