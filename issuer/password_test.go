package issuer

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

func testHasher(p Argon2Params) *hasher {
	return &hasher{params: p, derive: argon2.IDKey, limiter: newLimiter(2, 2, time.Second)}
}

func TestHashVerify(t *testing.T) {
	ctx := context.Background()
	h := testHasher(MinArgon2Params)
	enc, err := h.hash(ctx, goodPassword)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash = %q, want the PHC argon2id form with m=19456,t=2,p=1", enc)
	}
	if again, _ := h.hash(ctx, goodPassword); again == enc {
		t.Error("two hashes of one password are equal: no random salt")
	}
	for _, tc := range []struct {
		password  string
		ok, stale bool
		params    Argon2Params
	}{
		{goodPassword, true, false, MinArgon2Params},
		{goodPassword + " ", false, false, MinArgon2Params},
		{strings.ToUpper(goodPassword), false, false, MinArgon2Params},
		{"", false, false, MinArgon2Params},
		{goodPassword, true, true, Argon2Params{Memory: 32 * 1024, Iterations: 2, Parallelism: 1}},
		{goodPassword, true, true, Argon2Params{Memory: 19456, Iterations: 3, Parallelism: 1}},
		{goodPassword, true, true, Argon2Params{Memory: 19456, Iterations: 2, Parallelism: 2}},
	} {
		ok, stale, err := testHasher(tc.params).verify(ctx, tc.password, enc)
		if err != nil || ok != tc.ok || stale != tc.stale {
			t.Errorf("verify(%q) with params %+v = %v, %v, %v; want %v, %v, nil", tc.password, tc.params, ok, stale, err, tc.ok, tc.stale)
		}
	}
}

// TestVerifyUsesStoredParams: a hash verifies with the parameters it
// carries, whatever the current ones are.
func TestVerifyUsesStoredParams(t *testing.T) {
	ctx := context.Background()
	old, err := testHasher(Argon2Params{Memory: 19456, Iterations: 3, Parallelism: 1}).hash(ctx, goodPassword)
	if err != nil {
		t.Fatal(err)
	}
	ok, stale, err := testHasher(MinArgon2Params).verify(ctx, goodPassword, old)
	if !ok || !stale || err != nil {
		t.Errorf("verify(t=3 hash) with t=2 params = %v, %v, %v; want true, true, nil", ok, stale, err)
	}
}

func TestDecodeHashRejects(t *testing.T) {
	salt := "c2FsdHNhbHRzYWx0c2FsdA"
	key := "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U"
	for name, enc := range map[string]string{
		"empty":               "",
		"argon2i":             "$argon2i$v=19$m=19456,t=2,p=1$" + salt + "$" + key,
		"old version":         "$argon2id$v=16$m=19456,t=2,p=1$" + salt + "$" + key,
		"missing part":        "$argon2id$v=19$m=19456,t=2,p=1$" + salt,
		"extra part":          "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key + "$x",
		"params out of order": "$argon2id$v=19$t=2,m=19456,p=1$" + salt + "$" + key,
		"zero iterations":     "$argon2id$v=19$m=19456,t=0,p=1$" + salt + "$" + key,
		"absurd memory":       "$argon2id$v=19$m=4294967295,t=2,p=1$" + salt + "$" + key,
		"absurd iterations":   "$argon2id$v=19$m=19456,t=100000,p=1$" + salt + "$" + key,
		"zero parallelism":    "$argon2id$v=19$m=19456,t=2,p=0$" + salt + "$" + key,
		"memory below 8p":     "$argon2id$v=19$m=8,t=2,p=2$" + salt + "$" + key,
		"negative":            "$argon2id$v=19$m=-1,t=2,p=1$" + salt + "$" + key,
		"padded salt":         "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "==$" + key,
		"short salt":          "$argon2id$v=19$m=19456,t=2,p=1$YWI$" + key,
		"short key":           "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$YWI",
		"bcrypt":              "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
	} {
		if _, _, _, err := decodeHash(enc); err == nil {
			t.Errorf("decodeHash(%s) succeeded, want an error", name)
		}
	}
	if _, _, _, err := decodeHash("$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key); err != nil {
		t.Errorf("decodeHash(valid) = %v", err)
	}
}

func TestArgon2ParamsFloor(t *testing.T) {
	for _, p := range []Argon2Params{
		{Memory: 19455, Iterations: 2, Parallelism: 1},
		{Memory: 19456, Iterations: 1, Parallelism: 1},
		{Memory: 19456, Iterations: 2, Parallelism: 0},
		{Memory: 2 << 20, Iterations: 2, Parallelism: 1},
	} {
		if err := p.validate(); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", p)
		}
	}
	if err := MinArgon2Params.validate(); err != nil {
		t.Errorf("validate(MinArgon2Params) = %v", err)
	}
}

func TestCommonPasswordsLoaded(t *testing.T) {
	if len(commonPasswords) < 100 {
		t.Fatalf("%d common passwords loaded, want the embedded list", len(commonPasswords))
	}
	for pw := range commonPasswords {
		if len(pw) < MinPasswordChars {
			t.Errorf("common password %q is shorter than the minimum; the list should hold only ones length does not refuse", pw)
		}
	}
}

func BenchmarkHash(b *testing.B) {
	h := testHasher(MinArgon2Params)
	for b.Loop() {
		if _, err := h.hash(context.Background(), goodPassword); err != nil {
			b.Fatal(err)
		}
	}
}
