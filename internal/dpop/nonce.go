package dpop

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// minNonceSecret is the shortest nonce secret accepted.
const minNonceSecret = 32

// ReadNonceSecret reads a nonce secret file, as the issuer and authz
// share it: its bytes without a trailing newline, at least 32 of them.
func ReadNonceSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dpop nonce secret: %w", err)
	}
	secret := []byte(strings.TrimRight(string(b), "\r\n"))
	if len(secret) < minNonceSecret {
		return nil, fmt.Errorf("dpop nonce secret file %s holds %d bytes; it needs at least %d bytes", path, len(secret), minNonceSecret)
	}
	return secret, nil
}

// DefaultNoncePeriod is how often the server nonce changes. A nonce is
// accepted in its own period and the next, so it lives one to two
// periods.
const DefaultNoncePeriod = 5 * time.Minute

// Nonces are stateless server nonces (RFC 9449 §8): the number of the
// current period and an HMAC of it. Every replica with the same secret
// issues and accepts the same nonces, with nothing stored.
type Nonces struct {
	key    []byte
	period time.Duration
	now    func() time.Time
}

// NewNonces returns nonces keyed by secret (at least 32 bytes, shared by
// the replicas that must accept each other's nonces), changing every
// period. A nil secret means a random one, for a single replica. now nil
// means time.Now.
func NewNonces(secret []byte, period time.Duration, now func() time.Time) (*Nonces, error) {
	if period <= 0 {
		return nil, errors.New("dpop: nonce period must be positive")
	}
	if secret == nil {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
	}
	if len(secret) < minNonceSecret {
		return nil, errors.New("dpop: nonce secret must be at least 32 bytes")
	}
	if now == nil {
		now = time.Now
	}
	return &Nonces{key: secret, period: period, now: now}, nil
}

func (n *Nonces) at(p uint64) string {
	var b [8 + 16]byte
	binary.BigEndian.PutUint64(b[:8], p)
	m := hmac.New(sha256.New, n.key)
	m.Write(b[:8])
	copy(b[8:], m.Sum(nil))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (n *Nonces) current() uint64 { return uint64(n.now().UnixNano() / int64(n.period)) }

// Current is the nonce to send in DPoP-Nonce now.
func (n *Nonces) Current() string { return n.at(n.current()) }

// Valid reports whether s is the current or the previous period's nonce.
func (n *Nonces) Valid(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 24 {
		return false
	}
	p, cur := binary.BigEndian.Uint64(b[:8]), n.current()
	if p != cur && p+1 != cur {
		return false
	}
	return hmac.Equal([]byte(n.at(p)), []byte(s))
}
