package dpop

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// NormalizeURL is the form in which htu and the request's URL are
// compared (RFC 9449 §4.3 step 9): the URL without query and fragment,
// normalised as RFC 3986 §6.2.2 and §6.2.3 say. The scheme (http or
// https) and host are lowercased, a default port is dropped, an empty
// path becomes "/", percent-encodings use upper-case hex and unreserved
// characters are decoded, and dot segments are removed.
func NormalizeURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("htu: %w", err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("htu: scheme %q is not http or https", u.Scheme)
	}
	if u.Host == "" || u.User != nil || u.Opaque != "" {
		return "", errors.New("htu: not an absolute http(s) URL with a host and no user info")
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return "", errors.New("htu: no host")
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if p := u.Port(); p != "" && !(scheme == "http" && p == "80") && !(scheme == "https" && p == "443") {
		host += ":" + p
	}
	path := removeDotSegments(normalizeEscapes(u.EscapedPath()))
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, nil
}

// normalizeEscapes decodes percent-encoded unreserved characters and
// upper-cases the hex digits of the others (RFC 3986 §6.2.2.1, §6.2.2.2).
// url.Parse has already refused a malformed escape.
func normalizeEscapes(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) {
			b.WriteByte(p[i])
			continue
		}
		c, err := strconv.ParseUint(p[i+1:i+3], 16, 8)
		switch {
		case err != nil:
			b.WriteByte(p[i])
			continue
		case unreserved(byte(c)):
			b.WriteByte(byte(c))
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
		i += 2
	}
	return b.String()
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments is RFC 3986 §5.2.4's algorithm, which keeps empty
// segments and a trailing slash (unlike path.Clean).
func removeDotSegments(in string) string {
	var out []string
	segs := strings.Split(in, "/")
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return strings.Join(out, "/")
}
