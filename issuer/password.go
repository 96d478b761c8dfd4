package issuer

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the argon2id costs for new password hashes. Stored
// hashes carry their own parameters, so raising these later takes effect
// for each user at their next successful login.
type Argon2Params struct {
	// Memory is the memory cost in KiB (at least 19456, 19 MiB).
	Memory uint32
	// Iterations is the time cost (at least 2).
	Iterations uint32
	// Parallelism is the number of lanes (at least 1).
	Parallelism uint8
}

// MinArgon2Params is the floor the OWASP Password Storage Cheat Sheet
// sets for argon2id, and the default.
var MinArgon2Params = Argon2Params{Memory: 19 * 1024, Iterations: 2, Parallelism: 1}

func (p Argon2Params) validate() error {
	if p.Memory < MinArgon2Params.Memory || p.Iterations < MinArgon2Params.Iterations || p.Parallelism < MinArgon2Params.Parallelism {
		return fmt.Errorf("argon2id parameters m=%d,t=%d,p=%d are below the minimum m=%d,t=%d,p=%d",
			p.Memory, p.Iterations, p.Parallelism,
			MinArgon2Params.Memory, MinArgon2Params.Iterations, MinArgon2Params.Parallelism)
	}
	if p.Memory > maxArgon2Memory || p.Iterations > maxArgon2Iterations {
		return fmt.Errorf("argon2id parameters m=%d,t=%d are above the maximum m=%d,t=%d", p.Memory, p.Iterations, maxArgon2Memory, maxArgon2Iterations)
	}
	return nil
}

const (
	saltLen = 16
	keyLen  = 32

	// Bounds on parameters read back from a stored hash, so a corrupt row
	// cannot make one login allocate gigabytes or spin for minutes.
	maxArgon2Memory      = 1 << 20 // 1 GiB in KiB
	maxArgon2Iterations  = 64
	maxArgon2Parallelism = 64
)

// deriveFunc computes an argon2id key; it is argon2.IDKey except in
// tests that count or block hash computations.
type deriveFunc func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte

// hasher hashes and verifies passwords with argon2id in the PHC string
// format ($argon2id$v=19$m=...,t=...,p=...$salt$hash), and bounds how
// many hashes run at once: each one holds Memory KiB for its duration.
type hasher struct {
	params  Argon2Params
	derive  deriveFunc
	limiter *limiter
}

// errBadHash is a stored hash this code cannot read.
var errBadHash = errors.New("unreadable password hash")

// hash returns the encoded argon2id hash of password with a new salt.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("read salt: %w", err)
	}
	release, err := h.limiter.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	p := h.params
	key := h.derive([]byte(password), salt, p.Iterations, p.Memory, p.Parallelism, keyLen)
	return encodeHash(p, salt, key), nil
}

// verify reports whether password matches encoded, and whether encoded
// was made with parameters other than the current ones (so it should be
// replaced now that the password is known).
func (h *hasher) verify(ctx context.Context, password, encoded string) (ok, stale bool, err error) {
	p, salt, want, err := decodeHash(encoded)
	if err != nil {
		return false, false, err
	}
	release, err := h.limiter.acquire(ctx)
	if err != nil {
		return false, false, err
	}
	defer release()
	got := h.derive([]byte(password), salt, p.Iterations, p.Memory, p.Parallelism, uint32(len(want)))
	ok = subtle.ConstantTimeCompare(got, want) == 1
	stale = p != h.params || len(salt) != saltLen || len(want) != keyLen
	return ok, stale, nil
}

var b64 = base64.RawStdEncoding

func encodeHash(p Argon2Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Iterations, p.Parallelism, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// decodeHash parses an encoded argon2id hash strictly, within the bounds
// above.
func decodeHash(encoded string) (p Argon2Params, salt, key []byte, err error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, errBadHash
	}
	fields := strings.Split(parts[3], ",")
	if len(fields) != 3 {
		return p, nil, nil, errBadHash
	}
	var vals [3]uint64
	for i, prefix := range []string{"m=", "t=", "p="} {
		s, ok := strings.CutPrefix(fields[i], prefix)
		if !ok {
			return p, nil, nil, errBadHash
		}
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return p, nil, nil, errBadHash
		}
		vals[i] = v
	}
	if vals[0] < 8*vals[2] || vals[0] > maxArgon2Memory || vals[1] < 1 || vals[1] > maxArgon2Iterations ||
		vals[2] < 1 || vals[2] > maxArgon2Parallelism {
		return p, nil, nil, errBadHash
	}
	p = Argon2Params{Memory: uint32(vals[0]), Iterations: uint32(vals[1]), Parallelism: uint8(vals[2])}
	if salt, err = b64.Strict().DecodeString(parts[4]); err != nil || len(salt) < 8 || len(salt) > 64 {
		return p, nil, nil, errBadHash
	}
	if key, err = b64.Strict().DecodeString(parts[5]); err != nil || len(key) < 16 || len(key) > 128 {
		return p, nil, nil, errBadHash
	}
	return p, salt, key, nil
}
