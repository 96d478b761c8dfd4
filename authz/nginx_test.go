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
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// nginxConf puts nginx with auth_request in front of a stub upstream:
// /books needs any valid token, /users the admin role. The auth
// subrequest always sets (or blanks) the policy header, so a client's
// own X-Tollgate-Require never reaches authz, and the upstream request
// gets the identity headers from authz's answer (blank, hence absent,
// when authz gave none) and no token headers.
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

  server {
    listen 127.0.0.1:{{.Port}};

    location = /_authz {
      internal;
      proxy_pass http://{{.Authz}}/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Tollgate-Require "";
      proxy_set_header X-Tollgate-Route books;
    }
    location = /_authz_admin {
      internal;
      proxy_pass http://{{.Authz}}/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Tollgate-Require admin;
      proxy_set_header X-Tollgate-Route users;
    }

    location /books {
      auth_request /_authz;
      include {{.Dir}}/identity.conf;
    }
    location = /users {
      auth_request /_authz_admin;
      include {{.Dir}}/identity.conf;
    }
  }
}
`))

const nginxIdentityConf = `
auth_request_set $tollgate_user_id $upstream_http_x_user_id;
auth_request_set $tollgate_user_name $upstream_http_x_user_name;
auth_request_set $tollgate_user_roles $upstream_http_x_user_roles;
auth_request_set $tollgate_challenge $upstream_http_www_authenticate;
add_header WWW-Authenticate $tollgate_challenge always;
proxy_set_header X-User-Id $tollgate_user_id;
proxy_set_header X-User-Name $tollgate_user_name;
proxy_set_header X-User-Roles $tollgate_user_roles;
proxy_set_header Authorization "";
proxy_set_header X-Access-Tokens "";
proxy_set_header X-Access-Token "";
proxy_pass http://{{UPSTREAM}};
`

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

// startNginx runs nginx in the foreground with conf in its own prefix
// directory on a loopback port, and stops it when the test ends.
func startNginx(t *testing.T, nginx, authzAddr, upstreamAddr string) string {
	t.Helper()
	dir := t.TempDir()
	identity := strings.ReplaceAll(nginxIdentityConf, "{{UPSTREAM}}", upstreamAddr)
	if err := os.WriteFile(filepath.Join(dir, "identity.conf"), []byte(identity), 0o600); err != nil {
		t.Fatal(err)
	}
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
		if err := nginxConf.Execute(&conf, map[string]any{"Dir": dir, "Port": port, "Authz": authzAddr}); err != nil {
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
			if tt.want.challenge != "" {
				if got := resp.Header.Get("WWW-Authenticate"); got != tt.want.challenge {
					t.Errorf("GET %s via nginx (%s): WWW-Authenticate = %q, want %q", tt.path, tt.name, got, tt.want.challenge)
				}
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
