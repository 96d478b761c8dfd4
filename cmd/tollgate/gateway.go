package main

import (
	"context"
	"os"

	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/envoy/gateway"
	"github.com/tollgate-dev/tollgate/internal/telemetry"
)

// runGateway serves an Envoy bootstrap with the dev gateway until ctx is
// done (SIGINT/SIGTERM), then drains in-flight requests.
func runGateway(ctx context.Context, args []string) error {
	opts := gateway.DefaultOptions()
	f := newFlagSet("gateway")
	var (
		config string
		logs   logFlags
	)
	f.String(&config, "c", "TOLLGATE_GATEWAY_CONFIG", "envoy/envoy.yaml", "Envoy v3 bootstrap (YAML or JSON) to serve")
	f.Duration(&opts.ShutdownTimeout, "shutdown-timeout", "TOLLGATE_SHUTDOWN_TIMEOUT", opts.ShutdownTimeout, "how long to let in-flight requests finish at shutdown (Envoy's --drain-time-s)")
	logs.register(f)
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := logs.logger("gateway")
	if err != nil {
		return err
	}
	opts.Logger = log
	b, err := envoy.LoadFile(config)
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
