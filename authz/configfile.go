package authz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxConfigBytes bounds the configuration file.
const maxConfigBytes = 1 << 20

// configFile is one reading of the configuration file: its bytes, its
// YAML tree (to name lines in errors) and what it says.
type configFile struct {
	path string
	data []byte
	root *yaml.Node // the document's top mapping
	cfg  fileConfig
}

// readConfigFile reads and strictly decodes the configuration file. An
// unknown or misspelt key, a value of the wrong type or a YAML syntax
// error is an error written "FILE:LINE: ...".
func readConfigFile(path string) (*configFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("authz config: %w", err)
	}
	return parseConfigFile(path, data)
}

func parseConfigFile(path string, data []byte) (*configFile, error) {
	f := &configFile{path: path, data: data}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%s: over %d bytes", path, maxConfigBytes)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, errEOF) {
			return nil, fmt.Errorf("%s:1: the file is empty (it needs an issuers list)", path)
		}
		return nil, f.yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s:%d: a second YAML document; the file must hold one", path, extra.Line)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: the file must be a YAML mapping with an issuers list", path, doc.Line)
	}
	f.root = doc.Content[0]
	if err := f.checkKeys(f.root, reflect.TypeFor[fileConfig](), "the file"); err != nil {
		return nil, err
	}
	if err := f.root.Decode(&f.cfg); err != nil {
		return nil, f.yamlError(err)
	}
	return f, nil
}

var errEOF = func() error {
	var n yaml.Node
	return yaml.NewDecoder(strings.NewReader("")).Decode(&n)
}()

// checkKeys refuses, with its line, any mapping key that the Go type
// the mapping decodes into has no field for.
func (f *configFile) checkKeys(n *yaml.Node, t reflect.Type, where string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		return fmt.Errorf("%s:%d: YAML aliases are not allowed", f.path, n.Line)
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == reflect.TypeFor[time.Duration]() || n.Kind != yaml.MappingNode {
			return nil // a type error, which Decode reports
		}
		fields := map[string]reflect.Type{}
		collectFields(t, fields)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				return fmt.Errorf("%s:%d: unknown key %q in %s (known: %s)", f.path, k.Line, k.Value, where, knownKeys(t))
			}
			if err := f.checkKeys(v, ft, k.Value); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for _, item := range n.Content {
				if err := f.checkKeys(item, t.Elem(), "an entry of "+where); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if err := f.checkKeys(n.Content[i+1], t.Elem(), n.Content[i].Value); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// collectFields maps a struct's YAML keys to their types, following
// inline fields.
func collectFields(t reflect.Type, into map[string]reflect.Type) {
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if opts == "inline" {
			collectFields(sf.Type, into)
			continue
		}
		if name != "" && name != "-" {
			into[name] = sf.Type
		}
	}
}

func knownKeys(t reflect.Type) string {
	fields := map[string]reflect.Type{}
	collectFields(t, fields)
	var names []string
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if opts == "inline" {
			for j := range t.Field(i).Type.NumField() {
				n, _, _ := strings.Cut(t.Field(i).Type.Field(j).Tag.Get("yaml"), ",")
				names = append(names, n)
			}
			continue
		}
		names = append(names, name)
	}
	return strings.Join(names, ", ")
}

// yamlError rewrites the yaml package's "line N: ..." into "FILE:N: ...".
func (f *configFile) yamlError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			msgs[i] = f.withLine(m)
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	return errors.New(f.withLine(strings.TrimPrefix(err.Error(), "yaml: ")))
}

func (f *configFile) withLine(msg string) string {
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if _, err := strconv.Atoi(num); err == nil {
				return f.path + ":" + num + ": " + tail
			}
		}
	}
	return f.path + ": " + msg
}

// locate prefixes each error about an entry with "FILE:LINE: ", the
// line of the entry in the file.
func (f *configFile) locate(err error) error {
	var parts []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	} else {
		parts = []error{err}
	}
	out := make([]string, 0, len(parts))
	for _, e := range parts {
		line := 1
		var ee *entryError
		if errors.As(e, &ee) {
			if n := f.entryNode(ee.section, ee.index); n != nil {
				line = n.Line
			}
		} else if n := f.entryNode("issuers", -1); n != nil {
			line = n.Line
		}
		for _, msg := range strings.Split(e.Error(), "\n") {
			out = append(out, fmt.Sprintf("%s:%d: %s", f.path, line, msg))
		}
	}
	return errors.New(strings.Join(out, "\n"))
}

// entryNode finds the node of section[index] (or of section itself, for
// index -1 or the default policy).
func (f *configFile) entryNode(section string, index int) *yaml.Node {
	for i := 0; i+1 < len(f.root.Content); i += 2 {
		if f.root.Content[i].Value != section {
			continue
		}
		v := f.root.Content[i+1]
		if index < 0 || section == "default" {
			return f.root.Content[i]
		}
		if v.Kind == yaml.SequenceNode && index < len(v.Content) {
			return v.Content[index]
		}
	}
	return nil
}

// watch re-reads the configuration file every ReloadInterval until ctx
// ends. Reading the path follows a Kubernetes ConfigMap's ..data symlink
// swap as well as an edit in place. A changed, valid file replaces the
// configuration; an invalid one is logged, counted, and refused, and the
// last good one stays. Each distinct content is tried once.
func (s *Server) watch(ctx context.Context, last *configFile) {
	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	seen := last.data
	var seenErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(last.path)
		if err != nil {
			if err.Error() != seenErr {
				seenErr = err.Error()
				s.metrics.configReloads.WithLabelValues("error").Inc()
				s.log.Error("configuration file unreadable; keeping the last good configuration", "file", last.path, "err", err)
			}
			continue
		}
		if bytes.Equal(data, seen) {
			continue
		}
		seen, seenErr = data, ""
		if err := s.reload(last.path, data); err != nil {
			s.metrics.configReloads.WithLabelValues("error").Inc()
			s.log.Error("configuration file refused; keeping the last good configuration", "file", last.path, "err", err)
			continue
		}
		s.metrics.configReloads.WithLabelValues("ok").Inc()
		s.log.Info("configuration file reloaded", "file", last.path, "issuers", len(s.state.Load().list), "routes", len(s.state.Load().routes))
	}
}

// reload parses data and, if it is valid, makes it the configuration.
func (s *Server) reload(path string, data []byte) error {
	f, err := parseConfigFile(path, data)
	if err != nil {
		return err
	}
	st, err := s.buildState(f.cfg, s.state.Load())
	if err != nil {
		return f.locate(err)
	}
	s.commit(st)
	return nil
}

// CheckConfigFile reports what New would refuse in the configuration
// file at path (holding data), with cfg's other settings, without
// starting anything: the same errors, "FILE:LINE: ..." included.
func CheckConfigFile(cfg Config, path string, data []byte) error {
	cfg, err := cfg.validate()
	if err != nil {
		return err
	}
	f, err := parseConfigFile(path, data)
	if err != nil {
		return err
	}
	s := &Server{cfg: cfg, log: slog.New(slog.DiscardHandler), programs: newCELPrograms()}
	if _, err := s.buildState(f.cfg, nil); err != nil {
		return f.locate(err)
	}
	return nil
}
