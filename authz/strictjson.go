package authz

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

var (
	// errDuplicateMember means a JSON object in the token names a member
	// twice (or, for a claim authz reads, under two spellings that Go's
	// JSON decoding takes for one). RFC 7515 §5.2 lets a parser refuse
	// such input or take the last value; refusing is the only choice
	// that agrees with every other verifier, whichever one it takes.
	errDuplicateMember = errors.New("token JSON has a duplicate member")
	// errNotNumericDate means exp, nbf or iat is not a JSON number (RFC
	// 7519 §2, NumericDate). golang-jwt would also take a string holding
	// a number, or read null as no claim at all.
	errNotNumericDate = errors.New("token date claim is not a JSON number")
	// errBadJSON means a segment is not strict JSON (RFC 8259 with valid
	// UTF-8), which encoding/json might still have read leniently.
	errBadJSON = errors.New("token JSON is invalid")
)

// dateClaims are the claims that must be JSON numbers.
var dateClaims = [...]string{"exp", "nbf", "iat"}

// readClaims are the payload members that claims decodes. encoding/json
// matches object keys to struct fields ignoring case (with Unicode
// folding: "ſub" is "sub"), so any other spelling of these is refused,
// or "EXP" could stand in for "exp" unseen by a stricter verifier.
var readClaims = [...][]byte{[]byte("iss"), []byte("sub"), []byte("aud"), []byte("exp"), []byte("nbf"), []byte("iat"), []byte("jti"), []byte("name"), []byte("roles")}

// jsonChecker holds the buffers and decoder of one strictness check,
// pooled so that a check allocates next to nothing.
type jsonChecker struct {
	seg, raw, name []byte
	iss            []byte // the payload's iss, unquoted, when it is a string
	hasIss         bool
	r              bytes.Reader
	dec            jsontext.Decoder
}

var jsonCheckers = sync.Pool{New: func() any { return new(jsonChecker) }}

// checkStrictJSON decodes the token's header and payload and refuses
// what golang-jwt would resolve silently: a member name given twice in
// any object at any depth, a case variant of a claim authz reads, a date
// claim that is not a number, and JSON that is not strictly valid (such
// as invalid UTF-8, which encoding/json replaces). tok must have passed
// checkCompact; a segment that is not base64url is left to the parser.
//
// jsontext (encoding/json/v2's syntax layer) refuses duplicate names
// itself, comparing names after unescaping as encoding/json's map
// decoding does, and reads without allocating.
//
// It also returns the payload's iss (hasIss is false when there is no
// iss string), which routes the token to its issuer: the payload is
// read once for both.
func checkStrictJSON(tok string) (iss string, hasIss bool, err error) {
	h, rest, _ := strings.Cut(tok, ".")
	p, _, _ := strings.Cut(rest, ".")
	c := jsonCheckers.Get().(*jsonChecker)
	defer jsonCheckers.Put(c)
	c.hasIss = false
	if err := c.check(h, "header", false); err != nil {
		return "", false, err
	}
	if err := c.check(p, "payload", true); err != nil {
		return "", false, err
	}
	if !c.hasIss {
		return "", false, nil
	}
	return string(c.iss), true, nil
}

func (c *jsonChecker) check(seg, what string, payload bool) error {
	c.seg = append(c.seg[:0], seg...)
	raw, err := base64.RawURLEncoding.Strict().AppendDecode(c.raw[:0], c.seg)
	if err != nil {
		return fmt.Errorf("%w: %s is not strict base64url", errBadJSON, what)
	}
	c.raw = raw
	return c.checkJSON(raw, what, payload)
}

// checkJSON checks one decoded segment.
func (c *jsonChecker) checkJSON(raw []byte, what string, payload bool) error {
	c.r.Reset(raw)
	c.dec.Reset(&c.r)
	return c.walk(what, payload)
}

// walk reads one JSON value. Only a payload object is read member by
// member, to check its claims' names and date types; anything else is
// read whole, which checks it all the same.
func (c *jsonChecker) walk(what string, payload bool) error {
	d := &c.dec
	if !payload {
		_, err := d.ReadValue()
		return jsonError(err, what)
	}
	if d.PeekKind() != '{' {
		// RFC 7519 §7.2: the claims set is a JSON object, and a token
		// is routed to its issuer by a member of it.
		if _, err := d.ReadValue(); err != nil {
			return jsonError(err, what)
		}
		return fmt.Errorf("%w: the payload is not a JSON object", errBadJSON)
	}
	if _, err := d.ReadToken(); err != nil {
		return jsonError(err, what)
	}
	for d.PeekKind() != '}' {
		quoted, err := d.ReadValue()
		if err != nil {
			return jsonError(err, what)
		}
		if c.name, err = jsontext.AppendUnquote(c.name[:0], quoted); err != nil {
			return jsonError(err, what)
		}
		for _, claim := range readClaims {
			if !bytes.Equal(c.name, claim) && bytes.EqualFold(c.name, claim) {
				return fmt.Errorf("%w: %q in the payload would be read as %q", errDuplicateMember, truncate(string(c.name), 32), claim)
			}
		}
		for _, claim := range dateClaims {
			if string(c.name) == claim {
				if k := d.PeekKind(); k != '0' && k != 0 {
					return fmt.Errorf("%w: %s is %s", errNotNumericDate, claim, kindName(k))
				}
			}
		}
		isIss := string(c.name) == "iss" && d.PeekKind() == '"'
		v, err := d.ReadValue()
		if err != nil {
			return jsonError(err, what)
		}
		if isIss {
			if c.iss, err = jsontext.AppendUnquote(c.iss[:0], v); err != nil {
				return jsonError(err, what)
			}
			c.hasIss = true
		}
	}
	_, err := d.ReadToken()
	return jsonError(err, what)
}

// jsonError classifies what jsontext found wrong.
func jsonError(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jsontext.ErrDuplicateName):
		return fmt.Errorf("%w in the %s: %s", errDuplicateMember, what, truncate(err.Error(), 128))
	}
	return fmt.Errorf("%w: %s: %s", errBadJSON, what, truncate(err.Error(), 128))
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return k.String()
}
