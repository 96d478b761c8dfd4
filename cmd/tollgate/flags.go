package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// flagSet is a flag.FlagSet whose flags also read an environment
// variable: a flag on the command line wins, then the variable, then the
// default.
type flagSet struct {
	*flag.FlagSet
	env map[string]string // flag name -> environment variable
}

func newFlagSet(name string) *flagSet {
	fs := flag.NewFlagSet("tollgate "+name, flag.ContinueOnError)
	return &flagSet{FlagSet: fs, env: map[string]string{}}
}

// bind registers the environment variable for an already defined flag
// and mentions it in the flag's usage.
func (f *flagSet) bind(name, env string) {
	f.env[name] = env
	fl := f.Lookup(name)
	fl.Usage = fmt.Sprintf("%s [$%s]", fl.Usage, env)
}

func (f *flagSet) String(p *string, name, env, def, usage string) {
	f.StringVar(p, name, def, usage)
	f.bind(name, env)
}

func (f *flagSet) Bool(p *bool, name, env string, def bool, usage string) {
	f.BoolVar(p, name, def, usage)
	f.bind(name, env)
}

func (f *flagSet) Int(p *int, name, env string, def int, usage string) {
	f.IntVar(p, name, def, usage)
	f.bind(name, env)
}

func (f *flagSet) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	f.DurationVar(p, name, def, usage)
	f.bind(name, env)
}

// Repeated registers a flag that may be given several times, each value
// appended to *p; its environment variable holds the values separated by
// commas.
func (f *flagSet) Repeated(p *[]string, name, env, usage string) {
	f.Var((*repeated)(p), name, usage)
	f.bind(name, env)
}

// repeated is a flag.Value that collects every value it is set to.
type repeated []string

func (r *repeated) String() string { return strings.Join(*r, ",") }

func (r *repeated) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*r = append(*r, item)
		}
	}
	return nil
}

// usageError is a command line that cannot be used: main prints it
// with a pointer to the usage and exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// parse parses args, then fills every flag not given on the command line
// from its environment variable; a bad value in either is a usageError.
// -h prints the usage to stdout and returns flag.ErrHelp.
func (f *flagSet) parse(args []string) error {
	f.SetOutput(io.Discard) // main prints errors, once
	err := f.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		f.SetOutput(os.Stdout)
		f.Usage()
		return err
	}
	if err != nil {
		return usageError{err}
	}
	f.SetOutput(os.Stderr)
	if f.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(f.Args(), " "))}
	}
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for name, env := range f.env {
		if set[name] {
			continue
		}
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Set(name, v); err != nil {
				return usageError{fmt.Errorf("$%s: %w", env, err)}
			}
		}
	}
	return nil
}

// logFlags are the logging flags every command has.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(f *flagSet) {
	f.String(&l.level, "log-level", "TOLLGATE_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	f.String(&l.format, "log-format", "TOLLGATE_LOG_FORMAT", "json", "log format: json or text")
}

// logger returns the structured logger the flags describe, tagged with
// the service name.
func (l *logFlags) logger(service string) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch l.format {
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	default:
		return nil, fmt.Errorf("-log-format must be json or text, not %q", l.format)
	}
	return slog.New(h).With("service", service), nil
}
