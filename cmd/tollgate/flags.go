package main

import (
	"flag"
	"fmt"
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

// parse parses args, then fills every flag not given on the command line
// from its environment variable; a bad value in either is an error.
func (f *flagSet) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(f.Args(), " "))
	}
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for name, env := range f.env {
		if set[name] {
			continue
		}
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Set(name, v); err != nil {
				return fmt.Errorf("$%s: %w", env, err)
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
