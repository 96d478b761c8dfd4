package issuer

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// FuzzDecodeRegister feeds arbitrary bodies and content types to the
// POST /register decoding: it must either accept a registration that
// obeys every rule, or refuse with a 4xx *httpapi.Error; never panic,
// never a 5xx.
func FuzzDecodeRegister(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.json")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "application/json")
	}
	for _, s := range []string{
		`{"name":"alain","password":"correct horse battery"}`,
		`{"NAME":"alain","Password":"correct horse battery"}`,
		`{"name":"al\u0000ain","password":"x"}`,
		`{"name":"alain","password":"correct horse battery","admin":true}`,
		`{"name":5}`, `[]`, `null`, `{}`, ``, `{"name":"a"}{}`,
		"{\"name\":\"\xff\"}",
	} {
		f.Add([]byte(s), "application/json")
	}
	f.Add([]byte(`{"name":"alain"}`), "text/plain")
	f.Add([]byte(`{"name":"alain"}`), "application/merge-patch+json; charset=utf-8")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		r := httptest.NewRequest("POST", "/register", bytes.NewReader(body))
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		w := httptest.NewRecorder()
		req, err := decodeRegistration(w, r)
		if err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) {
				t.Fatalf("decodeRegistration error %v is not an *httpapi.Error (would be a 500)", err)
			}
			if he.Status < 400 || he.Status > 499 || he.Msg == "" {
				t.Fatalf("decodeRegistration = %d %q, want a 4xx with a message", he.Status, he.Msg)
			}
			if he.Status == http.StatusRequestEntityTooLarge && len(body) <= maxRegisterBody {
				t.Fatalf("413 for a %d-byte body", len(body))
			}
			return
		}
		if validateName(req.Name) != nil || validatePassword(req.Password, req.Name) != nil {
			t.Fatalf("accepted a registration that breaks the rules: %q", req.Name)
		}
		if !utf8.ValidString(req.Name) || len(req.Password) > MaxPasswordBytes || len(body) > maxRegisterBody {
			t.Fatalf("accepted name %q / %d-byte password / %d-byte body", req.Name, len(req.Password), len(body))
		}
	})
}
