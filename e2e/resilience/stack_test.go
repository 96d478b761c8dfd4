package resilience

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/envoy/gateway"
)

// TestStack checks the harness itself: the four processes come up wired
// together, a user gets through the gateway, and a process killed and
// restarted comes back on its address with its data.
func TestStack(t *testing.T) {
	s := StartStack(t, Config{Bin: tollgateBin(t), Dir: t.TempDir()})
	ctx := context.Background()
	gw := NewAPIClient(s.URL)
	u := NewUser("smoke")
	if err := gw.Register(ctx, u); err != nil {
		t.Fatal(err)
	}
	tok, err := gw.Login(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	book := NewBookInput(1)
	if _, err := gw.do(ctx, http.MethodPost, "/books", book, BearerHeader(tok.Raw), nil, http.StatusCreated); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.do(ctx, http.MethodGet, "/books", nil, nil, nil, http.StatusUnauthorized); err != nil {
		t.Fatalf("without a token: %v", err)
	}

	if err := s.Books.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.do(ctx, http.MethodGet, "/books", nil, BearerHeader(tok.Raw), nil, http.StatusServiceUnavailable); err != nil {
		t.Fatalf("books down: %v", err)
	}
	if err := s.Books.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Books []BookInput `json:"list_of_books"`
	}
	if _, err := gw.do(ctx, http.MethodGet, "/books", nil, BearerHeader(tok.Raw), &list, http.StatusOK); err != nil {
		t.Fatal(err)
	}
	if len(list.Books) != 1 || list.Books[0] != book {
		t.Fatalf("GET /books after a books restart = %+v, want [%+v]", list.Books, book)
	}
	for _, p := range s.Procs() {
		rss, err := p.RSS()
		if err != nil || rss <= 0 {
			t.Errorf("%s RSS = %d, %v; want a positive size", p.Name, rss, err)
		}
	}
	if c := s.Crashes(); len(c) > 0 {
		t.Errorf("unexpected exits: %v", c)
	}
	if err := s.Gateway.Term(); err != nil {
		t.Errorf("gateway SIGTERM: %v", err)
	}
}

// TestWriteGatewayConfig checks that the test copy of envoy.yaml points
// where it is told and still passes the gateway's validation, and that
// the broken variant really lets requests through on errors.
func TestWriteGatewayConfig(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "envoy.yaml")
	c := GatewayConfig{
		Listen: "127.0.0.1:18080", Admin: "127.0.0.1:19901",
		Endpoints:        map[string]string{"issuer": "127.0.0.1:1", "books": "127.0.0.1:2", "authz": "127.0.0.1:3"},
		FailureModeAllow: true,
	}
	if err := WriteGatewayConfig(filepath.Join(root, "envoy", "envoy.yaml"), dst, c); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	y := string(data)
	for _, want := range []string{"portValue: 18080", "portValue: 19901", "portValue: 1\n", "portValue: 2\n", "portValue: 3\n", "failureModeAllow: true"} {
		if !strings.Contains(y, want) {
			t.Errorf("edited bootstrap lacks %q", want)
		}
	}
	b, err := envoy.LoadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(b, gateway.DefaultOptions())
	if err != nil {
		t.Fatalf("gateway.New(edited bootstrap): %v", err)
	}
	g.Close()
	if err := WriteGatewayConfig(filepath.Join(root, "envoy", "envoy.yaml"), dst, GatewayConfig{Endpoints: map[string]string{"nope": "127.0.0.1:1"}}); err == nil {
		t.Error("WriteGatewayConfig(unknown cluster) = nil, want an error")
	}
}

// TestProcAddrInUse checks that a process whose port was taken reports
// ErrAddrInUse, which StartStack retries on other ports.
func TestProcAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	p := NewProc("books", tollgateBin(t), []string{"books", "-addr", l.Addr().String(), "-db", filepath.Join(dir, "books.db")}, nil,
		filepath.Join(dir, "books.log"), httpReady("http://"+l.Addr().String()+"/readyz"))
	err = p.Start(context.Background())
	if p.Running() {
		p.Kill()
	}
	if !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("Start on a taken port = %v, want ErrAddrInUse", err)
	}
}
