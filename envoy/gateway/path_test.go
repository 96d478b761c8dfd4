package gateway

import (
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// Expected outputs follow Envoy's PathUtil and its vendored Chromium
// canonicalizer (source/common/chromium_url/url_canon_path.cc) and
// Envoy's path_utility_test.cc cases.
func TestCanonicalizePath(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"/", "/", true},
		{"/users", "/users", true},
		{"/books/../users", "/users", true},
		{"/books/./1", "/books/1", true},
		{"/books/1/..", "/books/", true},
		{"/books/1/.", "/books/1/", true},
		{"/../../users", "/users", true},
		{"/books/%2e%2e/users", "/users", true},
		{"/books/%2E%2E/users", "/users", true},
		{"/books/.%2e/users", "/users", true},
		{"/books/%2e/1", "/books/1", true},
		{`/books\..\users`, "/users", true},
		{"/a/b/../../../c", "/c", true},
		{"/users.", "/users.", true},
		{"/users..", "/users..", true},
		{"/..users", "/..users", true},
		{"/%75sers", "/users", true},   // unreserved characters are decoded
		{"/a%2fb", "/a%2fb", true},     // slashes stay escaped, case kept
		{"/a%7e%5F%2D", "/a~_-", true}, // ~ _ - decoded
		{"/a b", "/a%20b", true},       // space escaped
		{"/a\"<>`{|}^", "/a%22%3C%3E%60%7B%7C%7D%5E", true},
		{"/caf\xc3\xa9", "/caf%C3%A9", true}, // high bytes escaped
		{"/a%zz", "/a%zz", true},             // invalid escape kept
		{"/%%30%30", "/%2500", true},         // a nested escape must not turn into %00
		{"/a%00b", "", false},                // escaped NUL rejected
		{"/a\x00b", "", false},               // raw NUL rejected
		{"//users", "//users", true},         // Chromium keeps adjacent slashes
		{"/users?x=/../y", "/users?x=/../y", true},
		{"/books/../users?a=%2e%2e", "/users?a=%2e%2e", true},
	}
	for _, tt := range tests {
		got, ok := canonicalizePath(tt.in)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("canonicalizePath(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestMergeSlashes(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/users", "/users"},
		{"//users", "/users"},
		{"/books//1///", "/books/1/"},
		{"/a//b?x=//y", "/a/b?x=//y"},
		{"//", "//"}, // PathUtil::mergeSlashes keeps the leading and trailing slash
	}
	for _, tt := range tests {
		if got := mergeSlashes(tt.in); got != tt.want {
			t.Errorf("mergeSlashes(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUnescapeSlashes(t *testing.T) {
	tests := []struct {
		in, want string
		found    bool
	}{
		{"/books/1", "/books/1", false},
		{"/books%2F1", "/books/1", true},
		{"/books%2f..%2fusers", "/books/../users", true},
		{"/books%5C1", `/books\1`, true},
		{"/books%5c1", `/books\1`, true},
		{"/books?next=%2F", "/books?next=%2F", false}, // the query is not touched
		{"/a%41", "/a%41", false},
	}
	for _, tt := range tests {
		got, found := unescapeSlashes(tt.in)
		if got != tt.want || found != tt.found {
			t.Errorf("unescapeSlashes(%q) = %q, %v; want %q, %v", tt.in, got, found, tt.want, tt.found)
		}
	}
}

// TestNormalizePathOrder pins the HCM's order: escaped slashes, then
// normalize_path, then merge_slashes (ConnectionManagerUtility::
// maybeNormalizePath).
func TestNormalizePathOrder(t *testing.T) {
	g := &Gateway{cfg: &compiled{hcm: hcmSettings{normalizePath: true, mergeSlashes: true}}}
	tests := []struct {
		action hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction
		in     string
		want   string
		ok     bool
	}{
		{hcmv3.HttpConnectionManager_REJECT_REQUEST, "/books%2F..%2Fusers", "", false},
		{hcmv3.HttpConnectionManager_REJECT_REQUEST, "/books/%2e%2e//users", "/users", true},
		{hcmv3.HttpConnectionManager_REJECT_REQUEST, "//books//..//users", "/books/users", true},
		{hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD, "/books%2F..%2Fusers", "/users", true},
		{hcmv3.HttpConnectionManager_KEEP_UNCHANGED, "/books%2F..%2Fusers", "/books%2F..%2Fusers", true},
	}
	for _, tt := range tests {
		g.cfg.hcm.escapedSlashes = tt.action
		got, ok := g.normalizePath(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("normalizePath(%s, %q) = %q, %v; want %q, %v", tt.action, tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzNormalizePath: whatever the input, the normalized path routes as a
// clean path: it starts with '/', and no segment is "." or ".." in any
// spelling Envoy decodes.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/books/../users", "/a/%2e%2e/b", `/a\..\b`, "//x//y", "/%%30%30", "/a?b=../c"} {
		f.Add(s)
	}
	g := &Gateway{cfg: &compiled{hcm: hcmSettings{normalizePath: true, mergeSlashes: true, escapedSlashes: hcmv3.HttpConnectionManager_REJECT_REQUEST}}}
	f.Fuzz(func(t *testing.T, in string) {
		if !strings.HasPrefix(in, "/") {
			in = "/" + in
		}
		out, ok := g.normalizePath(in)
		if !ok {
			return
		}
		path, _ := splitQuery(out)
		if !strings.HasPrefix(path, "/") {
			t.Fatalf("normalizePath(%q) = %q, does not start with /", in, out)
		}
		for _, seg := range strings.Split(path, "/") {
			if s := strings.ToLower(seg); s == "." || s == ".." || s == "%2e" || s == "%2e%2e" || s == ".%2e" || s == "%2e." {
				t.Fatalf("normalizePath(%q) = %q, has a dot segment %q", in, out, seg)
			}
		}
		if strings.Contains(path, `\`) {
			t.Fatalf("normalizePath(%q) = %q, has a backslash", in, out)
		}
	})
}
