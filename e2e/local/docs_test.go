package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/internal/testenv"
	"github.com/tollgate-dev/tollgate/stack"
)

// repoRoot is the module's root, seen from this package.
const repoRoot = "../.."

// docPages are the pages whose shell examples TestDocs runs: the README
// and every page under docs/, including pages this test has never seen.
func docPages(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{filepath.Join(repoRoot, "README.md")}, pages...)
}

// pageName is how a page is reported: its path in the repository.
func pageName(path string) string {
	rel, err := filepath.Rel(repoRoot, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(rel)
}

// TestDocsBlocksCarryADecision fails on a shell block of any page that
// does not say whether the docs test runs it or why it cannot, so a new
// example never goes untested silently.
func TestDocsBlocksCarryADecision(t *testing.T) {
	for _, path := range docPages(t) {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, errs := parseBlocks(pageName(path), src)
		for _, err := range errs {
			t.Error(err)
		}
	}
}

// TestDocsTutorialFiles pins that the files the docs pages' sessions
// start with (testdata/user.json and book1.json) are the ones the
// README's tutorial writes with its heredocs.
func TestDocsTutorialFiles(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, _ := parseBlocks("README.md", src)
	var all strings.Builder
	for _, b := range blocks {
		if b.mode == modeRun {
			all.WriteString(strings.Join(b.body, "\n") + "\n")
		}
	}
	for _, name := range []string{"user.json", "book1.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		heredoc := "cat > " + name + " <<'EOF'\n" + strings.TrimSpace(string(data)) + "\nEOF\n"
		if !strings.Contains(all.String(), heredoc) {
			t.Errorf("README.md's tutorial does not write testdata/%s as it is; want a run block with\n%s", name, heredoc)
		}
	}
}

// TestDocs runs the shell examples of the README and of every page under
// docs/ with bash, one session per page against a fresh stack, the
// page's blocks in order (so TOKEN=$(...) carries over). A ```console
// block's "$ " lines are commands and the lines under each are what it
// must print, compared after normalize; a ```sh block must run to its
// end under set -euo pipefail (set -u only for run-allow-errors). The
// documented addresses are mapped to the stack's (docPorts), and each
// session runs in a directory of its own where data/ is the stack's data
// directory, as under `tollgate up`, and user.json and book1.json are
// the tutorial's (the README's session writes them itself).
func TestDocs(t *testing.T) {
	bash := testenv.LookPath(t, "bash", "apt-get install bash")
	testenv.LookPath(t, "curl", "apt-get install curl")
	testenv.LookPath(t, "jq", "apt-get install jq")
	grpcurl := sync.OnceValues(func() (string, error) { return buildGrpcurl(t) })
	tollgate := sync.OnceValues(func() (string, error) { return buildTollgate(t) })

	for _, path := range docPages(t) {
		page := pageName(path)
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blocks, errs := parseBlocks(page, src)
		var run []docBlock
		for _, b := range blocks {
			if b.mode == modeSkip {
				t.Logf("%s: not run: %s", b.where(), b.why)
				continue
			}
			run = append(run, b)
		}
		if len(run) == 0 && len(errs) == 0 {
			continue
		}
		t.Run(page, func(t *testing.T) {
			for _, err := range errs {
				t.Error(err)
			}
			if len(errs) > 0 {
				t.FailNow()
			}
			var tools []string
			if usesGrpcurl(run) {
				p, err := grpcurl()
				if err != nil {
					testenv.Missing(t, "grpcurl could not be built from tools/grpcurl: "+err.Error())
				}
				tools = append(tools, filepath.Dir(p))
			}
			var bin string
			if usesTollgate(run) {
				p, err := tollgate()
				if err != nil {
					t.Fatalf("go build ./cmd/tollgate: %v", err)
				}
				bin = filepath.Dir(p)
			}
			runPage(t, bash, page, run, tools, bin)
		})
	}
}

// docPorts are the ports the docs show, as `tollgate up` uses them by
// default, and which of the stack's addresses each stands for.
var docPorts = []struct {
	port string
	addr func(stack.Addrs) string
}{
	{"8080", func(a stack.Addrs) string { return a.Gateway }},
	{"9901", func(a stack.Addrs) string { return a.GatewayAdmin }},
	{"8081", func(a stack.Addrs) string { return a.Issuer }},
	{"8082", func(a stack.Addrs) string { return a.Books }},
	{"9001", func(a stack.Addrs) string { return a.AuthzGRPC }},
	{"9002", func(a stack.Addrs) string { return a.AuthzHTTP }},
}

// portMap maps the documented ports to the stack's and back, on
// localhost and 127.0.0.1 only.
type portMap struct {
	toStack map[string]string // "8080" -> "41234"
	toDoc   map[string]string
	docRe   *regexp.Regexp
	stackRe *regexp.Regexp
}

func newPortMap(t *testing.T, a stack.Addrs) portMap {
	t.Helper()
	m := portMap{toStack: map[string]string{}, toDoc: map[string]string{}}
	for _, p := range docPorts {
		_, port, err := splitPort(p.addr(a))
		if err != nil {
			t.Fatalf("stack address for :%s: %v", p.port, err)
		}
		m.toStack[p.port], m.toDoc[port] = port, p.port
	}
	m.docRe, m.stackRe = regexpFor(m.toStack), regexpFor(m.toDoc)
	return m
}

// regexpFor matches localhost or 127.0.0.1 with one of the ports that
// are keys of ports.
func regexpFor(ports map[string]string) *regexp.Regexp {
	keys := slices.Sorted(maps.Keys(ports))
	return regexp.MustCompile(`\b(localhost|127\.0\.0\.1):(` + strings.Join(keys, "|") + `)\b`)
}

func splitPort(addr string) (host, port string, err error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", "", fmt.Errorf("no port in %q", addr)
	}
	if _, err := strconv.Atoi(addr[i+1:]); err != nil {
		return "", "", fmt.Errorf("no port in %q", addr)
	}
	return addr[:i], addr[i+1:], nil
}

// command rewrites a documented command for the stack.
func (m portMap) command(s string) string {
	return m.docRe.ReplaceAllStringFunc(s, func(hp string) string {
		sub := m.docRe.FindStringSubmatch(hp)
		return sub[1] + ":" + m.toStack[sub[2]]
	})
}

// output rewrites what the stack printed back to the documented ports.
func (m portMap) output(s string) string {
	return m.stackRe.ReplaceAllStringFunc(s, func(hp string) string {
		sub := m.stackRe.FindStringSubmatch(hp)
		return sub[1] + ":" + m.toDoc[sub[2]]
	})
}

// step is one thing the session runs: a console command, or a whole sh
// block.
type step struct {
	block docBlock
	cmd   *command // nil for a sh block
}

func (s step) where() string {
	if s.cmd != nil {
		return fmt.Sprintf("%s:%d", s.block.page, s.cmd.line)
	}
	return s.block.where()
}

func (s step) String() string {
	if s.cmd != nil {
		return "$ " + s.cmd.text
	}
	return fmt.Sprintf("the ```%s block", s.block.lang)
}

// runPage starts a stack, runs the page's blocks in one bash session and
// checks every step.
func runPage(t *testing.T, bash, page string, blocks []docBlock, path []string, bin string) {
	dir := t.TempDir()
	// bin/ holds bin/tollgate, as in a checkout after make run.
	if bin != "" {
		if err := os.Symlink(bin, filepath.Join(dir, "bin")); err != nil {
			t.Fatal(err)
		}
	}
	if page != "README.md" {
		for _, name := range []string{"user.json", "book1.json"} {
			data, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := startStack(t, nil)
	// data/ is the stack's data directory, as under `tollgate up`.
	if err := os.Symlink(filepath.Dir(st.AdminPasswordFile()), filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	ports := newPortMap(t, st.Addrs())

	var steps []step
	for _, b := range blocks {
		if b.lang != "console" {
			steps = append(steps, step{block: b})
			continue
		}
		cmds, err := b.commands()
		if err != nil {
			t.Fatal(err)
		}
		for i := range cmds {
			steps = append(steps, step{block: b, cmd: &cmds[i]})
		}
	}

	nonce := make([]byte, 8)
	rand.Read(nonce)
	mark := "@@docs-test-" + hex.EncodeToString(nonce)
	var script strings.Builder
	for i, s := range steps {
		switch {
		case s.cmd != nil:
			script.WriteString("set +e -u -o pipefail\n" + ports.command(s.cmd.text) + "\n")
		case s.block.mode == modeRunAllowErrors:
			script.WriteString("set +e -u -o pipefail\n" + ports.command(strings.Join(s.block.body, "\n")) + "\n")
		default:
			script.WriteString("set -euo pipefail\n" + ports.command(strings.Join(s.block.body, "\n")) + "\n")
		}
		fmt.Fprintf(&script, "printf '\\n%s %d %%d@@\\n' \"$?\"\n", mark, i)
	}
	scriptFile := filepath.Join(t.TempDir(), "session.sh")
	if err := os.WriteFile(scriptFile, []byte(script.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "--noprofile", "--norc", scriptFile)
	cmd.Dir = dir
	// A clean environment: nothing the developer's shell exports (an
	// ADMIN_PASSWORD, a proxy) can make an example work that would not
	// work for a reader.
	cmd.Env = []string{
		"PATH=" + strings.Join(append(path, os.Getenv("PATH")), string(os.PathListSeparator)),
		"HOME=" + dir,
		"LANG=C.UTF-8",
	}
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()

	outputs := splitSession(out.String(), mark)
	var updates []docUpdate
	defer func() {
		if len(updates) > 0 {
			writeUpdates(t, page, updates)
		}
	}()
	want, got := newNormalizer(), newNormalizer()
	for i, s := range steps {
		res, ok := outputs[i]
		if !ok {
			// The session ended here: a failed command under set -e, an
			// unset variable, or the timeout.
			t.Fatalf("%s (%s) did not finish: bash: %v; the session printed:\n%s", s, s.where(), runErr, lastOutput(out.String(), mark))
		}
		if testing.Verbose() {
			// What a writer copies into the page after changing it.
			t.Logf("%s (%s), exit %d:\n%s", s, s.where(), res.status, ports.output(strings.ReplaceAll(res.out, "\r\n", "\n")))
		}
		if s.cmd == nil {
			if res.status != 0 {
				t.Errorf("%s (%s) exited %d; it printed:\n%s", s, s.where(), res.status, res.out)
			}
			continue
		}
		g := got.normalize(ports.output(strings.ReplaceAll(res.out, "\r\n", "\n")))
		w := want.normalize(s.cmd.want)
		if !matchOutput(w, g) {
			if *updateDocs {
				updates = append(updates, docUpdate{from: s.cmd.wantLine(), n: s.cmd.wantN, lines: strings.Split(strings.TrimRight(ports.output(strings.ReplaceAll(res.out, "\r\n", "\n")), "\n"), "\n")})
				continue
			}
			t.Errorf("%s (%s) printed:\n%s\nwant:\n%s\n(normalized, -want +got):\n%s", s, s.where(), res.out, s.cmd.want, cmp.Diff(w, g))
		}
	}
}

var updateDocs = flag.Bool("update-docs", false, "TestDocs: write what each console command printed into the page where it differs from what the page shows")

// docUpdate replaces n lines of a page, from line from (1-based), with
// lines.
type docUpdate struct {
	from, n int
	lines   []string
}

// writeUpdates rewrites page with updates, in page order.
func writeUpdates(t *testing.T, page string, updates []docUpdate) {
	path := filepath.Join(repoRoot, filepath.FromSlash(page))
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(src), "\n")
	for i := len(updates) - 1; i >= 0; i-- {
		u := updates[i]
		at := u.from - 1
		lines = append(lines[:at], append(append([]string{}, u.lines...), lines[at+u.n:]...)...)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: wrote the output of %d commands; check the diff", page, len(updates))
}

// result is what one step printed and its exit status.
type result struct {
	out    string
	status int
}

// splitSession splits the session's output at the marks the script
// prints after each step.
func splitSession(s, mark string) map[int]result {
	re := regexp.MustCompile(`\n` + regexp.QuoteMeta(mark) + ` (\d+) (\d+)@@\n`)
	res := map[int]result{}
	last := 0
	for _, m := range re.FindAllStringSubmatchIndex(s, -1) {
		i, _ := strconv.Atoi(s[m[2]:m[3]])
		status, _ := strconv.Atoi(s[m[4]:m[5]])
		res[i] = result{out: s[last:m[0]], status: status}
		last = m[1]
	}
	return res
}

// lastOutput is what the session printed after its last mark.
func lastOutput(s, mark string) string {
	if i := strings.LastIndex(s, mark); i >= 0 {
		s = s[i:]
		if j := strings.IndexByte(s, '\n'); j >= 0 {
			s = s[j+1:]
		}
	}
	return s
}

// usesGrpcurl reports whether a block to run calls grpcurl.
func usesGrpcurl(blocks []docBlock) bool {
	for _, b := range blocks {
		if strings.Contains(strings.Join(b.body, "\n"), "grpcurl ") {
			return true
		}
	}
	return false
}

// tollgateCommandRe matches a run of the tollgate binary in a shell line.
var tollgateCommandRe = regexp.MustCompile(`(^|[\s(;&|])bin/tollgate\s`)

// usesTollgate reports whether a block to run calls bin/tollgate (the
// tollgate dpop helper, say), which the session then finds where a
// reader who ran make run has it.
func usesTollgate(blocks []docBlock) bool {
	for _, b := range blocks {
		if tollgateCommandRe.MatchString(strings.Join(b.body, "\n")) {
			return true
		}
	}
	return false
}

// buildTollgate builds the tollgate binary for the docs sessions.
func buildTollgate(t *testing.T) (string, error) {
	bin := filepath.Join(t.TempDir(), "tollgate")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/tollgate")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	return bin, nil
}

// grpcurlPackage is grpcurl's main package; tools/grpcurl/go.mod pins
// its version outside the main module.
const grpcurlPackage = "github.com/fullstorydev/grpcurl/cmd/grpcurl"

// buildGrpcurl returns the grpcurl pinned in tools/grpcurl: the one
// .ci/run builds into tools/grpcurl/bin when it is newer than the pin,
// otherwise one built for this test.
func buildGrpcurl(t *testing.T) (string, error) {
	mod := filepath.Join(repoRoot, "tools", "grpcurl")
	if bin, err := filepath.Abs(filepath.Join(mod, "bin", "grpcurl")); err == nil {
		b, errB := os.Stat(bin)
		s, errS := os.Stat(filepath.Join(mod, "go.sum"))
		if errB == nil && errS == nil && b.ModTime().After(s.ModTime()) {
			return bin, nil
		}
	}
	bin := filepath.Join(t.TempDir(), "grpcurl")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, grpcurlPackage)
	cmd.Dir = mod
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	return bin, nil
}

// The normalization of outputs: what legitimately differs between the
// page and a run, and nothing else. Each rule replaces a whole token of a
// known shape, so a wrong status, message or field still differs.
var (
	// A JWT as the docs shorten it: the start, "…", the end.
	shortJWTRe = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*…[A-Za-z0-9_-]*`)
	// A compact JWS: three base64url parts.
	jwtRe  = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)
	uuidRe = regexp.MustCompile(`\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`)
	// An RFC 3339 time, as the services write created_at and updated_at.
	timeRe = regexp.MustCompile(`\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})`)
	// The Date header of an HTTP response (curl -i).
	dateRe = regexp.MustCompile(`(?m)^Date: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$`)
	// The gateway's measure of the upstream's time, in milliseconds.
	upstreamTimeRe = regexp.MustCompile(`(?m)^X-Envoy-Upstream-Service-Time: \d+$`)
)

// normalizer replaces what varies from run to run with placeholders. The
// same UUID gets the same placeholder throughout a page (<uuid1>,
// <uuid2>, ... in order of appearance), so a page that shows alain's id
// at registration and again in the user list must get the same id back
// both times.
type normalizer struct{ uuids map[string]string }

func newNormalizer() *normalizer { return &normalizer{uuids: map[string]string{}} }

func (n *normalizer) normalize(s string) string {
	s = shortJWTRe.ReplaceAllString(s, "<jwt>")
	s = jwtRe.ReplaceAllString(s, "<jwt>")
	s = uuidRe.ReplaceAllStringFunc(s, func(id string) string {
		p, ok := n.uuids[id]
		if !ok {
			p = fmt.Sprintf("<uuid%d>", len(n.uuids)+1)
			n.uuids[id] = p
		}
		return p
	})
	s = timeRe.ReplaceAllString(s, "<time>")
	s = dateRe.ReplaceAllString(s, "Date: <date>")
	s = upstreamTimeRe.ReplaceAllString(s, "X-Envoy-Upstream-Service-Time: <ms>")
	return strings.TrimRight(s, "\n")
}

// matchOutput reports whether got is what want shows. A "…" left in want
// (after the JWTs are replaced) stands for base64url text the page
// elides, such as a key id or a key's coordinates, and matches only that.
func matchOutput(want, got string) bool {
	if !strings.Contains(want, "…") {
		return want == got
	}
	parts := strings.Split(want, "…")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(`^` + strings.Join(parts, `[A-Za-z0-9_-]*`) + `$`).MatchString(got)
}
