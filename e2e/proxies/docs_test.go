package proxies

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

const proxiesPage = "docs/proxies.md"

// block is one fenced code block of a Markdown page, with the HTML
// comment in the lines just before its opening fence (other than the docs
// test's decision), if any.
type block struct {
	lang, marker, text string
	line               int
}

var markerRE = regexp.MustCompile(`^<!-- (.*) -->$`)

// fencedBlocks returns the page's fenced code blocks in order.
func fencedBlocks(t *testing.T, page string) []block {
	t.Helper()
	data, err := os.ReadFile(repoFile(page))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []block
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		lang, ok := strings.CutPrefix(lines[i], "```")
		if !ok {
			continue
		}
		b := block{lang: lang, line: i + 1}
		// The comments right above the fence; the docs test's own
		// <!-- docs-test: ... --> decision may stand among them.
		for k := i - 1; k >= 0; k-- {
			m := markerRE.FindStringSubmatch(lines[k])
			if m == nil {
				break
			}
			if !strings.HasPrefix(m[1], "docs-test:") {
				b.marker = m[1]
			}
		}
		j := i + 1
		for j < len(lines) && lines[j] != "```" {
			j++
		}
		if j == len(lines) {
			t.Fatalf("%s:%d: fenced block never closed", page, i+1)
		}
		b.text = strings.Join(lines[i+1:j], "\n")
		blocks = append(blocks, b)
		i = j
	}
	return blocks
}

// TestProxiesPageShowsTheExampleFiles holds every configuration block of
// docs/proxies.md identical to the file its marker names, and every
// example file shown, so the page cannot show a configuration the tests
// do not run.
func TestProxiesPageShowsTheExampleFiles(t *testing.T) {
	configLangs := map[string]bool{"nginx": true, "caddyfile": true, "yaml": true}
	shown := map[string]bool{}
	for _, b := range fencedBlocks(t, proxiesPage) {
		file, ok := strings.CutPrefix(b.marker, "file: ")
		if !ok {
			if configLangs[b.lang] {
				t.Errorf("%s:%d: a ```%s block without a <!-- file: PATH --> marker; show example files only", proxiesPage, b.line, b.lang)
			}
			continue
		}
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(repoFile(file))
			if err != nil {
				t.Fatalf("%s:%d: %v", proxiesPage, b.line, err)
			}
			if diff := cmp.Diff(strings.TrimSuffix(string(data), "\n"), b.text); diff != "" {
				t.Errorf("%s:%d: the block differs from %s (-file +page):\n%s", proxiesPage, b.line, file, diff)
			}
		})
		shown[file] = true
	}
	for _, dir := range []string{"nginx", "caddy", "traefik"} {
		entries, err := os.ReadDir(repoFile("examples", dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if f := "examples/" + dir + "/" + e.Name(); !shown[f] {
				t.Errorf("%s does not show %s", proxiesPage, f)
			}
		}
	}
}

// step is one command of a console session and the output it shows.
type step struct{ cmd, want string }

// session returns the steps of the page's session block.
func session(t *testing.T) []step {
	t.Helper()
	for _, b := range fencedBlocks(t, proxiesPage) {
		if !strings.HasPrefix(b.marker, "session:") {
			continue
		}
		var steps []step
		for _, l := range strings.Split(b.text, "\n") {
			if cmd, ok := strings.CutPrefix(l, "$ "); ok {
				steps = append(steps, step{cmd: cmd})
			} else if len(steps) > 0 {
				steps[len(steps)-1].want += l + "\n"
			} else {
				t.Fatalf("%s:%d: session output before any command", proxiesPage, b.line)
			}
		}
		return steps
	}
	t.Fatalf("%s has no <!-- session: ... --> block", proxiesPage)
	return nil
}

// runSession runs the page's session through the proxy at base with
// bash, curl and jq, in a directory whose data/admin-password holds the
// stack's admin password as `tollgate up` leaves it, and checks each
// command's output. Only the PROXY line's address differs from the page.
func runSession(t *testing.T, proxy, base string, e *env) {
	t.Helper()
	bash := testenv.LookPath(t, "bash", "apt-get install bash")
	testenv.LookPath(t, "curl", "apt-get install curl")
	testenv.LookPath(t, "jq", "apt-get install jq")
	steps := session(t)
	const proxyLine = "PROXY=http://localhost:8090"
	if len(steps) == 0 || steps[0].cmd != proxyLine {
		t.Fatalf("%s: the session must start with %q", proxiesPage, proxyLine)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data", "admin-password"), []byte(e.adminPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("PROXY=" + base + "\n")
	for i, s := range steps[1:] {
		script.WriteString("echo '@@@ " + strconv.Itoa(i+1) + "'\n" + s.cmd + "\n")
	}
	cmd := exec.CommandContext(t.Context(), bash, "--noprofile", "--norc", "-c", script.String())
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("session via %s: %v\n%s", proxy, err, out)
	}
	got := strings.Split(string(out), "@@@ ")
	if len(got) != len(steps) {
		t.Fatalf("session via %s printed %d sections, want %d:\n%s", proxy, len(got)-1, len(steps)-1, out)
	}
	for i, s := range steps[1:] {
		_, output, _ := strings.Cut(got[i+1], "\n")
		if output != s.want {
			t.Errorf("session via %s: $ %s\n printed %q, want %q (as %s shows)", proxy, s.cmd, output, s.want, proxiesPage)
		}
	}
}
