package local

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// The docs' shell examples and what the docs test does with each. Every
// shell block (```sh, ```console, ```bash, ```shell, ```zsh) must say,
// in an HTML comment on the last non-blank line before its fence, what
// the test does with it:
//
//	<!-- docs-test: run -->                   run it (sh: under set -euo pipefail; console: compare each command's output)
//	<!-- docs-test: run-allow-errors -->      sh only: run it under set -u only, for a block that shows a failing command
//	<!-- docs-test: skip (why it cannot run here) -->
//
// A block without a decision fails the test, so no example goes untested
// without saying why.

// shellLangs are the fence languages that hold shell examples.
var shellLangs = map[string]bool{"sh": true, "console": true, "bash": true, "shell": true, "zsh": true}

// mode is what the test does with a block.
type mode int

const (
	modeRun mode = iota + 1
	modeRunAllowErrors
	modeSkip
)

// docBlock is one fenced shell block of a page.
type docBlock struct {
	page string // the page's path, as reported, e.g. docs/books.md
	line int    // line of the opening fence (1-based)
	lang string
	mode mode
	why  string   // the skip reason
	body []string // the lines between the fences
}

func (b docBlock) where() string { return fmt.Sprintf("%s:%d", b.page, b.line) }

var (
	fenceRe  = regexp.MustCompile("^(```+|~~~+)\\s*([A-Za-z0-9_+-]*)")
	markerRe = regexp.MustCompile(`^<!--\s*docs-test:\s*(.*?)\s*-->$`)
	skipRe   = regexp.MustCompile(`^skip\s*\((.*\S.*)\)$`)
)

// markerHelp is what a failure about a marker tells the writer to do.
const markerHelp = "put <!-- docs-test: run -->, <!-- docs-test: run-allow-errors --> (sh only) " +
	"or <!-- docs-test: skip (the reason) --> on the line before the block's fence; see docs/development.md"

// parseBlocks returns the shell blocks of a Markdown page. It fails on a
// shell block without a valid decision, and on an unlabelled block whose
// lines look like a terminal session ("$ " prompts), which the test would
// otherwise never see.
func parseBlocks(page string, src []byte) ([]docBlock, []error) {
	var (
		blocks   []docBlock
		errs     []error
		lastText string    // the last non-blank line outside a block
		cur      *docBlock // the shell block being read
		other    bool      // inside a block of another language
		otherAt  int       // where that block starts
		otherLng string
		prompts  bool // that block has "$ " lines
		fence    string
	)
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if cur != nil || other {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				if cur != nil {
					blocks = append(blocks, *cur)
				} else if prompts && otherLng == "" {
					errs = append(errs, fmt.Errorf("%s:%d: an unlabelled block shows \"$ \" commands: make it a ```console block and %s", page, otherAt, markerHelp))
				}
				cur, other, prompts, lastText = nil, false, false, ""
				continue
			}
			if cur != nil {
				cur.body = append(cur.body, line)
			} else if strings.HasPrefix(line, "$ ") {
				prompts = true
			}
			continue
		}
		m := fenceRe.FindStringSubmatch(trimmed)
		if m == nil {
			if trimmed != "" {
				lastText = trimmed
			}
			continue
		}
		fence = m[1]
		lang := strings.ToLower(m[2])
		if !shellLangs[lang] {
			other, otherAt, otherLng = true, n, lang
			continue
		}
		b := docBlock{page: page, line: n, lang: lang}
		mk := markerRe.FindStringSubmatch(lastText)
		switch {
		case mk == nil:
			errs = append(errs, fmt.Errorf("%s:%d: ```%s block has no docs-test decision: %s", page, n, lang, markerHelp))
		case mk[1] == "run":
			b.mode = modeRun
		case mk[1] == "run-allow-errors" && lang != "console":
			b.mode = modeRunAllowErrors
		case skipRe.MatchString(mk[1]):
			b.mode, b.why = modeSkip, skipRe.FindStringSubmatch(mk[1])[1]
		default:
			errs = append(errs, fmt.Errorf("%s:%d: ```%s block has the decision %q, which the docs test does not know: %s", page, n, lang, mk[1], markerHelp))
		}
		cur = &b
	}
	if cur != nil {
		errs = append(errs, fmt.Errorf("%s:%d: ```%s block is never closed", page, cur.line, cur.lang))
	}
	return blocks, errs
}

// command is one "$ " command of a console block and the output the page
// shows for it.
type command struct {
	line  int // the page line of its "$ "
	text  string
	want  string
	wantN int // how many lines want has, from line+1+(continuation lines)
}

// wantLine is the page line where the command's output starts.
func (c command) wantLine() int { return c.line + 1 + strings.Count(c.text, "\n") }

// commands splits a console block into its commands: a line starting
// with "$ " begins one (a trailing backslash continues it on the next
// line), and the lines after it up to the next "$ " are its output.
func (b docBlock) commands() ([]command, error) {
	var cmds []command
	var want []string
	flush := func() {
		if len(cmds) > 0 {
			cmds[len(cmds)-1].want = strings.Join(want, "\n")
			cmds[len(cmds)-1].wantN = len(want)
		}
		want = nil
	}
	for i := 0; i < len(b.body); i++ {
		line := b.body[i]
		if !strings.HasPrefix(line, "$ ") {
			if len(cmds) == 0 {
				if strings.TrimSpace(line) == "" {
					continue
				}
				return nil, fmt.Errorf("%s:%d: a console block must start with a \"$ \" command, not %q", b.page, b.line+1+i, line)
			}
			want = append(want, line)
			continue
		}
		flush()
		c := command{line: b.line + 1 + i, text: strings.TrimPrefix(line, "$ ")}
		for strings.HasSuffix(c.text, `\`) && i+1 < len(b.body) {
			i++
			c.text += "\n" + b.body[i]
		}
		cmds = append(cmds, c)
	}
	flush()
	return cmds, nil
}
