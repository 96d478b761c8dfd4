package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
)

// DefaultMaxBody is the body limit DecodeJSON applies when given 0.
const DefaultMaxBody = 64 << 10

// DecodeJSON reads r's body into dst, a pointer to a struct, and returns
// an *Error a client can act on for every way the body can be wrong:
// a content type other than JSON (415), a body over maxBytes (413), an
// empty body, invalid UTF-8 or JSON, trailing data, a value that is not
// an object, a field of the wrong type, or fields dst does not have
// (400, naming them). Field names match dst's json tags without regard
// to case, as encoding/json does.
func DecodeJSON(w http.ResponseWriter, r *http.Request, dst any, maxBytes int64) error {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBody
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return Errorf(http.StatusUnsupportedMediaType, err, "Content-Type must be application/json")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Errorf(http.StatusRequestEntityTooLarge, err, "request body is larger than %d bytes", maxBytes)
		}
		return Errorf(http.StatusBadRequest, err, "could not read request body")
	}
	return decodeBody(body, dst)
}

func decodeBody(body []byte, dst any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return Errorf(http.StatusBadRequest, nil, "request body is empty; a JSON object is required")
	}
	if !utf8.Valid(body) {
		return Errorf(http.StatusBadRequest, nil, "request body is not valid UTF-8")
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return Errorf(http.StatusBadRequest, err, "request body must be a JSON object")
		}
		return Errorf(http.StatusBadRequest, err, "request body is not valid JSON")
	}
	if fields == nil {
		return Errorf(http.StatusBadRequest, nil, "request body must be a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Errorf(http.StatusBadRequest, err, "request body has data after the JSON object")
	}
	known := jsonFields(reflect.TypeOf(dst))
	var unknown []string
	for name := range fields {
		if !slices.ContainsFunc(known, func(k string) bool { return strings.EqualFold(k, name) }) {
			unknown = append(unknown, fmt.Sprintf("%q", name))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return Errorf(http.StatusBadRequest, nil, "unknown field(s) %s; allowed: %s", strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	if err := json.Unmarshal(body, dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return Errorf(http.StatusBadRequest, err, "field %q must be %s", typeErr.Field, jsonKind(typeErr.Type))
		}
		return Errorf(http.StatusBadRequest, err, "request body does not match the expected shape")
	}
	return nil
}

// jsonFields lists the JSON names of the struct t points to.
func jsonFields(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var names []string
	if t.Kind() != reflect.Struct {
		return names
	}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	default:
		return "an object"
	}
}
