package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type sample struct {
	Name  string `json:"name"`
	Prize int    `json:"book_prize"`
	Skip  string `json:"-"`
}

func TestDecodeJSON(t *testing.T) {
	for _, tc := range []struct {
		name        string
		contentType string
		body        string
		max         int64
		wantStatus  int // 0 = success
		wantMsg     string
		want        sample
	}{
		{name: "ok", contentType: "application/json", body: `{"name":"a","book_prize":3}`, want: sample{Name: "a", Prize: 3}},
		{name: "case-insensitive keys", body: `{"NAME":"a","Book_Prize":3}`, want: sample{Name: "a", Prize: 3}},
		{name: "json with charset", contentType: "application/json; charset=utf-8", body: `{"name":"a"}`, want: sample{Name: "a"}},
		{name: "wrong content type", contentType: "text/plain", body: `{"name":"a"}`, wantStatus: 415, wantMsg: "Content-Type"},
		{name: "form content type", contentType: "application/x-www-form-urlencoded", body: `name=a`, wantStatus: 415},
		{name: "too large", body: `{"name":"` + strings.Repeat("a", 100) + `"}`, max: 50, wantStatus: 413, wantMsg: "larger than 50 bytes"},
		{name: "empty", body: ``, wantStatus: 400, wantMsg: "empty"},
		{name: "whitespace only", body: "  \n", wantStatus: 400, wantMsg: "empty"},
		{name: "malformed", body: `{"name":`, wantStatus: 400, wantMsg: "not valid JSON"},
		{name: "array", body: `[1,2]`, wantStatus: 400, wantMsg: "JSON object"},
		{name: "null", body: `null`, wantStatus: 400, wantMsg: "JSON object"},
		{name: "string", body: `"x"`, wantStatus: 400, wantMsg: "JSON object"},
		{name: "trailing data", body: `{"name":"a"} {"name":"b"}`, wantStatus: 400, wantMsg: "after the JSON object"},
		{name: "unknown field named", body: `{"name":"a","admin":true,"zz":1}`, wantStatus: 400, wantMsg: `unknown field(s) "admin", "zz"`},
		{name: "ignored field is unknown", body: `{"name":"a","Skip":"x"}`, wantStatus: 400, wantMsg: `"Skip"`},
		{name: "wrong type named", body: `{"name":5}`, wantStatus: 400, wantMsg: `field "name" must be a string`},
		{name: "float for int", body: `{"book_prize":1.5}`, wantStatus: 400, wantMsg: `field "book_prize" must be an integer`},
		{name: "invalid utf-8", body: "{\"name\":\"\xff\xfe\"}", wantStatus: 400, wantMsg: "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			var got sample
			err := DecodeJSON(httptest.NewRecorder(), r, &got, tc.max)
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatalf("DecodeJSON(%s) = %v, want nil", tc.body, err)
				}
				if got != tc.want {
					t.Fatalf("DecodeJSON(%s) decoded %+v, want %+v", tc.body, got, tc.want)
				}
				return
			}
			var he *Error
			if !errors.As(err, &he) {
				t.Fatalf("DecodeJSON(%s) = %v, want *Error with status %d", tc.body, err, tc.wantStatus)
			}
			if he.Status != tc.wantStatus || !strings.Contains(he.Msg, tc.wantMsg) {
				t.Fatalf("DecodeJSON(%s) = %d %q, want %d containing %q", tc.body, he.Status, he.Msg, tc.wantStatus, tc.wantMsg)
			}
		})
	}
}

func TestHandleMapsErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		wantStatus int
		wantMsg    string
		wantHeader string
	}{
		{"client error", &Error{Status: 409, Msg: "name taken", Header: http.Header{"Retry-After": {"3"}}}, 409, "name taken", "3"},
		{"wrapped client error", errorsJoin(Errorf(404, nil, "not found")), 404, "not found", ""},
		{"cause never shown", errors.New("pq: password=hunter2 leaked"), 500, "internal error", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := Handle(func(w http.ResponseWriter, r *http.Request) error { return tc.err })
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q is not JSON: %v", rec.Body, err)
			}
			if rec.Code != tc.wantStatus || body["message"] != tc.wantMsg {
				t.Fatalf("Handle(%v) = %d %q, want %d %q", tc.err, rec.Code, body["message"], tc.wantStatus, tc.wantMsg)
			}
			if got := rec.Header().Get("Retry-After"); got != tc.wantHeader {
				t.Fatalf("Retry-After = %q, want %q", got, tc.wantHeader)
			}
			if strings.Contains(rec.Body.String(), "hunter2") {
				t.Fatalf("response leaked the cause: %s", rec.Body)
			}
		})
	}
}

func errorsJoin(err error) error { return errors.Join(errors.New("context"), err) }
