package authz

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// nginxConf puts nginx with auth_request in front of a stub upstream,
// configured by the docs' authz page's nginx example (see nginxExample): /users
// needs the admin role as written there, and /books, derived from the
// same text, any valid token.
var nginxConf = template.Must(template.New("nginx").Parse(`
daemon off;
master_process off;
worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log info;
events { worker_connections 64; }
http {
  access_log {{.Dir}}/access.log;
  client_body_temp_path {{.Dir}}/client_body;
  proxy_temp_path {{.Dir}}/proxy;
  fastcgi_temp_path {{.Dir}}/fastcgi;
  uwsgi_temp_path {{.Dir}}/uwsgi;
  scgi_temp_path {{.Dir}}/scgi;

{{.HTTP}}
  server {
    listen 127.0.0.1:{{.Port}};

{{.Locations}}
  }
}
`))

// readmePath is the docs page whose nginx example the test runs.
const readmePath = "../docs/authz.md"

// nginxExample returns the docs' authz page's nginx example (its one fenced nginx
// block), split where its locations start: the part before goes into
// nginx's http block, the locations into a server block. The test runs
// exactly this text, so the docs cannot drift from what is tested.
func nginxExample(t *testing.T) (httpPart, locations string) {
	t.Helper()
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatalf("read the docs' authz page's nginx example: %v", err)
	}
	const open, fence = "```nginx\n", "\n```\n"
	if n := bytes.Count(readme, []byte(open)); n != 1 {
		t.Fatalf("%s has %d nginx code blocks, want 1 (the forward-auth example)", readmePath, n)
	}
	_, rest, _ := strings.Cut(string(readme), open)
	block, _, ok := strings.Cut(rest, fence)
	if !ok {
		t.Fatalf("%s: the nginx code block is not closed", readmePath)
	}
	block = "\n" + block
	i := strings.Index(block, "\nlocation ")
	if i < 0 {
		t.Fatalf("%s: the nginx example has no location", readmePath)
	}
	return block[1 : i+1], block[i+1:]
}

// replaceExactly is strings.ReplaceAll that fails the test unless old
// occurs exactly n times: a derivation that silently matched nothing
// would test something other than the docs' authz page's example.
func replaceExactly(t *testing.T, s, old, new string, n int) string {
	t.Helper()
	if got := strings.Count(s, old); got != n {
		t.Fatalf("the docs' authz page's nginx example has %q %d times, want %d; update nginx_test.go with it", old, got, n)
	}
	return strings.ReplaceAll(s, old, new)
}

// nginxSites turns the docs' authz page's example into the test's configuration:
// its services' addresses replaced with the test's, and a /books route
// with no requirement beside its /users route.
func nginxSites(t *testing.T, authzAddr, upstreamAddr string) (httpPart, locations string) {
	t.Helper()
	httpPart, users := nginxExample(t)
	users = replaceExactly(t, users, "http://authz:9002/", "http://"+authzAddr+"/", 1)
	users = replaceExactly(t, users, "http://issuer:8081;", "http://"+upstreamAddr+";", 1)
	books := replaceExactly(t, users, "/_authz_admin", "/_authz", 2)
	books = replaceExactly(t, books, "X-Tollgate-Require admin;", `X-Tollgate-Require "";`, 1)
	books = replaceExactly(t, books, "X-Tollgate-Route users;", "X-Tollgate-Route books;", 1)
	books = replaceExactly(t, books, "location = /users {", "location /books {", 1)
	return httpPart, users + "\n" + books
}

// upstreamStub records every request that reaches it.
type upstreamStub struct {
	mu   sync.Mutex
	seen []*http.Request
}

func (u *upstreamStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.seen = append(u.seen, r)
	u.mu.Unlock()
	fmt.Fprintln(w, "upstream ok")
}

func (u *upstreamStub) take() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.seen
	u.seen = nil
	return s
}

// startNginx runs nginx in the foreground with nginxConf in its own
// prefix directory on a loopback port, and stops it when the test ends.
func startNginx(t *testing.T, nginx, authzAddr, upstreamAddr string) string {
	t.Helper()
	dir := t.TempDir()
	httpPart, locations := nginxSites(t, authzAddr, upstreamAddr)
	var lastErr string
	// nginx cannot take a listener from us, so it gets a port that was
	// free a moment ago; on the rare clash, try another.
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		var conf bytes.Buffer
		if err := nginxConf.Execute(&conf, map[string]any{"Dir": dir, "Port": port, "HTTP": httpPart, "Locations": locations}); err != nil {
			t.Fatal(err)
		}
		confPath := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(confPath, conf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(nginx, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start nginx: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				logs, _ := os.ReadFile(filepath.Join(dir, "error.log"))
				lastErr = out.String() + string(logs)
				deadline = time.Time{}
				continue
			default:
			}
			if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
				c.Close()
				t.Cleanup(func() {
					cmd.Process.Kill()
					<-exited
					if t.Failed() {
						logs, _ := os.ReadFile(filepath.Join(dir, "error.log"))
						t.Logf("nginx error log:\n%s", logs)
					}
				})
				return "http://" + addr
			}
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Kill()
		<-exited
	}
	t.Fatalf("nginx did not start: %s", lastErr)
	return ""
}

// findNginx finds nginx on PATH or where Debian puts it (/usr/sbin is not
// on every user's PATH), else skips, or fails under TOLLGATE_REQUIRE_ALL.
func findNginx(t *testing.T) string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if fi, err := os.Stat("/usr/sbin/nginx"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/sbin/nginx"
	}
	return testenv.LookPath(t, "nginx", "apt-get install nginx-light")
}

// TestNginxAuthRequest puts authz's forward-auth endpoint behind a real
// nginx auth_request in front of a stub upstream.
func TestNginxAuthRequest(t *testing.T) {
	nginx := findNginx(t)
	e := newTestEnv(t, Config{CacheSize: 100})
	e.waitReady()
	authzHTTP := httptest.NewServer(e.srv.HTTPHandler())
	t.Cleanup(authzHTTP.Close)
	up := &upstreamStub{}
	upstream := httptest.NewServer(up)
	t.Cleanup(upstream.Close)
	base := startNginx(t, nginx, authzHTTP.Listener.Addr().String(), upstream.Listener.Addr().String())

	attacker := newTestKey(t, "ES256", "attacker")
	userClaims := claimsFor("0b6c7d8e-user", "user")
	user := e.key.sign(t, userClaims, nil)
	admin := e.key.sign(t, claimsFor("1c7d8e9f-admin", "admin", "user"), nil)
	noName := claimsFor("2d8e9f0a-noname", "user")
	delete(noName, "name")

	type want struct {
		status    int
		challenge string
		upstream  map[string]string // headers the upstream must see ("" = absent); nil = must not be reached
	}
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		want    want
	}{
		{
			name: "bearer token", path: "/books?page=2",
			headers: map[string]string{"Authorization": "Bearer " + user, "X-User-Id": "spoofed", "X-User-Roles": "admin"},
			want: want{status: 200, upstream: map[string]string{
				"X-User-Id": "0b6c7d8e-user", "X-User-Name": "alice", "X-User-Roles": "user", "Authorization": ""}},
		},
		{
			name: "tutorial header", path: "/books",
			headers: map[string]string{"X-Access-Tokens": user, "X-Tollgate-Require": "nonsense"},
			want: want{status: 200, upstream: map[string]string{
				"X-User-Id": "0b6c7d8e-user", "X-Access-Tokens": "", "X-Tollgate-Require": "nonsense"}},
		},
		{
			name: "no name claim: a client's X-User-Name is dropped", path: "/books",
			headers: map[string]string{"Authorization": "Bearer " + e.key.sign(t, noName, nil), "X-User-Name": "root"},
			want:    want{status: 200, upstream: map[string]string{"X-User-Id": "2d8e9f0a-noname", "X-User-Name": ""}},
		},
		{
			name: "admin route, admin token", path: "/users",
			headers: map[string]string{"Authorization": "Bearer " + admin},
			want:    want{status: 200, upstream: map[string]string{"X-User-Id": "1c7d8e9f-admin", "X-User-Roles": "admin,user"}},
		},
		{
			name: "no token", path: "/books",
			headers: map[string]string{"X-User-Id": "spoofed"},
			want:    want{status: 401, challenge: `Bearer realm="tollgate"`},
		},
		{
			name: "forged token", path: "/books",
			headers: map[string]string{"Authorization": "Bearer " + attacker.sign(t, claimsFor("0b6c7d8e-user", "admin"), map[string]any{"kid": e.key.kid})},
			want:    want{status: 401, challenge: `Bearer realm="tollgate", error="invalid_token"`},
		},
		{
			name: "alg none", path: "/books",
			headers: map[string]string{"X-Access-Tokens": rawToken(t, map[string]any{"alg": "none", "kid": e.key.kid}, userClaims, []byte("x"))},
			want:    want{status: 401, challenge: `Bearer realm="tollgate", error="invalid_token"`},
		},
		{
			name: "admin route, no token", path: "/users",
			want: want{status: 401, challenge: `Bearer realm="tollgate"`},
		},
		{
			name: "admin route, user token, client asks for less", path: "/users",
			headers: map[string]string{"Authorization": "Bearer " + user, "X-Tollgate-Require": "user"},
			want:    want{status: 403, challenge: `Bearer realm="tollgate", error="insufficient_scope"`},
		},
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(context.Background(), "GET", base+tt.path, nil)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want.status {
				t.Errorf("GET %s via nginx (%s) = %d, want %d", tt.path, tt.name, resp.StatusCode, tt.want.status)
			}
			// Every value, not Header.Get's first: a proxy that passes
			// authz's challenge on and adds it again sends two.
			var wantChallenges []string
			if tt.want.challenge != "" {
				wantChallenges = []string{tt.want.challenge}
			}
			if got := resp.Header.Values("WWW-Authenticate"); !slices.Equal(got, wantChallenges) {
				t.Errorf("GET %s via nginx (%s): WWW-Authenticate = %q, want %q", tt.path, tt.name, got, wantChallenges)
			}
			seen := up.take()
			if tt.want.upstream == nil {
				if len(seen) != 0 {
					t.Fatalf("GET %s via nginx (%s) reached the upstream; a denied request must not", tt.path, tt.name)
				}
				return
			}
			if len(seen) != 1 {
				t.Fatalf("GET %s via nginx (%s) reached the upstream %d times, want once", tt.path, tt.name, len(seen))
			}
			for k, v := range tt.want.upstream {
				if got := strings.Join(seen[0].Header.Values(k), ","); got != v {
					t.Errorf("upstream saw %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}
