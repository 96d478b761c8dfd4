// Package pgtest starts a throwaway PostgreSQL server for tests, once per
// test binary, and hands each test a fresh database in it.
//
// It needs the PostgreSQL server binaries (initdb, pg_ctl, postgres) on
// PATH or under /usr/lib/postgresql/*/bin. Without them a test skips, or
// fails under TOLLGATE_REQUIRE_ALL=1. It never touches a server it did
// not start.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

var (
	once    sync.Once
	baseURL string
	initErr error
	dbSeq   atomic.Int64
)

// binDir finds the directory holding initdb.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, pg_ctl) not found; install them with: apt-get install postgresql")
}

// URL returns the postgres:// URL of a new, empty database on the
// throwaway server, starting the server on first use.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(func() { baseURL, initErr = start() })
	if initErr != nil {
		testenv.Missing(t, "PostgreSQL: "+initErr.Error())
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	admin, err := sql.Open("pgx", baseURL+"/postgres?sslmode=disable")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	return baseURL + "/" + name + "?sslmode=disable"
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs initdb and the server in a temporary directory, as the
// postgres user when running as root (the server refuses root), and
// stops it when the test binary's parent process exits.
func start() (string, error) {
	bin, err := binDir()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "tollgate-pgtest-")
	if err != nil {
		return "", err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", fmt.Errorf("running as root and there is no postgres user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", err
		}
	}
	run := func(name string, args ...string) error {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", name, err, out)
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"); err != nil {
		return "", err
	}
	// The port is free when chosen but another test binary may take it
	// before the server binds it, so a failed start is tried again on a
	// new port.
	var port int
	for attempt := 1; ; attempt++ {
		if port, err = freePort(); err != nil {
			return "", err
		}
		opts := fmt.Sprintf("-h 127.0.0.1 -p %d -k %s -c fsync=off -c max_connections=200", port, dir)
		err = run("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start")
		if err == nil {
			break
		}
		if attempt == 3 {
			return "", err
		}
	}
	// The server outlives a crashed test binary otherwise; a watcher
	// process stops it when this process exits.
	stopper := exec.Command("sh", "-c", fmt.Sprintf(
		"while [ -d /proc/%d ]; do sleep 1; done; %s -D %s -m immediate stop >/dev/null 2>&1; rm -rf %s",
		os.Getpid(), filepath.Join(bin, "pg_ctl"), data, dir))
	if cred != nil {
		stopper.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	} else {
		stopper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := stopper.Start(); err != nil {
		return "", err
	}
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		db, err := sql.Open("pgx", url+"/postgres?sslmode=disable")
		if err == nil {
			err = db.PingContext(ctx)
			db.Close()
		}
		if err == nil {
			return url, nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("server did not accept connections: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
