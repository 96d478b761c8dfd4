package authz

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCheckJSON(t *testing.T) {
	many := func(n int, last string) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			fmt.Fprintf(&b, `"m%d":%d,`, i, i)
		}
		b.WriteString(last + "}")
		return b.String()
	}
	deep := strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)
	tests := []struct {
		name    string
		json    string
		payload bool
		want    error // nil, errDuplicateMember or errNotNumericDate
	}{
		{"typical payload", `{"iss":"i","sub":"s","aud":["a"],"exp":1,"nbf":1,"iat":1.5,"jti":"j","name":"n","roles":["user"]}`, true, nil},
		{"typical header", `{"alg":"ES256","kid":"k","typ":"JWT"}`, false, nil},
		{"empty object", `{}`, true, nil},
		{"not an object", `[1,{"a":1},{"a":2}]`, true, errBadJSON},
		{"null", `null`, true, errBadJSON},
		{"not JSON", `{"a":`, true, errBadJSON},
		{"not JSON, header", `ES256`, false, errBadJSON},
		{"invalid UTF-8 in a name", "{\"a\xff\":1}", true, errBadJSON},
		{"invalid UTF-8 in a value", "{\"a\":\"\xff\",\"a\":2}", true, errBadJSON},
		{"lone surrogate escape", `{"a":"\ud800"}`, false, errBadJSON},
		{"trailing data: left to the parser", `{"a":1}{"a":1,"a":1}`, true, nil},
		{"leading and trailing whitespace", " \n{\"a\":1}\t", true, nil},
		{"same name in sibling objects", `{"x":{"a":1},"y":{"a":1}}`, true, nil},
		{"same name at two depths", `{"a":{"a":{"a":1}}}`, true, nil},
		{"same name in objects in an array", `{"x":[{"a":1},{"a":1}]}`, true, nil},
		{"names after a closed object are the parent's", `{"x":{"b":1},"b":2}`, true, nil},
		{"40 levels deep", deep, true, nil},
		{"many members, all distinct", many(100, `"last":1`), true, nil},
		{"date claims in a header are not checked", `{"exp":"x","EXP":"y"}`, false, nil},
		{"date names below the top level are not checked", `{"ext":{"exp":"x","iat":null}}`, true, nil},
		{"exponent number date", `{"exp":1.9e9}`, true, nil},

		{"duplicate at the top", `{"a":1,"a":2}`, true, errDuplicateMember},
		{"duplicate in a header", `{"kid":"a","alg":"ES256","kid":"b"}`, false, errDuplicateMember},
		{"duplicate after a nested object", `{"a":{"b":1},"c":{"d":{"e":1}},"a":2}`, true, errDuplicateMember},
		{"duplicate in a nested object", `{"x":{"a":1,"a":2}}`, true, errDuplicateMember},
		{"duplicate 40 levels deep", strings.Repeat(`{"a":`, 40) + `{"b":1,"b":1}` + strings.Repeat("}", 40), true, errDuplicateMember},
		{"duplicate in an object in an array", `{"x":[{"a":1},{"a":1,"a":1}]}`, true, errDuplicateMember},
		{"duplicate by escape", `{"sub":"a","\u0073ub":"b"}`, true, errDuplicateMember},
		{"duplicate null values", `{"a":null,"a":null}`, true, errDuplicateMember},
		{"duplicate after many members", many(100, `"m0":1`), true, errDuplicateMember},
		{"duplicate among many members, header", many(100, `"m99":1`), false, errDuplicateMember},
		{"duplicate in a nested object of a big one", `{` + strings.TrimPrefix(many(30, `"x":{"a":1,"a":2}`), "{"), true, errDuplicateMember},
		{"case variant of sub", `{"sub":"a","Sub":"b"}`, true, errDuplicateMember},
		{"case variant alone", `{"EXP":1}`, true, errDuplicateMember},
		{"Unicode fold variant (long s)", `{"ſub":"b"}`, true, errDuplicateMember},
		{"Unicode fold variant (long s), escaped", `{"\u017fub":"b"}`, true, errDuplicateMember},

		{"exp a string", `{"exp":"1893456000"}`, true, errNotNumericDate},
		{"nbf a string", `{"nbf":"1893456000"}`, true, errNotNumericDate},
		{"iat a string", `{"iat":"1893456000"}`, true, errNotNumericDate},
		{"exp null", `{"exp":null}`, true, errNotNumericDate},
		{"exp true", `{"exp":true}`, true, errNotNumericDate},
		{"exp an object", `{"exp":{"n":1}}`, true, errNotNumericDate},
		{"exp an array", `{"exp":[1]}`, true, errNotNumericDate},
		{"iat a string after nested objects", `{"x":{"iat":1},"iat":"1"}`, true, errNotNumericDate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c jsonChecker
			err := c.checkJSON([]byte(tt.json), "test", tt.payload)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("checkJSON(%s, payload %v) = %v, want %v", tt.json, tt.payload, err, tt.want)
			}
		})
	}
}

// BenchmarkCheckStrictJSON is the strictness check's share of an
// uncached verification, on a token as the issuer mints them.
func BenchmarkCheckStrictJSON(b *testing.B) {
	tok := newTestKey(b, "ES256", "main").sign(b, claimsFor("1a2faa7d-80b4-4765-b123-f5dc8ed7f555", "user"), nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := checkStrictJSON(tok); err != nil {
			b.Fatal(err)
		}
	}
}
