// Package tiltcheck loads a Tiltfile without Tilt: it runs the file with
// a Starlark interpreter (go.starlark.net) whose Tilt builtins are stubs
// that check their arguments the way Tilt would (the real parameter names,
// so a misspelt keyword fails; file and directory arguments must exist),
// and records what the Tiltfile asked for so a test can cross-check it
// with the chart it deploys.
//
// It never builds an image, runs a command or talks to a cluster; helm()
// is delegated to the caller's renderer.
package tiltcheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// HelmFunc renders a chart as `helm template` would.
type HelmFunc func(chart, release, namespace string, values, set []string) (string, error)

// DockerBuild is one docker_build call.
type DockerBuild struct {
	Ref, Context, Dockerfile string
	Only                     []string
}

// Resource is one k8s_resource or local_resource call.
type Resource struct {
	Kind         string // "k8s" or "local"
	Name         string // the workload, or the new or local name
	ResourceDeps []string
	PortForwards []string
	Labels       []string
	Cmd          string
}

// Result is what a Tiltfile declared.
type Result struct {
	DockerBuilds []DockerBuild
	Resources    []Resource
	// YAML is every document passed to k8s_yaml.
	YAML []string
}

// blob is Tilt's Blob: a string of content (not a path).
type blob string

func (b blob) String() string        { return string(b) }
func (b blob) Type() string          { return "blob" }
func (b blob) Freeze()               {}
func (b blob) Truth() starlark.Bool  { return len(b) > 0 }
func (b blob) Hash() (uint32, error) { return starlark.String(b).Hash() }

// triggerMode is a TRIGGER_MODE_* constant.
type triggerMode string

func (t triggerMode) String() string        { return string(t) }
func (t triggerMode) Type() string          { return "TriggerMode" }
func (t triggerMode) Freeze()               {}
func (t triggerMode) Truth() starlark.Bool  { return true }
func (t triggerMode) Hash() (uint32, error) { return starlark.String(t).Hash() }

type loader struct {
	root   string
	helm   HelmFunc
	result Result
	errs   []error
}

// Load runs the Tiltfile at path (its directory is the root that relative
// paths resolve against) and returns what it declared. Every problem a
// stub finds is returned, not only the first.
func Load(path string, helm HelmFunc) (*Result, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return LoadSource(filepath.Dir(path), filepath.Base(path), src, helm)
}

// LoadSource is Load for a Tiltfile's text src, as if it were the file
// name in directory root.
func LoadSource(root, name string, src []byte, helm HelmFunc) (*Result, error) {
	path := filepath.Join(root, name)
	l := &loader{root: root, helm: helm}
	thread := &starlark.Thread{
		Name:  "tiltfile",
		Print: func(*starlark.Thread, string) {},
		Load: func(_ *starlark.Thread, module string) (starlark.StringDict, error) {
			return nil, fmt.Errorf("load(%q): this checker stubs no Tilt extensions or other Tiltfiles", module)
		},
	}
	// The dialect Tilt accepts: top-level if/for, sets, while, recursion.
	opts := &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, GlobalReassign: true, Recursion: true}
	if _, err := starlark.ExecFileOptions(opts, thread, path, src, l.builtins()); err != nil {
		return nil, err
	}
	l.crossCheck()
	return &l.result, errors.Join(l.errs...)
}

func (l *loader) errorf(format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf(format, args...))
}

// exists checks that a path relative to the Tiltfile exists.
func (l *loader) exists(fn, what, path string, dir bool) bool {
	fi, err := os.Stat(filepath.Join(l.root, path))
	switch {
	case err != nil:
		l.errorf("%s: %s %q does not exist", fn, what, path)
		return false
	case dir && !fi.IsDir():
		l.errorf("%s: %s %q is not a directory", fn, what, path)
		return false
	}
	return true
}

// strs accepts a string or a list of strings, as Tilt's Union[str, List[str]].
func strs(fn, param string, v starlark.Value) ([]string, error) {
	switch v := v.(type) {
	case nil, starlark.NoneType:
		return nil, nil
	case starlark.String:
		return []string{string(v)}, nil
	case *starlark.List:
		var out []string
		for i := range v.Len() {
			s, ok := starlark.AsString(v.Index(i))
			if !ok {
				return nil, fmt.Errorf("%s: %s[%d] is %s, want a string", fn, param, i, v.Index(i).Type())
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: %s is %s, want a string or a list of strings", fn, param, v.Type())
}

type builtinFunc func(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error)

func (l *loader) builtins() starlark.StringDict {
	d := starlark.StringDict{
		"TRIGGER_MODE_AUTO":   triggerMode("TRIGGER_MODE_AUTO"),
		"TRIGGER_MODE_MANUAL": triggerMode("TRIGGER_MODE_MANUAL"),
	}
	add := func(name string, f builtinFunc) {
		d[name] = starlark.NewBuiltin(name, func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			return f(b.Name(), args, kwargs)
		})
	}
	add("docker_build", l.dockerBuild)
	add("helm", l.helmTemplate)
	add("k8s_yaml", l.k8sYAML)
	add("k8s_resource", l.k8sResource)
	add("local_resource", l.localResource)
	add("filter_yaml", l.filterYAML)
	add("blob", func(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var contents string
		if err := starlark.UnpackArgs(fn, args, kwargs, "contents", &contents); err != nil {
			return nil, err
		}
		return blob(contents), nil
	})
	add("read_file", func(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var path string
		var def starlark.Value = starlark.None
		if err := starlark.UnpackArgs(fn, args, kwargs, "file_path", &path, "default?", &def); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(filepath.Join(l.root, path))
		if err != nil {
			if def != starlark.None {
				return blob(def.String()), nil
			}
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		return blob(data), nil
	})
	add("watch_file", func(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var path string
		if err := starlark.UnpackArgs(fn, args, kwargs, "file_path", &path); err != nil {
			return nil, err
		}
		l.exists(fn, "file_path", path, false)
		return starlark.None, nil
	})
	add("allow_k8s_contexts", func(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var contexts starlark.Value
		if err := starlark.UnpackArgs(fn, args, kwargs, "contexts", &contexts); err != nil {
			return nil, err
		}
		_, err := strs(fn, "contexts", contexts)
		return starlark.None, err
	})
	add("k8s_context", func(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		if err := starlark.UnpackArgs(fn, args, kwargs); err != nil {
			return nil, err
		}
		return starlark.String("kind-tollgate"), nil
	})
	return d
}

func (l *loader) dockerBuild(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var ref, context string
	dockerfile := "Dockerfile"
	var buildArgs *starlark.Dict
	var dockerfileContents, liveUpdate, ignore, only, entrypoint, ssh, secret, extraTag, containerArgs, cacheFrom, extraHosts starlark.Value
	var matchInEnv, pull bool
	var target, network, platform string
	if err := starlark.UnpackArgs(fn, args, kwargs,
		"ref", &ref, "context", &context, "build_args?", &buildArgs, "dockerfile?", &dockerfile,
		"dockerfile_contents?", &dockerfileContents, "live_update?", &liveUpdate, "match_in_env_vars?", &matchInEnv,
		"ignore?", &ignore, "only?", &only, "entrypoint?", &entrypoint, "target?", &target, "ssh?", &ssh,
		"network?", &network, "secret?", &secret, "extra_tag?", &extraTag, "container_args?", &containerArgs,
		"cache_from?", &cacheFrom, "pull?", &pull, "platform?", &platform, "extra_hosts?", &extraHosts,
	); err != nil {
		return nil, err
	}
	l.exists(fn, "context", context, true)
	l.exists(fn, "dockerfile", dockerfile, false)
	onlyPaths, err := strs(fn, "only", only)
	if err != nil {
		return nil, err
	}
	l.result.DockerBuilds = append(l.result.DockerBuilds, DockerBuild{Ref: ref, Context: context, Dockerfile: dockerfile, Only: onlyPaths})
	return starlark.None, nil
}

func (l *loader) helmTemplate(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var chart, name, namespace, kubeVersion string
	var values, set starlark.Value
	var skipCRDs bool
	if err := starlark.UnpackArgs(fn, args, kwargs, "pathToChartDir", &chart, "name?", &name, "namespace?", &namespace,
		"values?", &values, "set?", &set, "kube_version?", &kubeVersion, "skip_crds?", &skipCRDs); err != nil {
		return nil, err
	}
	ok := l.exists(fn, "chart", filepath.Join(chart, "Chart.yaml"), false)
	vs, err := strs(fn, "values", values)
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		ok = l.exists(fn, "values file", v, false) && ok
	}
	if !ok {
		// Rendering would only repeat the error; go on with no objects.
		return blob(""), nil
	}
	ss, err := strs(fn, "set", set)
	if err != nil {
		return nil, err
	}
	if l.helm == nil {
		return nil, fmt.Errorf("%s: no renderer", fn)
	}
	var abs []string
	for _, v := range vs {
		abs = append(abs, filepath.Join(l.root, v))
	}
	out, err := l.helm(filepath.Join(l.root, chart), name, namespace, abs, ss)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	return blob(out), nil
}

// yamlDocs returns the YAML documents of a k8s_yaml/filter_yaml argument:
// a Blob, or paths to files.
func (l *loader) yamlDocs(fn string, v starlark.Value) ([]string, error) {
	var text string
	if b, ok := v.(blob); ok {
		text = string(b)
	} else {
		paths, err := strs(fn, "yaml", v)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			data, err := os.ReadFile(filepath.Join(l.root, p))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", fn, err)
			}
			text += "\n---\n" + string(data)
		}
	}
	r := kyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(text)))
	var docs []string
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		if len(m) > 0 {
			docs = append(docs, string(bytes.TrimSpace(doc)))
		}
	}
}

func (l *loader) k8sYAML(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var y starlark.Value
	var allowDuplicates bool
	if err := starlark.UnpackArgs(fn, args, kwargs, "yaml", &y, "allow_duplicates?", &allowDuplicates); err != nil {
		return nil, err
	}
	docs, err := l.yamlDocs(fn, y)
	if err != nil {
		return nil, err
	}
	l.result.YAML = append(l.result.YAML, docs...)
	return starlark.None, nil
}

// object is the part of a manifest filter_yaml and the cross-checks read.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Template struct {
			Spec struct {
				Containers     []struct{ Image string } `json:"containers"`
				InitContainers []struct{ Image string } `json:"initContainers"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

func (l *loader) filterYAML(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var y starlark.Value
	var labels *starlark.Dict
	var name, namespace, kind, apiVersion string
	if err := starlark.UnpackArgs(fn, args, kwargs, "yaml", &y, "labels?", &labels, "name?", &name,
		"namespace?", &namespace, "kind?", &kind, "api_version?", &apiVersion); err != nil {
		return nil, err
	}
	docs, err := l.yamlDocs(fn, y)
	if err != nil {
		return nil, err
	}
	want := map[string]string{}
	if labels != nil {
		for _, k := range labels.Keys() {
			v, _, _ := labels.Get(k)
			ks, ok1 := starlark.AsString(k)
			vs, ok2 := starlark.AsString(v)
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("%s: labels must map strings to strings", fn)
			}
			want[ks] = vs
		}
	}
	match := func(pattern, s string) (bool, error) {
		if pattern == "" {
			return true, nil
		}
		return regexp.MatchString("(?i)"+pattern, s)
	}
	var in, out []string
	for _, doc := range docs {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		ok := true
		for k, v := range want {
			ok = ok && o.Metadata.Labels[k] == v
		}
		for _, c := range [][2]string{{name, o.Metadata.Name}, {namespace, o.Metadata.Namespace}, {kind, o.Kind}, {apiVersion, o.APIVersion}} {
			m, err := match(c[0], c[1])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", fn, err)
			}
			ok = ok && m
		}
		if ok {
			in = append(in, doc)
		} else {
			out = append(out, doc)
		}
	}
	return starlark.Tuple{blob(strings.Join(in, "\n---\n")), blob(strings.Join(out, "\n---\n"))}, nil
}

func (l *loader) k8sResource(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var workload, newName, podReadiness, discovery string
	var portForwards, extraPodSelectors, resourceDeps, objects, links, labels starlark.Value
	var trigger starlark.Value
	autoInit := true
	if err := starlark.UnpackArgs(fn, args, kwargs, "workload?", &workload, "new_name?", &newName,
		"port_forwards?", &portForwards, "extra_pod_selectors?", &extraPodSelectors, "trigger_mode?", &trigger,
		"resource_deps?", &resourceDeps, "objects?", &objects, "auto_init?", &autoInit, "pod_readiness?", &podReadiness,
		"links?", &links, "labels?", &labels, "discovery_strategy?", &discovery); err != nil {
		return nil, err
	}
	if err := checkTrigger(fn, trigger); err != nil {
		return nil, err
	}
	r := Resource{Kind: "k8s", Name: workload}
	if workload == "" {
		if newName == "" {
			return nil, fmt.Errorf("%s: needs workload, or new_name with objects", fn)
		}
		r.Name = newName
	}
	var err error
	if r.ResourceDeps, err = strs(fn, "resource_deps", resourceDeps); err != nil {
		return nil, err
	}
	if r.Labels, err = strs(fn, "labels", labels); err != nil {
		return nil, err
	}
	if r.PortForwards, err = strs(fn, "port_forwards", portForwards); err != nil {
		return nil, err
	}
	for _, pf := range r.PortForwards {
		if !regexp.MustCompile(`^([a-z0-9.-]+:)?[0-9]{1,5}(:[0-9]{1,5})?$`).MatchString(pf) {
			return nil, fmt.Errorf("%s: port_forwards %q is not PORT, LOCAL:REMOTE or HOST:LOCAL:REMOTE", fn, pf)
		}
	}
	l.result.Resources = append(l.result.Resources, r)
	return starlark.None, nil
}

func checkTrigger(fn string, v starlark.Value) error {
	if v == nil || v == starlark.None {
		return nil
	}
	if _, ok := v.(triggerMode); !ok {
		return fmt.Errorf("%s: trigger_mode is %s, want TRIGGER_MODE_AUTO or TRIGGER_MODE_MANUAL", fn, v.Type())
	}
	return nil
}

func (l *loader) localResource(fn string, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name, dir, serveDir string
	var cmd, deps, trigger, resourceDeps, ignore, serveCmd, cmdBat, serveCmdBat, links, labels, readiness starlark.Value
	var env, serveEnv *starlark.Dict
	autoInit := true
	var allowParallel bool
	if err := starlark.UnpackArgs(fn, args, kwargs, "name", &name, "cmd", &cmd, "deps?", &deps,
		"trigger_mode?", &trigger, "resource_deps?", &resourceDeps, "ignore?", &ignore, "auto_init?", &autoInit,
		"serve_cmd?", &serveCmd, "cmd_bat?", &cmdBat, "serve_cmd_bat?", &serveCmdBat, "allow_parallel?", &allowParallel,
		"links?", &links, "labels?", &labels, "env?", &env, "serve_env?", &serveEnv, "readiness_probe?", &readiness,
		"dir?", &dir, "serve_dir?", &serveDir); err != nil {
		return nil, err
	}
	if err := checkTrigger(fn, trigger); err != nil {
		return nil, err
	}
	r := Resource{Kind: "local", Name: name}
	var err error
	depPaths, err := strs(fn, "deps", deps)
	if err != nil {
		return nil, err
	}
	for _, d := range depPaths {
		l.exists(fn+" "+name, "deps entry", d, false)
	}
	if dir != "" {
		l.exists(fn+" "+name, "dir", dir, true)
	}
	if r.ResourceDeps, err = strs(fn, "resource_deps", resourceDeps); err != nil {
		return nil, err
	}
	if r.Labels, err = strs(fn, "labels", labels); err != nil {
		return nil, err
	}
	c, err := strs(fn, "cmd", cmd)
	if err != nil {
		return nil, err
	}
	r.Cmd = strings.Join(c, " ")
	l.checkCmdPaths(fn+" "+name, filepath.Join(l.root, dir), r.Cmd)
	l.result.Resources = append(l.result.Resources, r)
	return starlark.None, nil
}

// checkCmdPaths checks the paths a shell command names that must exist
// before it runs: `cd DIR` targets, and scripts and YAML it passes on,
// each relative to the directory the command is in at that point.
func (l *loader) checkCmdPaths(fn, dir, cmd string) {
	fields := strings.Fields(cmd)
	for i, f := range fields {
		f = strings.Trim(f, `"'`)
		switch {
		case f == "cd" && i+1 < len(fields):
			next := strings.Trim(fields[i+1], `"';&`)
			dir = filepath.Join(dir, next)
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				l.errorf("%s: cmd changes to %q, which is not a directory", fn, next)
			}
		case strings.HasSuffix(f, ".sh") || strings.HasSuffix(f, ".yaml"):
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				l.errorf("%s: cmd uses %q, which does not exist", fn, f)
			}
		case strings.HasPrefix(f, "./") && i > 0 && (fields[i-1] == "run" || fields[i-1] == "build" || strings.HasPrefix(fields[i-1], "-")):
			// a Go package: go run ./x, go build -o out ./x
			if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || !fi.IsDir() {
				l.errorf("%s: cmd builds %q, which is not a directory", fn, f)
			}
		}
	}
}

// crossCheck compares the declarations with each other and with the
// manifests given to k8s_yaml.
func (l *loader) crossCheck() {
	workloads := map[string]bool{}
	var images []string
	for _, doc := range l.result.YAML {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			l.errorf("k8s_yaml: %v", err)
			continue
		}
		switch o.Kind {
		case "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet":
			workloads[o.Metadata.Name] = true
		}
		for _, c := range append(o.Spec.Template.Spec.Containers, o.Spec.Template.Spec.InitContainers...) {
			images = append(images, c.Image)
		}
	}
	known := map[string]bool{}
	for w := range workloads {
		known[w] = true
	}
	for _, r := range l.result.Resources {
		known[r.Name] = true
		if r.Kind == "k8s" && !workloads[r.Name] {
			l.errorf("k8s_resource(%q): no such workload in the YAML given to k8s_yaml (have %v)", r.Name, sortedKeys(workloads))
		}
	}
	for _, r := range l.result.Resources {
		for _, d := range r.ResourceDeps {
			if !known[d] {
				l.errorf("%s resource %q: resource_deps names %q, which is not a resource", r.Kind, r.Name, d)
			}
		}
	}
	for _, b := range l.result.DockerBuilds {
		if !slices.ContainsFunc(images, func(img string) bool {
			return img == b.Ref || strings.HasPrefix(img, b.Ref+":") || strings.HasPrefix(img, b.Ref+"@")
		}) {
			l.errorf("docker_build(%q): no container in the YAML uses this image (images: %v)", b.Ref, images)
		}
		for _, o := range b.Only {
			if _, err := os.Stat(filepath.Join(l.root, b.Context, o)); err == nil {
				continue
			}
			if !slices.ContainsFunc(l.result.Resources, func(r Resource) bool { return r.Kind == "local" && strings.Contains(r.Cmd, o) }) {
				l.errorf("docker_build(%q): only entry %q does not exist and no local_resource builds it", b.Ref, o)
			}
		}
		l.checkCopies(b)
	}
}

// checkCopies checks that every file the Dockerfile COPYs from the build
// context is inside docker_build's `only` (else it is not in the context).
func (l *loader) checkCopies(b DockerBuild) {
	if len(b.Only) == 0 {
		return
	}
	data, err := os.ReadFile(filepath.Join(l.root, b.Dockerfile))
	if err != nil {
		return // reported by docker_build
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.EqualFold(f[0], "COPY") || strings.HasPrefix(f[1], "--from") {
			continue
		}
		for _, src := range f[1 : len(f)-1] {
			if strings.HasPrefix(src, "--") {
				continue
			}
			if !slices.ContainsFunc(b.Only, func(o string) bool { return src == o || strings.HasPrefix(src, strings.TrimSuffix(o, "/")+"/") }) {
				l.errorf("docker_build(%q): %s copies %q, which `only` leaves out of the build context", b.Ref, b.Dockerfile, src)
			}
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
