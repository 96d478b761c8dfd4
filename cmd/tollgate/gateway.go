package main

import (
	"context"

	"github.com/tollgate-dev/tollgate/envoy"
)

// runGateway serves an Envoy bootstrap with the dev gateway until ctx is
// done (SIGINT/SIGTERM), then drains in-flight requests.
func runGateway(ctx context.Context, args []string) error {
	f := newFlagSet("gateway")
	var (
		config string
		logs   logFlags
	)
	f.String(&config, "c", "TOLLGATE_GATEWAY_CONFIG", "envoy/envoy.yaml", "Envoy v3 bootstrap (YAML or JSON) to serve")
	logs.register(f)
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := logs.logger("gateway")
	if err != nil {
		return err
	}
	b, err := envoy.LoadFile(config)
	if err != nil {
		return err
	}
	g, err := envoy.NewGateway(b, envoy.Options{Logger: log})
	if err != nil {
		return err
	}
	return g.Serve(ctx)
}
