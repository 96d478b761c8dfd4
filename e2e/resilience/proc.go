package resilience

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tollgate-dev/tollgate/internal/server"
)

// ErrAddrInUse is a start that failed because the process's address was
// taken.
var ErrAddrInUse = errors.New("address already in use")

// ReadyTimeout bounds how long Start waits for a process to report ready.
const ReadyTimeout = 60 * time.Second

// StopTimeout bounds how long Term waits after SIGTERM before it kills.
const StopTimeout = 20 * time.Second

// Proc is one tollgate process the harness runs: it can be started,
// killed, terminated, paused and started again with the same arguments,
// so it comes back on the same address and data.
//
// Each process leads its own process group, and every signal goes to
// the group. It also dies with the harness (Pdeathsig), so a test
// binary killed by its timeout leaves nothing behind.
type Proc struct {
	// Name names the process in errors and in its log file name.
	Name string

	bin     string
	args    []string
	env     []string
	logPath string
	ready   func(ctx context.Context) error

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current process has exited
	stopping bool          // the harness stopped it on purpose
	paused   bool
	crashes  []string // exits nobody asked for, with their status
	starts   int
}

// NewProc describes a process: bin run with args and env (on top of the
// harness's environment without any TOLLGATE_ variable), its output
// appended to logPath, ready when ready returns nil. Nothing runs until
// Start.
func NewProc(name, bin string, args, env []string, logPath string, ready func(ctx context.Context) error) *Proc {
	return &Proc{Name: name, bin: bin, args: args, env: env, logPath: logPath, ready: ready}
}

// Start starts the process and waits until it is ready, it exits, or
// ReadyTimeout passes.
func (p *Proc) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.cmd != nil && !isClosed(p.done) {
		p.mu.Unlock()
		return fmt.Errorf("%s: already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		return fmt.Errorf("%s: open log: %w", p.Name, err)
	}
	p.starts++
	fmt.Fprintf(logf, "--- start %d of %s at %s: %s %s\n", p.starts, p.Name, time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(cleanEnv(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.mu.Unlock()
		return fmt.Errorf("%s: start: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.stopping, p.paused = cmd, done, false, false
	p.mu.Unlock()

	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		if !p.stopping {
			p.crashes = append(p.crashes, fmt.Sprintf("pid %d exited unasked: %v", cmd.Process.Pid, exitStatus(err)))
		}
		p.mu.Unlock()
		close(done)
	}()

	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	// A process that exits stops the wait at once.
	wctx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	go func() {
		select {
		case <-done:
			stopWait()
		case <-wctx.Done():
		}
	}()
	err = server.WaitReady(wctx, p.Name, 50*time.Millisecond, func(ctx context.Context) error {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		return p.ready(rctx)
	})
	switch {
	case err == nil:
		return nil
	case isClosed(done):
		tail := p.LogTail(30)
		if strings.Contains(tail, "address already in use") {
			// The child's only report of EADDRINUSE is its output.
			return fmt.Errorf("%s: %w; log tail:\n%s", p.Name, ErrAddrInUse, tail)
		}
		return fmt.Errorf("%s exited before it was ready (%v); log tail:\n%s", p.Name, err, tail)
	default:
		return fmt.Errorf("after %v: %w; log tail:\n%s", ReadyTimeout, err, p.LogTail(30))
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// cleanEnv is the harness's environment without TOLLGATE_ variables, so
// a developer's settings cannot change what a test runs.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TOLLGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// Running reports whether the process is running (paused counts).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.done)
}

// PID returns the process id of the current process, or 0.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// Starts returns how many times the process was started.
func (p *Proc) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Crashes returns the exits that the harness did not cause.
func (p *Proc) Crashes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.crashes...)
}

// signal sends sig to the process group and, when stop is set, marks the
// exit that follows as asked for.
func (p *Proc) signal(sig syscall.Signal, stop bool) (chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return nil, fmt.Errorf("%s: not running", p.Name)
	}
	if stop {
		p.stopping = true
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return nil, fmt.Errorf("%s: signal %v: %w", p.Name, sig, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		p.paused = true
	case syscall.SIGCONT:
		p.paused = false
	}
	return p.done, nil
}

// Kill sends SIGKILL and waits for the process to exit: a crash, with no
// chance to clean up.
func (p *Proc) Kill() error {
	done, err := p.signal(syscall.SIGKILL, true)
	if err != nil {
		return err
	}
	<-done
	return nil
}

// Term sends SIGTERM (resuming a paused process first, as Kubernetes
// would not stop a frozen one gracefully either) and waits for the exit,
// killing the process after StopTimeout. It reports the exit status of a
// process that did not stop cleanly.
func (p *Proc) Term() error {
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()
	done, err := p.signal(syscall.SIGTERM, true)
	if err != nil {
		return err
	}
	if paused {
		p.signal(syscall.SIGCONT, true)
	}
	select {
	case <-done:
	case <-time.After(StopTimeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.Name, StopTimeout)
	}
	p.mu.Lock()
	state := p.cmd.ProcessState
	p.mu.Unlock()
	if state != nil && !state.Success() {
		return fmt.Errorf("%s stopped with %v after SIGTERM", p.Name, state)
	}
	return nil
}

// Pause freezes the process (SIGSTOP): its sockets stay open and the
// kernel keeps accepting connections, but nothing answers. It is the
// harshest kind of "slow". It returns once every thread has stopped:
// the signal is only queued when kill returns, and a thread that is
// running finishes what it does first.
func (p *Proc) Pause() error {
	if _, err := p.signal(syscall.SIGSTOP, false); err != nil {
		return err
	}
	pid := p.PID()
	deadline := time.Now().Add(5 * time.Second)
	for !allStopped(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: threads still running 5s after SIGSTOP", p.Name)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// allStopped reports whether every thread of pid is in the stopped state
// ("T" in /proc/<pid>/task/<tid>/stat).
func allStopped(pid int) bool {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", task.Name(), "stat"))
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses
		// and may itself hold spaces or parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Resume undoes Pause (SIGCONT).
func (p *Proc) Resume() error {
	_, err := p.signal(syscall.SIGCONT, false)
	return err
}

// Restart kills the process if it runs and starts it again.
func (p *Proc) Restart(ctx context.Context) error {
	if p.Running() {
		if err := p.Kill(); err != nil {
			return err
		}
	}
	return p.Start(ctx)
}

// RSS returns the resident set size of the process, from
// /proc/<pid>/status.
func (p *Proc) RSS() (int64, error) {
	pid := p.PID()
	if pid == 0 {
		return 0, fmt.Errorf("%s: not running", p.Name)
	}
	return procStatusKB(pid, "VmRSS")
}

// Threads returns the OS threads of the process.
func (p *Proc) Threads() (int64, error) {
	pid := p.PID()
	if pid == 0 {
		return 0, fmt.Errorf("%s: not running", p.Name)
	}
	n, err := procStatusField(pid, "Threads")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(n, 10, 64)
}

func procStatusKB(pid int, field string) (int64, error) {
	v, err := procStatusField(pid, field)
	if err != nil {
		return 0, err
	}
	kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/status %s %q: %w", pid, field, v, err)
	}
	return kb << 10, nil
}

func procStatusField(pid int, field string) (string, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == field {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// LogTail returns the last n lines the process wrote.
func (p *Proc) LogTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LogPath is the file the process's output goes to.
func (p *Proc) LogPath() string { return p.logPath }

// httpReady returns a readiness check that wants 200 from url.
func httpReady(url string) func(ctx context.Context) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s = %d %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return nil
	}
}

// FreeAddr returns a loopback address with a port nothing listens on
// right now. A restarted process must come back on the same address (the
// gateway's endpoints are static), so addresses are chosen up front
// rather than by the process binding port 0.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
