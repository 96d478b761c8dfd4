package gateway

import (
	"strings"
)

// Path handling of Envoy's HTTP connection manager, applied to :path
// before any filter or route sees it (ConnectionManagerUtility::
// maybeNormalizePath, PathUtil in source/common/http/path_utility.cc):
// escaped slashes per path_with_escaped_slashes_action, then RFC 3986
// normalization (normalize_path, Chromium's URL path canonicalizer that
// Envoy vendors), then merge_slashes. Each step touches only the part
// before the query string.

// splitQuery splits p into the path and the query including its '?'.
func splitQuery(p string) (path, query string) {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i], p[i:]
	}
	return p, ""
}

// unescapeSlashes decodes %2F, %2f, %5C and %5c in the path part of p and
// reports whether there were any (PathUtil::unescapeSlashes).
func unescapeSlashes(p string) (string, bool) {
	path, query := splitQuery(p)
	if !strings.Contains(path, "%") {
		return p, false
	}
	r := strings.NewReplacer("%2F", "/", "%2f", "/", "%5C", `\`, "%5c", `\`)
	out := r.Replace(path)
	if out == path {
		return p, false
	}
	return out + query, true
}

// mergeSlashes collapses runs of '/' in the path part of p
// (PathUtil::mergeSlashes, including its handling of the leading and
// trailing slash).
func mergeSlashes(p string) string {
	path, query := splitQuery(p)
	if !strings.Contains(path, "//") {
		return p
	}
	var prefix, suffix string
	if strings.HasPrefix(path, "/") {
		prefix = "/"
	}
	if strings.HasSuffix(path, "/") {
		suffix = "/"
	}
	var segs []string
	for _, s := range strings.Split(path, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	return prefix + strings.Join(segs, "/") + suffix + query
}

// canonicalizePath normalizes the path part of p as Envoy's normalize_path
// does (PathUtil::canonicalPath, which runs Chromium's CanonicalizePath on
// the part before '?'); ok is false when Envoy would reject the request
// with 400 (an escaped or raw NUL).
func canonicalizePath(p string) (string, bool) {
	path, query := splitQuery(p)
	out, ok := chromiumCanonicalizePath(path)
	if !ok {
		return "", false
	}
	return out + query, true
}

// Character classes of Chromium's kPathCharLookup.
const (
	pathPass     = 0
	pathSpecial  = 1
	pathEscape   = 2 | pathSpecial
	pathUnescape = 4
	pathInvalid  = 8 | pathSpecial
)

var pathCharLookup = func() [256]byte {
	var t [256]byte
	t[0] = pathInvalid
	for c := 1; c < 0x20; c++ {
		t[c] = pathEscape
	}
	for c := 0x7f; c < 0x100; c++ {
		t[c] = pathEscape
	}
	for c := 0x20; c < 0x7f; c++ {
		t[c] = pathPass
	}
	for _, c := range ` "#%<>?\^` + "`{|}" {
		t[c] = pathEscape
	}
	for _, c := range "-_~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" {
		t[c] = pathUnescape
	}
	t['.'] = pathSpecial
	return t
}()

func isURLSlash(c byte) bool { return c == '/' || c == '\\' }

// isDot returns the length of a dot at s[i:end]: 1 for ".", 3 for "%2e"
// or "%2E", otherwise 0.
func isDot(s string, i, end int) int {
	if s[i] == '.' {
		return 1
	}
	if s[i] == '%' && i+3 <= end && s[i+1] == '2' && (s[i+2] == 'e' || s[i+2] == 'E') {
		return 3
	}
	return 0
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// decodeEscaped decodes the "%XX" starting at s[i]; on success it returns
// the byte and the index of the escape's last character.
func decodeEscaped(s string, i, end int) (byte, int, bool) {
	if i+3 > end {
		return 0, i, false
	}
	hi, ok1 := unhex(s[i+1])
	lo, ok2 := unhex(s[i+2])
	if !ok1 || !ok2 {
		return 0, i, false
	}
	return hi<<4 | lo, i + 2, true
}

const upperHex = "0123456789ABCDEF"

func appendEscaped(out []byte, c byte) []byte {
	return append(out, '%', upperHex[c>>4], upperHex[c&15])
}

// chromiumCanonicalizePath is Chromium's DoPath/DoPartialPath for 8-bit
// input, as vendored by Envoy (source/common/chromium_url/
// url_canon_path.cc): dot segments, including escaped dots, are resolved
// and never climb above the root; backslashes become slashes; escapes of
// unreserved characters are decoded; characters that must be escaped are
// escaped; adjacent slashes are kept.
func chromiumCanonicalizePath(path string) (string, bool) {
	out := make([]byte, 0, len(path)+1)
	if len(path) == 0 {
		return "/", true
	}
	if !isURLSlash(path[0]) {
		out = append(out, '/')
	}
	const begin = 0 // path_begin_in_output
	end := len(path)
	lastInvalidPercent := -1 << 30
	ok := true
	for i := 0; i < end; i++ {
		c := path[i]
		flags := pathCharLookup[c]
		if flags&pathSpecial == 0 {
			out = append(out, c)
			continue
		}
		if dotlen := isDot(path, i, end); dotlen > 0 {
			if len(out) > begin && out[len(out)-1] == '/' {
				consumed, kind := classifyAfterDot(path, i+dotlen, end)
				switch kind {
				case dotNotDirectory:
					out = append(out, '.')
					i += dotlen - 1
				case dotCurrent:
					i += dotlen + consumed - 1
				case dotUp:
					out = backUpToPreviousSlash(begin, out)
					i += dotlen + consumed - 1
				}
			} else {
				out = append(out, '.')
				i += dotlen - 1
			}
			continue
		}
		switch {
		case c == '\\':
			out = append(out, '/')
		case c == '%':
			v, last, decoded := decodeEscaped(path, i, end)
			if !decoded {
				lastInvalidPercent = len(out)
				out = append(out, '%')
				continue
			}
			i = last
			uf := pathCharLookup[v]
			if uf&pathUnescape != 0 {
				out = append(out, v)
				if lastInvalidPercent >= len(out)-3 {
					out = checkForNestedEscapes(path, i+1, end, lastInvalidPercent, out)
				}
			} else {
				out = append(out, '%', path[i-1], path[i])
				if uf&pathInvalid == pathInvalid {
					ok = false
				}
			}
		case flags&pathInvalid == pathInvalid:
			out = appendEscaped(out, c)
			ok = false
		case flags&pathEscape == pathEscape:
			out = appendEscaped(out, c)
		}
	}
	return string(out), ok
}

type dotKind int

const (
	dotNotDirectory dotKind = iota
	dotCurrent
	dotUp
)

// classifyAfterDot looks at what follows a dot that starts a segment and
// returns how many more input bytes the segment consumes.
func classifyAfterDot(s string, after, end int) (int, dotKind) {
	if after == end {
		return 0, dotCurrent
	}
	if isURLSlash(s[after]) {
		return 1, dotCurrent
	}
	if n := isDot(s, after, end); n > 0 {
		next := after + n
		if next == end {
			return n, dotUp
		}
		if isURLSlash(s[next]) {
			return n + 1, dotUp
		}
	}
	return 0, dotNotDirectory
}

// backUpToPreviousSlash drops the last segment of out, which ends in '/',
// never going above the slash at begin.
func backUpToPreviousSlash(begin int, out []byte) []byte {
	i := len(out) - 1
	if i == begin {
		return out
	}
	i--
	for out[i] != '/' && i > begin {
		i--
	}
	return out[:i+1]
}

// checkForNestedEscapes re-escapes a '%' that became a valid escape only
// after an inner escape was decoded ("%%30%30" must not turn into "%00").
func checkForNestedEscapes(s string, next, end, lastInvalidPercent int, out []byte) []byte {
	length := len(out)
	lastUnescaped := out[length-1]
	appendNext := lastInvalidPercent == length-2
	if appendNext {
		if next == end || s[next] >= 0x80 {
			return out
		}
		out = append(out, s[next])
	}
	if _, _, ok := decodeEscaped(string(out), lastInvalidPercent, len(out)); ok {
		if !appendNext {
			out = append(out, out[lastInvalidPercent+1])
		}
		out[lastInvalidPercent+1] = '2'
		out[lastInvalidPercent+2] = '5'
		out = append(out, lastUnescaped)
	} else if appendNext {
		out = out[:length]
	}
	return out
}
