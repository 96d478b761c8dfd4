// Package imagecheck checks the image build offline: that .dockerignore
// keeps every file `go build ./cmd/tollgate` and the Dockerfile need in
// the build context, and that the Dockerfiles build what the docs
// promises (pinned bases, a static stamped binary, a non-root distroless
// final stage). No container engine is needed.
package imagecheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// Instruction is one Dockerfile instruction: its upper-cased keyword and
// its arguments, with line continuations joined.
type Instruction struct {
	Keyword string
	Args    string
}

// Instructions splits a Dockerfile into instructions. Comments, parser
// directives and blank lines are dropped.
func Instructions(dockerfile string) []Instruction {
	var out []Instruction
	var cur strings.Builder
	for line := range strings.SplitSeq(dockerfile, "\n") {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if strings.HasPrefix(t, "#") {
			continue // a comment inside a continued instruction
		}
		if s, ok := strings.CutSuffix(t, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(t)
		kw, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, Instruction{Keyword: strings.ToUpper(kw), Args: strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

// Excluded returns the files (slash-separated, relative to the context)
// that the .dockerignore patterns leave out of the build context.
func Excluded(dockerignore []byte, files []string) ([]string, error) {
	patterns, err := ignorefile.ReadAll(bytes.NewReader(dockerignore))
	if err != nil {
		return nil, fmt.Errorf("read .dockerignore: %w", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	var out []string
	for _, f := range files {
		ok, err := pm.MatchesOrParentMatches(filepath.FromSlash(f))
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, f)
		}
	}
	return out, nil
}

// BuildInputs lists the files of the repository at repo that building
// pkg needs: go.mod, go.sum, and the Go and embedded files of every
// package of the main module it depends on (as `go list -deps` says).
func BuildInputs(repo, pkg string) ([]string, error) {
	cmd := exec.Command("go", "list", "-deps", "-json=Dir,Module,GoFiles,EmbedFiles", pkg)
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps %s: %w", pkg, err)
	}
	files := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct {
			Dir    string
			Module *struct {
				Main bool
			}
			GoFiles, EmbedFiles []string
		}
		if err := dec.Decode(&p); err != nil {
			return nil, err
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		rel, err := filepath.Rel(repo, p.Dir)
		if err != nil {
			return nil, err
		}
		for _, f := range append(p.GoFiles, p.EmbedFiles...) {
			files = append(files, filepath.ToSlash(filepath.Join(rel, f)))
		}
	}
	return files, nil
}

// CopySources returns the build-context sources of a Dockerfile's COPY
// and ADD instructions (those without --from).
func CopySources(ins []Instruction) []string {
	var out []string
	for _, in := range ins {
		if in.Keyword != "COPY" && in.Keyword != "ADD" {
			continue
		}
		f := strings.Fields(in.Args)
		var srcs []string
		from := false
		for _, a := range f {
			if strings.HasPrefix(a, "--") {
				from = from || strings.HasPrefix(a, "--from")
				continue
			}
			srcs = append(srcs, a)
		}
		if from || len(srcs) < 2 {
			continue
		}
		out = append(out, srcs[:len(srcs)-1]...)
	}
	return out
}

// exists reports whether path exists under repo.
func exists(repo, path string) bool {
	_, err := os.Stat(filepath.Join(repo, path))
	return err == nil
}
