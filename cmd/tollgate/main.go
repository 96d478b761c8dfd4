// Command tollgate is the one binary of the Tollgate stack: the issuer,
// the authz ext_authz server, the books backend, the dev gateway,
// `up`, which runs them all on one machine, and `dpop`, a client's helper
// that signs DPoP proofs.
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
		"gateway": {"run the dev gateway: a Go stand-in for Envoy that serves envoy.yaml", runGateway},
		"up":      {"run the whole stack on this machine", runUp},
		"dpop":    {"print a DPoP proof (RFC 9449) signed with a local key file, for curl; -thumbprint prints the key's jkt", runDPoP},
		"version": {"print the version", runVersion},
		"help":    {"print a command's usage: tollgate help COMMAND", runHelp},
	}
}

// subcommands are listed with the commands they belong to.
var subcommands = map[string][]string{
	"issuer": {"issuer keygen   write a new signing key file, for rotation"},
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
		fmt.Fprintf(w, "  %-15s %s\n", n, cmds[n].summary)
		for _, sub := range subcommands[n] {
			fmt.Fprintf(w, "  %s\n", sub)
		}
	}
	fmt.Fprintf(w, "\nRun 'tollgate help <command>' or 'tollgate <command> -h' for a command's flags.\nEvery flag can also be set with the environment variable shown beside it.\n")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command line: it returns the exit status, 0 for
// success and for help, 2 for a command line it cannot use, 1 for a
// failure. Errors are printed here, once; help goes to stdout.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "-v", "-version", "--version":
		name, args = "version", args[:1]
	}
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(stderr, "tollgate: unknown command %q\n\n", name)
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, args[1:])
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "tollgate %s: %v\nRun 'tollgate help %s' for usage.\n", name, ue.err, name)
		return 2
	default:
		fmt.Fprintf(stderr, "tollgate %s: %v\n", name, err)
		return 1
	}
}

// runHelp prints a command's usage to stdout, as `COMMAND -h` does.
func runHelp(ctx context.Context, args []string) error {
	if len(args) == 0 {
		usage(os.Stdout)
		return nil
	}
	name := args[0]
	cmd, ok := commands()[name]
	if !ok || name == "help" {
		return usageError{fmt.Errorf("unknown command %q", name)}
	}
	return cmd.run(ctx, append(args[1:], "-h"))
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
	fs := newFlagSet("version")
	if err := fs.parse(args); err != nil {
		return err
	}
	fmt.Fprintln(os.Stdout, versionString())
	return nil
}
