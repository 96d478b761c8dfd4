package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCommandLine runs the built binary as a user would and checks what
// each habit gets: the exit status, and which stream the words go to.
func TestCommandLine(t *testing.T) {
	bin := buildTollgate(t)
	outside := t.TempDir()
	worldReadable := filepath.Join(outside, "shared.pem")
	if err := os.WriteFile(worldReadable, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(worldReadable, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		args       []string
		wantStatus int
		stdout     string // a substring of stdout; "" for empty stdout
		stderr     string // a substring of stderr; "" for empty stderr
	}{
		{"version", []string{"version"}, 0, "tollgate ", ""},
		{"--version", []string{"--version"}, 0, "tollgate ", ""},
		{"-version", []string{"-version"}, 0, "tollgate ", ""},
		{"-v", []string{"-v"}, 0, "tollgate ", ""},
		{"-h lists every command", []string{"-h"}, 0, "issuer keygen", ""},
		{"help", []string{"help"}, 0, "usage: tollgate <command>", ""},
		{"help up", []string{"help", "up"}, 0, "-gateway-config", ""},
		{"up -h", []string{"up", "-h"}, 0, "-gateway-config", ""},
		{"issuer -h", []string{"issuer", "-h"}, 0, "tollgate issuer keygen", ""},
		{"issuer keygen -h", []string{"issuer", "keygen", "-h"}, 0, "-out", ""},
		{"gateway -h", []string{"gateway", "-h"}, 0, "-cluster", ""},
		{"books -h says how to listen elsewhere", []string{"books", "-h"}, 0, `":8082" for every interface`, ""},
		{"help of an unknown command", []string{"help", "nope"}, 2, "", `unknown command "nope"`},
		{"unknown command", []string{"nope"}, 2, "", `unknown command "nope"`},
		{"no command", nil, 2, "", "usage: tollgate"},
		{"unknown flag", []string{"books", "-nope"}, 2, "", "flag provided but not defined: -nope"},
		{"keygen into a missing directory", []string{"issuer", "keygen", "-out", filepath.Join(outside, "missing", "dir")}, 2, "", "not an existing directory"},
		{"bad -cluster", []string{"gateway", "-cluster", "books"}, 2, "", "want NAME=HOST:PORT"},
		{"help dpop", []string{"help", "dpop"}, 0, "tollgate dpop -key FILE -thumbprint", ""},
		{"dpop without -url", []string{"dpop", "-key", "dpop.pem"}, 2, "", "-url is required"},
		{"dpop with a key file others can read", []string{"dpop", "-key", worldReadable, "-thumbprint"}, 1, "", "chmod 600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), bin, tc.args...)
			cmd.Dir = outside
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			status := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tc.wantStatus {
				t.Errorf("tollgate %q exit status = %d, want %d (stderr %q)", tc.args, status, tc.wantStatus, stderr.String())
			}
			for _, s := range []struct {
				name, got, want string
			}{{"stdout", stdout.String(), tc.stdout}, {"stderr", stderr.String(), tc.stderr}} {
				if (s.want == "") != (s.got == "") || !strings.Contains(s.got, s.want) {
					t.Errorf("tollgate %q %s = %q, want %s", tc.args, s.name, s.got, describe(s.want))
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(outside, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("keygen -out into a missing directory created it (stat: %v)", err)
	}
}

func describe(want string) string {
	if want == "" {
		return "nothing"
	}
	return "text containing " + want
}

// TestGatewayCommandFromAnyDirectory runs `tollgate gateway` outside the
// repository, with no -c: the built-in envoy.yaml, moved by the address
// flags, answers a public route by sending it to the cluster -cluster
// named.
func TestGatewayCommandFromAnyDirectory(t *testing.T) {
	bin := buildTollgate(t)
	issuer := httpServerOn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"keys":[]}`))
	}))
	a := freeAddrs(t, 3)
	cmd := exec.Command(bin, "gateway", "-addr", a[0], "-admin-addr", a[1],
		"-cluster", "issuer="+issuer, "-cluster", "books="+a[2], "-cluster", "authz="+a[2], "-shutdown-timeout", "2s")
	cmd.Dir = t.TempDir()
	cmd.Env = environ()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("tollgate gateway after SIGTERM: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("tollgate gateway did not stop on SIGTERM")
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	for {
		resp, err := http.Get("http://" + a[0] + "/.well-known/jwks.json")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /.well-known/jwks.json through the gateway = %d, want 200 from the -cluster issuer", resp.StatusCode)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("gateway never answered on %s: %v\n%s", a[0], err, stderr.String())
		case err := <-done:
			t.Fatalf("tollgate gateway exited: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	resp, err := http.Get("http://" + a[1] + "/ready")
	if err != nil {
		t.Fatalf("admin on -admin-addr %s: %v", a[1], err)
	}
	resp.Body.Close()
}

// httpServerOn serves h on a loopback port until the test ends and
// returns its address.
func httpServerOn(t *testing.T, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}
