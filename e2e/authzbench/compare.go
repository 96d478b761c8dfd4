package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/tollgate-dev/tollgate/internal/otlptest"
)

// variant is one way to run the cached authz in a -compare run.
type variant struct {
	name string
	args []string
	env  []string
}

// withoutOTEL drops the OTEL_* variables, so only a variant's own turn
// tracing on.
func withoutOTEL(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "OTEL_") {
			out = append(out, kv)
		}
	}
	return out
}

// runCompare drives the bare no-op and each variant of the cached authz
// with the token pool, interleaved over o.runs, and prints each one's
// throughput against the no-op.
func (o options) runCompare(bare *server, jwksURL, pool string) error {
	var variants []variant
	switch o.compare {
	case "tracing":
		recv, err := otlptest.New()
		if err != nil {
			return err
		}
		defer recv.Close()
		variants = []variant{
			{name: "tracing off"},
			{name: "tracing on (always_on, OTLP gRPC to a local receiver)", env: []string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + recv.GRPCAddr, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_TRACES_SAMPLER=always_on",
			}},
		}
		defer func() { fmt.Printf("\nspans the receiver got: %d\n", len(recv.Spans())) }()
	case "logging":
		variants = []variant{
			{name: "decision log off (-log-level warn)", args: []string{"-log-level", "warn"}},
			{name: "decision log sync (-log-buffer 0)", args: []string{"-log-buffer", "0"}},
			{name: "decision log async (default)"},
			{name: "decision log async, 1 allow in 100", args: []string{"-log-allow-sample", "100"}},
		}
	default:
		return fmt.Errorf("-compare %q: want tracing or logging", o.compare)
	}
	servers := make([]*server, len(variants))
	for i, v := range variants {
		s, err := startAuthzVariant(o.tollgate, jwksURL, 10000, ", "+v.name, v.args, v.env)
		if err != nil {
			return err
		}
		defer s.stop()
		servers[i] = s
	}
	all := append([]*server{bare}, servers...)
	fmt.Printf("warming up (%v per server)...\n", o.warmup)
	for _, s := range all {
		if _, err := o.ghzRun(s, pool, o.warmup, 0); err != nil {
			return fmt.Errorf("warm-up of %s: %w", s.name, err)
		}
	}
	results := make([][]result, len(all))
	for r := range o.runs {
		order := rotate(indices(len(all)), r)
		for _, i := range order {
			fmt.Printf("run %d/%d: %s, max rate...\n", r+1, o.runs, all[i].name)
			res, err := o.ghzRun(all[i], pool, o.duration, 0)
			if err != nil {
				return fmt.Errorf("%s: %w", all[i].name, err)
			}
			results[i] = append(results[i], res)
		}
	}
	for _, s := range servers {
		if err := s.checkAllAllowed(); err != nil {
			return err
		}
	}
	rps := func(i int) float64 { return median(results[i], func(r result) float64 { return r.rps }) }
	p99 := func(i int) float64 { return median(results[i], func(r result) float64 { return float64(r.p99) }) }
	fmt.Printf("\nauthz %s comparison: ghz -c %d --connections %d, %v per run, median of %d runs, %d-token pool, loopback\n\n",
		o.compare, o.concurrency, o.connections, o.duration, o.runs, o.tokens)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tchecks/s\tp99\t/ no-op\t/ first variant\t")
	for i, s := range all {
		vs := "-"
		if i > 0 {
			vs = fmt.Sprintf("%.2f", rps(i)/rps(1))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.2f\t%s\t\n", s.name, rps(i), ms(p99(i)), rps(i)/rps(0), vs)
	}
	return tw.Flush()
}

func indices(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}
