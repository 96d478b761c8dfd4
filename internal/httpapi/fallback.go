package httpapi

import (
	"net/http"
	"strings"
)

// probeMethods are the methods tried to fill a 405's Allow header.
var probeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// Fallback serves mux, answering what no route matches with a JSON 404,
// or a JSON 405 with an Allow header when the path exists under other
// methods, instead of ServeMux's plain-text pages.
func Fallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		var allow []string
		for _, m := range probeMethods {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) == 0 {
			NotFound(w, r)
			return
		}
		e := Errorf(http.StatusMethodNotAllowed, nil, "method %s is not allowed here; allowed: %s", printable(r.Method), strings.Join(allow, ", "))
		e.Header = http.Header{"Allow": {strings.Join(allow, ", ")}}
		WriteError(w, r, e)
	})
}

// printable keeps a client's method name printable and short in an
// error message.
func printable(m string) string {
	if len(m) > 16 || strings.ContainsFunc(m, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return "this method"
	}
	return m
}
