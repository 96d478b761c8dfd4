package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/envoy/gateway"
	"github.com/tollgate-dev/tollgate/internal/telemetry"
)

// gatewayFlags are the settings of `tollgate gateway`.
type gatewayFlags struct {
	log      logFlags
	config   string
	clusters []string
	opts     gateway.Options
}

func (f *gatewayFlags) register(fs *flagSet) {
	f.opts = gateway.DefaultOptions()
	fs.String(&f.config, "c", "TOLLGATE_GATEWAY_CONFIG", "", "Envoy v3 bootstrap file (YAML or JSON) to serve (default: the envoy.yaml built into this binary)")
	fs.String(&f.opts.ListenAddr, "addr", "TOLLGATE_GATEWAY_ADDR", "", "listen on HOST:PORT instead of the bootstrap's listener address (0.0.0.0:8080 in envoy.yaml)")
	fs.String(&f.opts.AdminAddr, "admin-addr", "TOLLGATE_GATEWAY_ADMIN_ADDR", "", "serve the admin interface on HOST:PORT instead of the bootstrap's (127.0.0.1:9901 in envoy.yaml)")
	fs.Repeated(&f.clusters, "cluster", "TOLLGATE_GATEWAY_CLUSTERS", "NAME=HOST:PORT: send the bootstrap's cluster NAME (issuer, books, authz) to HOST:PORT; repeatable")
	fs.Duration(&f.opts.ShutdownTimeout, "shutdown-timeout", "TOLLGATE_SHUTDOWN_TIMEOUT", f.opts.ShutdownTimeout, "how long to let in-flight requests finish at shutdown (Envoy's --drain-time-s)")
	f.log.register(fs)
}

// options turns the flags into gateway.Options.
func (f *gatewayFlags) options() (gateway.Options, error) {
	opts := f.opts
	for _, a := range []struct{ flag, v string }{{"-addr", opts.ListenAddr}, {"-admin-addr", opts.AdminAddr}} {
		if _, _, err := net.SplitHostPort(a.v); a.v != "" && err != nil {
			return opts, usageError{fmt.Errorf("%s %q: want HOST:PORT", a.flag, a.v)}
		}
	}
	for _, c := range f.clusters {
		name, addr, ok := strings.Cut(c, "=")
		if _, _, err := net.SplitHostPort(addr); !ok || name == "" || err != nil {
			return opts, usageError{fmt.Errorf("-cluster %q: want NAME=HOST:PORT", c)}
		}
		if opts.Endpoints == nil {
			opts.Endpoints = map[string]string{}
		}
		if _, dup := opts.Endpoints[name]; dup {
			return opts, usageError{fmt.Errorf("-cluster %s given twice", name)}
		}
		opts.Endpoints[name] = addr
	}
	return opts, nil
}

// runGateway serves an Envoy bootstrap with the dev gateway until ctx is
// done (SIGINT/SIGTERM), then drains in-flight requests.
func runGateway(ctx context.Context, args []string) error {
	fs := newFlagSet("gateway")
	var f gatewayFlags
	f.register(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	log, err := f.log.logger("gateway")
	if err != nil {
		return err
	}
	opts, err := f.options()
	if err != nil {
		return err
	}
	opts.Logger = log
	b, err := envoy.Load(f.config)
	if err != nil {
		return err
	}
	tr, err := tracingFromEnv(os.Environ())
	if err != nil {
		return err
	}
	defer flushTracing(tr)
	if opts.TracerProvider, err = tr.Provider(ctx, serviceName(telemetry.ServiceGateway), nil); err != nil {
		return err
	}
	g, err := gateway.New(b, opts)
	if err != nil {
		return err
	}
	l, admin, err := g.Listen()
	if err != nil {
		g.Close()
		return err
	}
	return g.Serve(ctx, l, admin)
}
