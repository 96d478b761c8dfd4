// Command tollgate is the one binary of the Tollgate stack: the issuer,
// the authz ext_authz server, the books backend, the dev gateway, and
// `up`, which runs them all on one machine.
//
// Flags and environment variables are read here and nowhere else; the
// packages take config structs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"issuer":  {"run the token service (accounts, login, JWKS)", runIssuer},
		"authz":   {"run the Envoy ext_authz server (gRPC Check and HTTP forward-auth); 'authz explain' says why a token is allowed or denied", runAuthz},
		"books":   {"run the books backend", runBooks},
		"gateway": {"run the dev gateway: a Go stand-in for Envoy that loads envoy.yaml", runGateway},
		"up":      {"run the whole stack on this machine", runUp},
		"version": {"print the version", runVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: tollgate <command> [flags]\n\ncommands:\n")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'tollgate <command> -h' for a command's flags. Every flag can also be set\nwith the environment variable shown beside it.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage(os.Stdout)
		return
	}
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "tollgate: unknown command %q\n\n", name)
		usage(os.Stderr)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "tollgate %s: %v\n", name, err)
		stop()
		os.Exit(1)
	}
}

func versionString() string {
	v, c := version, commit
	if c == "" {
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, s := range info.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("tollgate %s (commit %s)", v, c)
}

func runVersion(ctx context.Context, args []string) error {
	fmt.Println(versionString())
	return nil
}
