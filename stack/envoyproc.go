package stack

import (
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
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate-dev/tollgate/envoy"
)

// EnvoyBootstrapFile is the file under the data directory where the stack
// writes the bootstrap it runs envoy with: Config.GatewayConfig with the
// stack's addresses in it.
const EnvoyBootstrapFile = "envoy-bootstrap.json"

// writeEnvoyBootstrap loads Config.GatewayConfig, points its listener,
// admin and clusters at the stack's addresses, validates the result as
// the gateway would and writes it under the data directory. It records
// the gateway's addresses in st.addrs.
func (st *Stack) writeEnvoyBootstrap() (string, error) {
	b, err := envoy.Load(st.gatewayConfigName())
	if err != nil {
		return "", fmt.Errorf("gateway config: %w", err)
	}
	listeners := b.GetStaticResources().GetListeners()
	if len(listeners) != 1 || listeners[0].GetAddress().GetSocketAddress() == nil {
		return "", fmt.Errorf("gateway config %s: want exactly one listener with a socket address, for the stack to know where envoy listens", st.gatewayConfigName())
	}
	if st.cfg.GatewayAdminAddr != "" && b.Admin == nil {
		return "", fmt.Errorf("gateway config %s has no admin section to move", st.gatewayConfigName())
	}
	if err := envoy.Relocate(b, envoy.Addresses{Listen: st.cfg.GatewayAddr, Admin: st.cfg.GatewayAdminAddr, Endpoints: st.endpoints()}); err != nil {
		return "", fmt.Errorf("gateway config %s: %w", st.cfg.GatewayConfig, err)
	}
	st.addrs.Gateway = addrString(listeners[0].GetAddress().GetSocketAddress())
	if sa := b.GetAdmin().GetAddress().GetSocketAddress(); sa != nil {
		st.addrs.GatewayAdmin = addrString(sa)
	}
	// envoy binds these itself, so the stack must be told the ports.
	if portOf(st.addrs.Gateway) == 0 || (st.addrs.GatewayAdmin != "" && portOf(st.addrs.GatewayAdmin) == 0) {
		return "", errors.New("envoy's listener and admin ports must not be 0")
	}
	if err := envoy.Validate(b); err != nil {
		return "", fmt.Errorf("gateway config with the stack's addresses: %w", err)
	}
	data, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(b)
	if err != nil {
		return "", fmt.Errorf("encode envoy bootstrap: %w", err)
	}
	path := filepath.Join(st.cfg.DataDir, EnvoyBootstrapFile)
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("write envoy bootstrap: %w", err)
	}
	return path, nil
}

func addrString(sa *corev3.SocketAddress) string {
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
}

// envoyProcess is envoy run as a child process.
type envoyProcess struct {
	cmd      *exec.Cmd
	finished chan struct{}
	err      error // valid once finished is closed
}

// startEnvoy runs envoy on bootstrap and waits until its admin interface
// says it is live.
func startEnvoy(ctx context.Context, st *Stack, bootstrap string) (*envoyProcess, error) {
	if st.cfg.EnvoyBinary == "" {
		return nil, errors.New("no envoy binary given")
	}
	out := st.cfg.EnvoyOutput
	if out == nil {
		out = io.Discard
	}
	// Hot restart is off so that this envoy shares no memory region with
	// another one on the machine.
	cmd := exec.Command(st.cfg.EnvoyBinary, "-c", bootstrap, "--disable-hot-restart", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start envoy: %w", err)
	}
	p := &envoyProcess{cmd: cmd, finished: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.finished)
	}()
	st.log.Info("envoy started", "component", "gateway", "pid", cmd.Process.Pid, "bootstrap", bootstrap)
	if st.addrs.GatewayAdmin == "" {
		return p, nil // the gateway probe is all there is
	}
	client := &http.Client{Timeout: time.Second}
	url := "http://" + dialAddr(st.addrs.GatewayAdmin) + "/ready"
	err := waitReady(ctx, "envoy", func(ctx context.Context) error {
		select {
		case <-p.finished:
			return fmt.Errorf("envoy exited: %v", p.err)
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s = %d", url, resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// stop asks envoy to exit (SIGTERM) and kills it if it has not within
// ctx.
func (p *envoyProcess) stop(ctx context.Context) error {
	select {
	case <-p.finished:
		return p.exitErr()
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.kill()
		return p.exitErr()
	}
	select {
	case <-p.finished:
		return p.exitErr()
	case <-ctx.Done():
		p.kill()
		return fmt.Errorf("envoy did not exit in time: %w", ctx.Err())
	}
}

// exitErr is envoy's exit status as an error; exiting on the SIGTERM it
// was sent is a clean stop.
func (p *envoyProcess) exitErr() error {
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	if p.err != nil {
		return fmt.Errorf("envoy: %w", p.err)
	}
	return nil
}

func (p *envoyProcess) kill() {
	p.cmd.Process.Kill()
	<-p.finished
}

func (p *envoyProcess) done() <-chan struct{} { return p.finished }

// gatewayConfigName names the bootstrap in errors and the banner.
func (st *Stack) gatewayConfigName() string {
	if st.cfg.GatewayConfig == "" {
		return envoy.ShippedName
	}
	return st.cfg.GatewayConfig
}
