package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/tutorial"
	"github.com/tollgate-dev/tollgate/stack"
)

// buildTollgate builds this command into a temporary directory, with the
// race detector when the test has it.
func buildTollgate(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "tollgate")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(t.Context(), goTool, append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// upProcess is a running `tollgate up`.
type upProcess struct {
	cmd    *exec.Cmd
	stdout *lockedBuffer
	stderr *lockedBuffer
	done   chan struct{}
	err    error // valid once done is closed
}

// environ is the test's environment without Tollgate settings, so a
// developer's own TOLLGATE_* variables cannot change what is tested.
func environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TOLLGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// startUp runs `tollgate up` with args and waits for its banner's last
// line.
func startUp(t *testing.T, bin string, args ...string) *upProcess {
	t.Helper()
	return startUpEnv(t, bin, nil, args...)
}

// startUpEnv is startUp with more environment variables.
func startUpEnv(t *testing.T, bin string, env []string, args ...string) *upProcess {
	t.Helper()
	p := &upProcess{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"up"}, args...)...)
	// Outside the repository: the binary carries its envoy.yaml.
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = append(environ(), env...)
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Fprintln(p.stdout, sc.Text())
			if strings.HasPrefix(sc.Text(), "Ready.") {
				close(ready)
			}
		}
		io.Copy(p.stdout, out)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("tollgate up stdout:\n%s\nstderr:\n%s", p.stdout, p.stderr)
		}
	})
	select {
	case <-ready:
	case <-p.done:
		t.Fatalf("tollgate up exited before it was ready: %v", p.err)
	case <-time.After(60 * time.Second):
		t.Fatal("tollgate up printed no banner within 60s")
	}
	return p
}

// stop sends sig and waits for a clean exit.
func (p *upProcess) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("tollgate up did not exit within 30s of %v", sig)
	}
	if p.err != nil {
		t.Errorf("tollgate up exited with %v after %v, want exit status 0", p.err, sig)
	}
	if !strings.Contains(p.stdout.String(), "Tollgate stopped.") {
		t.Errorf("tollgate up did not say it stopped; stdout:\n%s", p.stdout)
	}
}

// freeAddrs returns n loopback addresses whose ports nothing listens on
// right now.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// TestUp runs `tollgate up` as a user does, twice on the same data
// directory: the tutorial's first steps through its gateway, a clean
// exit on SIGINT, then the same user and book still there after a
// restart, and a clean exit on SIGTERM. Bad command lines are refused.
func TestUp(t *testing.T) {
	bin := buildTollgate(t)
	t.Run("refuses bad command lines", func(t *testing.T) { upRefuses(t, bin) })
	dataDir := filepath.Join(t.TempDir(), "data")
	a := freeAddrs(t, 6)
	args := []string{
		"-data-dir", dataDir,
		"-gateway-addr", a[0], "-gateway-admin-addr", a[1],
		"-issuer-addr", a[2], "-books-addr", a[3],
		"-authz-grpc-addr", a[4], "-authz-http-addr", a[5],
		"-log-format", "text", "-shutdown-timeout", "5s",
	}
	_, port, _ := net.SplitHostPort(a[0])
	base := "http://localhost:" + port
	client := &http.Client{Timeout: 10 * time.Second}
	const name, password = "alain", "alain-reads-books"
	passwordFile := filepath.Join(dataDir, stack.AdminPasswordFile)

	var adminPassword string
	var bookID string
	t.Run("first run", func(t *testing.T) {
		p := startUp(t, bin, args...)
		banner := p.stdout.String()
		for _, want := range []string{base, passwordFile, "curl -s -X POST http://reader:reader-likes-books@localhost:" + port + "/login"} {
			if !strings.Contains(banner, want) {
				t.Errorf("banner does not mention %q:\n%s", want, banner)
			}
		}
		fi, err := os.Stat(passwordFile)
		if err != nil {
			t.Fatalf("admin password file: %v", err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("admin password file mode = %o, want 600", fi.Mode().Perm())
		}
		data, _ := os.ReadFile(passwordFile)
		adminPassword = strings.TrimSpace(string(data))

		ctx := t.Context()
		if err := tutorial.Register(ctx, base, client, name, password); err != nil {
			t.Fatal(err)
		}
		token, err := tutorial.Login(ctx, base, client, name, password)
		if err != nil {
			t.Fatal(err)
		}
		bookID = postBook(t, client, base, token)

		admin, err := tutorial.Login(ctx, base, client, "admin", adminPassword)
		if err != nil {
			t.Fatalf("admin login with the password from %s: %v", passwordFile, err)
		}
		if got := status(t, client, base+"/users", "Authorization", "Bearer "+admin); got != http.StatusOK {
			t.Errorf("GET /users as admin = %d, want 200", got)
		}
		p.stop(t, os.Interrupt)
	})
	if t.Failed() {
		return
	}

	t.Run("second run keeps the data", func(t *testing.T) {
		p := startUp(t, bin, args...)
		data, _ := os.ReadFile(passwordFile)
		if got := strings.TrimSpace(string(data)); got != adminPassword {
			t.Errorf("admin password changed across runs: %q, was %q", got, adminPassword)
		}
		token, err := tutorial.Login(t.Context(), base, client, name, password)
		if err != nil {
			t.Fatalf("login after a restart: %v", err)
		}
		if got := status(t, client, base+"/books/"+bookID, "x-access-tokens", token); got != http.StatusOK {
			t.Errorf("GET /books/%s after a restart = %d, want 200", bookID, got)
		}
		p.stop(t, syscall.SIGTERM)
	})
}

func postBook(t *testing.T, client *http.Client, base, token string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", base+"/book",
		strings.NewReader(`{"name": "The Hobbit", "Author": "J. R. R. Tolkien", "Publisher": "George Allen & Unwin", "book_prize": 12}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-access-tokens", token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST /book = %d, want 201; body: %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/books/") {
		t.Fatalf("POST /book: Location = %q, want /books/{id}", loc)
	}
	return strings.TrimPrefix(loc, "/books/")
}

func status(t *testing.T, client *http.Client, url string, header ...string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// upRefuses checks that `tollgate up` explains what is wrong with its
// command line and exits with status 1 before starting anything.
func upRefuses(t *testing.T, bin string) {
	emptyPath := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"both gateway modes", []string{"-no-gateway", "-envoy"}, nil, "-no-gateway and -envoy exclude each other"},
		{"envoy not installed", []string{"-envoy"}, []string{"PATH=" + emptyPath}, "-envoy:"},
		{"missing gateway config", []string{"-gateway-config", filepath.Join(emptyPath, "nope.yaml")}, nil, "not found"},
		{"bad log format", []string{"-log-format", "xml"}, nil, "-log-format must be json or text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), bin, append([]string{"up", "-data-dir", t.TempDir()}, tc.args...)...)
			cmd.Env = append(environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("tollgate up %s: %v, want exit status 1\n%s", strings.Join(tc.args, " "), err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("tollgate up %s said %q, want it to mention %q", strings.Join(tc.args, " "), out, tc.want)
			}
		})
	}
}
