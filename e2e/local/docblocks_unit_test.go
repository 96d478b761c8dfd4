package local

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseBlocks(t *testing.T) {
	tests := []struct {
		name    string
		page    string
		want    []mode // the decisions of the blocks parsed
		wantErr string // a substring of the one error, "" for none
	}{
		{"run sh", "<!-- docs-test: run -->\n```sh\ntrue\n```\n", []mode{modeRun}, ""},
		{"run console, blank line between", "<!-- docs-test: run -->\n\n```console\n$ true\n```\n", []mode{modeRun}, ""},
		{"run-allow-errors sh", "<!-- docs-test: run-allow-errors -->\n```sh\nfalse\n```\n", []mode{modeRunAllowErrors}, ""},
		{"skip with a reason", "<!-- docs-test: skip (needs a cluster) -->\n```sh\nkubectl get pods\n```\n", []mode{modeSkip}, ""},
		{"bash counts as shell", "<!-- docs-test: run -->\n```bash\ntrue\n```\n", []mode{modeRun}, ""},
		{"other languages need no decision", "```yaml\na: 1\n```\n```go\npackage x\n```\n", nil, ""},
		{"unmarked sh", "Run:\n\n```sh\ncurl -s localhost:8080/books\n```\n", nil, "has no docs-test decision: put <!-- docs-test: run -->"},
		{"unmarked console", "```console\n$ true\n```\n", nil, "page.md:1: ```console block has no docs-test decision"},
		{"marker before an earlier block does not carry over", "<!-- docs-test: run -->\n```sh\ntrue\n```\n```sh\ntrue\n```\n", []mode{modeRun}, "page.md:5: ```sh block has no docs-test decision"},
		{"marker not on the last line before the fence", "<!-- docs-test: run -->\nSome text.\n```sh\ntrue\n```\n", nil, "has no docs-test decision"},
		{"skip without a reason", "<!-- docs-test: skip -->\n```sh\ntrue\n```\n", nil, `the decision "skip", which the docs test does not know`},
		{"skip with an empty reason", "<!-- docs-test: skip ( ) -->\n```sh\ntrue\n```\n", nil, "which the docs test does not know"},
		{"unknown decision", "<!-- docs-test: maybe -->\n```sh\ntrue\n```\n", nil, `the decision "maybe"`},
		{"run-allow-errors on console", "<!-- docs-test: run-allow-errors -->\n```console\n$ true\n```\n", nil, `the decision "run-allow-errors"`},
		{"unlabelled block with prompts", "```\n$ curl -s localhost:8080/books\n{}\n```\n", nil, "page.md:1: an unlabelled block shows \"$ \" commands: make it a ```console block"},
		{"unlabelled block without prompts", "```\nclient -> gateway\n```\n", nil, ""},
		{"prompts in a text block", "```text\n$ not a command\n```\n", nil, ""},
		{"unclosed block", "<!-- docs-test: run -->\n```sh\ntrue\n", nil, "never closed"},
		{"a fence inside another language's block", "```markdown\n```sh\ntrue\n```\n", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blocks, errs := parseBlocks("page.md", []byte(tt.page))
			var got []mode
			for _, b := range blocks {
				if b.mode != 0 {
					got = append(got, b.mode)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseBlocks(%s) decisions (-want +got):\n%s", tt.name, diff)
			}
			switch {
			case tt.wantErr == "" && len(errs) > 0:
				t.Errorf("parseBlocks(%s) = %v, want no error", tt.name, errs)
			case tt.wantErr != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.wantErr)):
				t.Errorf("parseBlocks(%s) = %v, want one error containing %q", tt.name, errs, tt.wantErr)
			}
		})
	}
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    []command
		wantErr bool
	}{
		{"outputs up to the next prompt", "$ a\none\ntwo\n$ b\n$ c\nthree",
			[]command{{line: 2, text: "a", want: "one\ntwo", wantN: 2}, {line: 5, text: "b"}, {line: 6, text: "c", want: "three", wantN: 1}}, false},
		{"continuation lines", "$ curl \\\n    -s x\nout",
			[]command{{line: 2, text: "curl \\\n    -s x", want: "out", wantN: 1}}, false},
		{"output before any command", "out\n$ a", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := docBlock{page: "page.md", line: 1, lang: "console", body: strings.Split(tt.body, "\n")}
			got, err := b.commands()
			if (err != nil) != tt.wantErr {
				t.Fatalf("commands(%s) error = %v, want error %v", tt.name, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(command{})); diff != "" {
				t.Errorf("commands(%s) (-want +got):\n%s", tt.name, diff)
			}
		})
	}
}

// TestOutputMatch pins the normalization: what varies between runs
// matches, and a wrong status, message, field or id does not.
func TestOutputMatch(t *testing.T) {
	const (
		jwt1 = "eyJhbGciOiJFUzI1NiIsImtpZCI6IkEifQ.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMQ"
		jwt2 = "eyJhbGciOiJFUzI1NiIsImtpZCI6IkIifQ.eyJzdWIiOiIyIn0.c2lnbmF0dXJlMg"
		id1  = "0c472971-88e3-4ad0-9706-79822809e72a"
		id2  = "2215d528-4eaf-4ec2-9a65-9205e014d23d"
		id3  = "9337294a-7849-435f-82dc-6b546a45b821"
		hdr  = "HTTP/1.1 401 Unauthorized\nContent-Length: 39\nDate: %s\n\n{\"message\":\"a valid token is missing\"}"
	)
	tests := []struct {
		name      string
		want, got []string // a page's outputs in order, and a run's
		match     bool
	}{
		{"identical", []string{`{"message":"not found"}` + "\n404"}, []string{`{"message":"not found"}` + "\n404\n"}, true},
		{"wrong status", []string{"204"}, []string{"404"}, false},
		{"wrong message", []string{`{"message":"book not found"}`}, []string{`{"message":"not found"}`}, false},
		{"missing field", []string{`{"id":1,"name":"x"}`}, []string{`{"id":1}`}, false},
		{"extra blank line", []string{"{}\n404"}, []string{"{}\n\n404"}, false},
		{"a shortened token", []string{`{"token":"eyJhbGciOiJFUzI1NiIsImtpZCI6Ik…aVU-uA"}`}, []string{`{"token":"` + jwt1 + `"}`}, true},
		{"a token, then a wrong field", []string{`{"token":"eyJhbGciOiJFUzI1NiIsImtpZCI6Ik…aVU-uA","token_type":"Bearer"}`}, []string{`{"token":"` + jwt1 + `","token_type":"MAC"}`}, false},
		{"a token where the page shows none", []string{`{"token":""}`}, []string{`{"token":"` + jwt1 + `"}`}, false},
		{"another run's token", []string{`{"token":"` + jwt2 + `"}`}, []string{`{"token":"` + jwt1 + `"}`}, true},
		{"timestamps", []string{`{"created_at":"2026-11-29T04:26:56.822151Z"}`}, []string{`{"created_at":"2026-12-01T21:09:22.4Z"}`}, true},
		{"a date where the page shows text", []string{`{"created_at":"soon"}`}, []string{`{"created_at":"2026-12-01T21:09:22.4Z"}`}, false},
		{"Date header", []string{strings.Replace(hdr, "%s", "Sun, 29 Nov 2026 04:26:56 GMT", 1)}, []string{strings.Replace(hdr, "%s", "Tue, 01 Dec 2026 21:06:07 GMT", 1)}, true},
		{"Content-Length still counts", []string{strings.Replace(strings.Replace(hdr, "%s", "Sun, 29 Nov 2026 04:26:56 GMT", 1), "39", "38", 1)}, []string{strings.Replace(hdr, "%s", "Tue, 01 Dec 2026 21:06:07 GMT", 1)}, false},
		{"a Date line that is no header date", []string{"Date: soon"}, []string{"Date: later"}, false},
		{"upstream time is a number", []string{"X-Envoy-Upstream-Service-Time: 25"}, []string{"X-Envoy-Upstream-Service-Time: slow"}, false},
		{"upstream time", []string{"X-Envoy-Upstream-Service-Time: 25"}, []string{"X-Envoy-Upstream-Service-Time: 0"}, true},
		{"same ids as the page", []string{`{"id":"` + id1 + `"}`, `[{"id":"` + id2 + `"},{"id":"` + id1 + `"}]`}, []string{`{"id":"` + id3 + `"}`, `[{"id":"` + id2 + `"},{"id":"` + id3 + `"}]`}, true},
		{"an id where the page repeats one", []string{`{"id":"` + id1 + `"}`, `{"id":"` + id1 + `"}`}, []string{`{"id":"` + id1 + `"}`, `{"id":"` + id2 + `"}`}, false},
		{"elided key id", []string{`"kid": "…",`}, []string{`"kid": "QhPhWA1XZJw2vevKmFCLM1br5VbTGJCBm2RfvI8Sp4E",`}, true},
		{"elision is base64url only", []string{`{"next_cursor":"…"}`}, []string{`{"next_cursor":"a","admin":"x"}`}, false},
		{"elision is not a message", []string{`{"message":"…"}`}, []string{`{"message":"token is invalid"}`}, false},
		{"elision keeps the rest exact", []string{`"kid": "…", "alg": "ES256"`}, []string{`"kid": "QhPh", "alg": "RS256"`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, got := newNormalizer(), newNormalizer()
			ok := true
			for i := range tt.want {
				if !matchOutput(want.normalize(tt.want[i]), got.normalize(tt.got[i])) {
					ok = false
				}
			}
			if ok != tt.match {
				t.Errorf("match(%q, %q) = %v, want %v", tt.want, tt.got, ok, tt.match)
			}
		})
	}
}

func TestPortMap(t *testing.T) {
	m := portMap{
		toStack: map[string]string{"8080": "41234", "8081": "41235"},
		toDoc:   map[string]string{"41234": "8080", "41235": "8081"},
	}
	m.docRe = regexpFor(m.toStack)
	m.stackRe = regexpFor(m.toDoc)
	tests := []struct{ name, in, cmd, out string }{
		{"gateway", "curl http://localhost:8080/books", "curl http://localhost:41234/books", "curl http://localhost:8080/books"},
		{"user in the URL", "curl http://alain:alain-reads-books@localhost:8080/login", "curl http://alain:alain-reads-books@localhost:41234/login", ""},
		{"127.0.0.1", "curl 127.0.0.1:8081/x", "curl 127.0.0.1:41235/x", "curl 127.0.0.1:8081/x"},
		{"another host keeps its port", "curl example.com:8080", "curl example.com:8080", ""},
		{"a longer port is not a documented one", "curl localhost:80801", "curl localhost:80801", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m.command(tt.in); got != tt.cmd {
				t.Errorf("command(%q) = %q, want %q", tt.in, got, tt.cmd)
			}
			if tt.out != "" {
				if got := m.output(tt.cmd); got != tt.out {
					t.Errorf("output(%q) = %q, want %q", tt.cmd, got, tt.out)
				}
			}
		})
	}
}
