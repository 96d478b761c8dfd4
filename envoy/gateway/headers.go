package gateway

import (
	"net/http"
	"strings"
)

// headerMap is a request or response header map that behaves like
// Envoy's: keys are lowercase, entries keep their order, pseudo-headers
// (":authority", ":path", ":method", ":scheme") are entries like any
// other, and a key may appear more than once.
type headerMap struct {
	entries []headerEntry
}

type headerEntry struct {
	key, value string
}

// get returns the first value of key.
func (h *headerMap) get(key string) (string, bool) {
	for _, e := range h.entries {
		if e.key == key {
			return e.value, true
		}
	}
	return "", false
}

// value returns the first value of key, or "".
func (h *headerMap) value(key string) string {
	v, _ := h.get(key)
	return v
}

func (h *headerMap) has(key string) bool {
	_, ok := h.get(key)
	return ok
}

// joined returns every value of key joined with ",", Envoy's way of
// merging repeated headers (HeaderMap::get + comma join).
func (h *headerMap) joined(key string) (string, bool) {
	var vals []string
	for _, e := range h.entries {
		if e.key == key {
			vals = append(vals, e.value)
		}
	}
	return strings.Join(vals, ","), len(vals) > 0
}

// add appends a new entry (Envoy's addCopy for a non-inline header).
func (h *headerMap) add(key, value string) {
	h.entries = append(h.entries, headerEntry{strings.ToLower(key), value})
}

// set replaces every entry of key with one (Envoy's setCopy: remove, then
// addCopy).
func (h *headerMap) set(key, value string) {
	key = strings.ToLower(key)
	h.remove(key)
	h.entries = append(h.entries, headerEntry{key, value})
}

// appendValue appends value to the first entry of key with a "," (Envoy's
// appendCopy), or adds the header when it is absent.
func (h *headerMap) appendValue(key, value string) {
	key = strings.ToLower(key)
	for i, e := range h.entries {
		if e.key == key {
			if e.value == "" {
				h.entries[i].value = value
			} else if value != "" {
				h.entries[i].value = e.value + "," + value
			}
			return
		}
	}
	h.entries = append(h.entries, headerEntry{key, value})
}

// remove deletes every entry of key.
func (h *headerMap) remove(key string) {
	key = strings.ToLower(key)
	out := h.entries[:0]
	for _, e := range h.entries {
		if e.key != key {
			out = append(out, e)
		}
	}
	clear(h.entries[len(out):])
	h.entries = out
}

// removeIf deletes every entry whose key satisfies drop.
func (h *headerMap) removeIf(drop func(key string) bool) {
	out := h.entries[:0]
	for _, e := range h.entries {
		if !drop(e.key) {
			out = append(out, e)
		}
	}
	clear(h.entries[len(out):])
	h.entries = out
}

// httpHeader converts the regular (non-pseudo) entries to an http.Header
// in canonical form, keeping repeated entries as separate values.
func (h *headerMap) httpHeader() http.Header {
	out := make(http.Header, len(h.entries))
	for _, e := range h.entries {
		if strings.HasPrefix(e.key, ":") {
			continue
		}
		k := http.CanonicalHeaderKey(e.key)
		out[k] = append(out[k], e.value)
	}
	return out
}

// isRemovableHeader reports whether an ext_authz headers_to_remove entry
// may remove key: pseudo-headers and host may not, as removing them would
// make the request malformed (Envoy's HeaderUtility::isRemovableHeader).
func isRemovableHeader(key string) bool {
	return !strings.HasPrefix(key, ":") && !strings.EqualFold(key, "host")
}

// validHeaderName reports whether name may be sent as a header name:
// a non-empty RFC 9110 token, or a pseudo-header of one (Envoy's
// HeaderUtility::headerNameIsValid, used by validate_mutations).
func validHeaderName(name string) bool {
	name = strings.TrimPrefix(name, ":")
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validHeaderValue reports whether value may be sent as a header value:
// no NUL, CR or LF (Envoy's HeaderUtility::headerValueIsValid).
func validHeaderValue(value string) bool {
	return !strings.ContainsAny(value, "\x00\r\n")
}
