package books

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
)

// A cursor marks where the next page of a listing starts. To the client
// it is an opaque string; inside it is the last id of the previous page
// and an HMAC binding that id to the listing it came from (the caller's
// own books, or every book), so a cursor that was altered, or taken from
// another user's or another kind of listing, is refused rather than
// quietly paging through something else.
//
// Layout before base64url (no padding): version byte, uvarint id, tag.
const (
	cursorVersion = 1
	cursorTagLen  = 16
	// maxCursorLen bounds the encoded cursor: 1 + 10 (uvarint) + 16 bytes.
	maxCursorLen = 40
)

var errBadCursor = errors.New("invalid cursor")

// cursorCodec signs and checks cursors with a key shared by every replica.
type cursorCodec struct{ key []byte }

func (c cursorCodec) tag(scope string, after int64) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("tollgate books cursor v1\x00"))
	m.Write([]byte(scope))
	m.Write([]byte{0})
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(after)))
	return m.Sum(nil)[:cursorTagLen]
}

// encode returns the cursor for the page after id after in scope.
func (c cursorCodec) encode(scope string, after int64) string {
	b := []byte{cursorVersion}
	b = binary.AppendUvarint(b, uint64(after))
	b = append(b, c.tag(scope, after)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decode returns the id a cursor from scope points after, or errBadCursor.
func (c cursorCodec) decode(scope, s string) (int64, error) {
	if s == "" || len(s) > maxCursorLen {
		return 0, errBadCursor
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) < 1+1+cursorTagLen || b[0] != cursorVersion {
		return 0, errBadCursor
	}
	v, n := binary.Uvarint(b[1:])
	if n <= 0 || 1+n+cursorTagLen != len(b) || v > 1<<63-1 {
		return 0, errBadCursor
	}
	after := int64(v)
	// Comparing the whole re-encoded cursor checks the tag and also
	// refuses other spellings of the same id (overlong varints).
	if !hmac.Equal([]byte(c.encode(scope, after)), []byte(s)) {
		return 0, errBadCursor
	}
	return after, nil
}
