package local

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// docCommand is one "$ " line of a console block and the output shown
// under it.
type docCommand struct {
	line   int
	cmd    string
	output string
}

// consoleCommands returns the commands of the ```console blocks of a
// Markdown page, in order.
func consoleCommands(t *testing.T, path string) []docCommand {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out    []docCommand
		in     bool
		output []string
	)
	flush := func() {
		if len(out) > 0 && output != nil {
			out[len(out)-1].output = strings.Join(output, "\n")
		}
		output = nil
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case line == "```console":
			in = true
		case in && line == "```":
			flush()
			in = false
		case in && strings.HasPrefix(line, "$ "):
			flush()
			out = append(out, docCommand{line: n, cmd: strings.TrimPrefix(line, "$ ")})
			output = []string{}
		case in:
			output = append(output, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Values that differ from run to run.
var volatile = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`), "<jwt>"},
	{regexp.MustCompile(`"refresh_token":"[A-Za-z0-9_-]+"`), `"refresh_token":"<refresh>"`},
	{regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`), "<uuid>"},
}

func normalize(s string) string {
	for _, v := range volatile {
		s = v.re.ReplaceAllString(s, v.with)
	}
	return strings.TrimSpace(s)
}

// TestSessionsDocWalkthrough runs the console commands of
// docs/sessions.md with bash and curl, in order, in one shell, against a
// fresh stack (only the gateway's address differs), and compares each
// output with the page's. TOLLGATE_DOC_PRINT=1 prints what ran instead
// of comparing, to refresh the page.
func TestSessionsDocWalkthrough(t *testing.T) {
	testenv.LookPath(t, "curl", "apt-get install curl")
	bash := testenv.LookPath(t, "bash", "apt-get install bash")
	cmds := consoleCommands(t, filepath.Join("..", "..", "docs", "sessions.md"))
	if len(cmds) < 20 {
		t.Fatalf("docs/sessions.md has %d console commands, want the whole walkthrough", len(cmds))
	}
	st := startStack(t, nil)
	host := strings.TrimPrefix(st.GatewayURL(), "http://")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	pw, err := os.ReadFile(st.AdminPasswordFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data", "admin-password"), pw, 0o600); err != nil {
		t.Fatal(err)
	}
	const mark = "@@tollgate-doc-command@@"
	var script strings.Builder
	script.WriteString("set -u\n")
	for i, c := range cmds {
		fmt.Fprintf(&script, "printf '\\n%s %d\\n'\n%s\n", mark, i, strings.ReplaceAll(c.cmd, "localhost:8080", host))
	}
	cmd := exec.CommandContext(t.Context(), bash, "-c", script.String())
	cmd.Dir = dir
	raw, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, raw)
	}
	outputs := strings.Split(string(raw), "\n"+mark+" ")
	if len(outputs) != len(cmds)+1 {
		t.Fatalf("ran %d commands, got %d outputs:\n%s", len(cmds), len(outputs)-1, raw)
	}
	for i, c := range cmds {
		got := outputs[i+1]
		got = got[strings.IndexByte(got, '\n')+1:] // drop the index
		if os.Getenv("TOLLGATE_DOC_PRINT") == "1" {
			t.Logf("$ %s\n%s", c.cmd, strings.TrimRight(got, "\n"))
			continue
		}
		if normalize(got) != normalize(c.output) {
			t.Errorf("docs/sessions.md:%d: %s\nprinted:\n%s\nthe page shows:\n%s", c.line, c.cmd, strings.TrimSpace(got), c.output)
		}
	}
}
