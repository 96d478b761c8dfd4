package issuer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// errNoSigningKey means no key can sign right now.
var errNoSigningKey = errors.New("no signing key available")

// signingKey is one key the keyring knows: loaded from the directory
// (private set) or, once removed from it, only its public part from the
// database until it retires.
type signingKey struct {
	kid         string
	alg         jwa.SignatureAlgorithm
	private     jwk.Key // nil when the file is gone
	public      jwk.Key
	file        string
	firstSeen   time.Time
	signedUntil time.Time // latest exp of a token it signed, known to any replica
}

// keyring holds the signing keys of a key directory and decides which
// one signs and which are published.
//
// The rules, all measured with the injected clock:
//
//   - A key file that appears is published at once, and recorded in the
//     database with the time it was first seen (by any replica; a
//     restart does not reset it).
//   - A key of the configured algorithm becomes active delay after it was
//     first seen, so verifiers have refreshed their JWKS caches before
//     they meet a token it signed. The most recently seen active key
//     signs.
//   - When no key is active (a fresh deployment, or every old key was
//     removed at once), the key seen first signs at once instead:
//     refusing every login would be worse, and a verifier meeting an
//     unknown kid refetches the JWKS.
//   - A key whose file is removed stops signing at once and stays
//     published, from its stored public part, until retireGrace after the
//     latest expiry of a token it signed; a removed key that never
//     signed is withdrawn at once.
//
// Files named with a leading dot are skipped: that covers the ..data
// symlink and timestamped directories of a mounted Kubernetes Secret,
// whose key files are symlinks through ..data and are followed.
type keyring struct {
	dir    string
	alg    jwa.SignatureAlgorithm
	delay  time.Duration
	grace  time.Duration
	now    func() time.Time
	rows   keyRows
	log    *slog.Logger
	events func(kind string) // metrics hook

	reloadMu sync.Mutex // one reload at a time

	mu      sync.Mutex
	keys    map[string]*signingKey
	files   map[string]loadedKey // kid -> key file, as of the last scan
	digest  [sha256.Size]byte    // of the directory contents at the last scan
	scanned bool
	dirty   map[string]bool // kids whose signedUntil is not yet stored
	signing string          // kid that signed last, for logging changes
	cache   jwksCache
}

// jwksCache is the serialized JWKS for one set of published kids.
type jwksCache struct {
	kids string
	body []byte
	etag string
}

func newKeyring(dir string, alg jwa.SignatureAlgorithm, delay, grace time.Duration, now func() time.Time, rows keyRows, log *slog.Logger) *keyring {
	return &keyring{
		dir: dir, alg: alg, delay: delay, grace: grace, now: now, rows: rows, log: log,
		events: func(string) {},
		keys:   map[string]*signingKey{},
		files:  map[string]loadedKey{},
		dirty:  map[string]bool{},
	}
}

// dirFile is one key file as read from the directory.
type dirFile struct {
	name string
	data []byte
	err  error // why data could not be read
}

// errKeyFileTooLarge is a file in the key directory too large to be a key.
var errKeyFileTooLarge = errors.New("file is larger than a key file can be")

// readKeyDir reads every candidate key file of dir, in name order.
func readKeyDir(dir string) ([]dirFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read key directory: %w", err)
	}
	var files []dirFile
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		fi, err := os.Stat(path) // follows the Secret's symlinks
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // removed while we looked
			}
			return nil, fmt.Errorf("read key file: %w", err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		data, err := readLimited(path, maxKeyFileSize)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case errors.Is(err, errKeyFileTooLarge):
			files = append(files, dirFile{name: e.Name(), err: err})
		case err != nil:
			return nil, fmt.Errorf("read key file: %w", err)
		default:
			files = append(files, dirFile{name: e.Name(), data: data})
		}
	}
	return files, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w (%d bytes)", errKeyFileTooLarge, limit)
	}
	return data, nil
}

// loadedKey is a key file parsed at the last scan.
type loadedKey struct {
	keyPair
	file string
}

// parseFiles parses the key files, skipping (and logging) the ones that
// are not usable keys and later duplicates of a key.
func (kr *keyring) parseFiles(files []dirFile) map[string]loadedKey {
	loaded := map[string]loadedKey{}
	for _, f := range files {
		err := f.err
		var kp keyPair
		if err == nil {
			kp, err = parseKeyPEM(f.data)
		}
		if err != nil {
			kr.log.Warn("skipping key file", "file", f.name, "err", err)
			kr.events("invalid_file")
			continue
		}
		if prev, dup := loaded[kp.kid]; dup {
			kr.log.Warn("skipping duplicate key file", "file", f.name, "same_as", prev.file, "kid", kp.kid)
			continue
		}
		loaded[kp.kid] = loadedKey{keyPair: kp, file: f.name}
	}
	return loaded
}

// reload rescans the directory (parsing it again only when its contents
// changed), records keys seen for the first time, stores this replica's
// use of keys, merges what every replica recorded, and forgets retired
// keys. On error the previous state stays in force.
func (kr *keyring) reload(ctx context.Context) error {
	kr.reloadMu.Lock()
	defer kr.reloadMu.Unlock()
	files, err := readKeyDir(kr.dir)
	if err != nil {
		return err
	}
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%d:%s%d:%v:", len(f.name), f.name, len(f.data), f.err)
		h.Write(f.data)
	}
	var digest [sha256.Size]byte
	h.Sum(digest[:0])

	kr.mu.Lock()
	loaded := kr.files
	changed := !kr.scanned || digest != kr.digest
	kr.mu.Unlock()
	if changed {
		loaded = kr.parseFiles(files)
	}

	// Store this replica's use of keys before reading everyone's back.
	if err := kr.flush(ctx); err != nil {
		return err
	}
	rows, err := kr.rows.all(ctx)
	if err != nil {
		return err
	}
	added := false
	for kid, lk := range loaded {
		if slices.ContainsFunc(rows, func(r keyRow) bool { return r.kid == kid }) {
			continue
		}
		pub, err := json.Marshal(lk.public)
		if err != nil {
			return fmt.Errorf("encode public key %s: %w", kid, err)
		}
		if err := kr.rows.add(ctx, keyRow{kid: kid, alg: lk.alg.String(), publicJWK: string(pub), firstSeen: kr.now()}); err != nil {
			return err
		}
		added = true
	}
	if added { // another replica may have recorded it first, earlier
		if rows, err = kr.rows.all(ctx); err != nil {
			return err
		}
	}

	now := kr.now()
	kr.mu.Lock()
	next := map[string]*signingKey{}
	var retired []string
	for _, r := range rows {
		k := &signingKey{kid: r.kid, firstSeen: r.firstSeen, signedUntil: r.signedUntil}
		if old := kr.keys[r.kid]; old != nil && old.signedUntil.After(k.signedUntil) {
			k.signedUntil = old.signedUntil // signed here since the store above
		}
		if lk, ok := loaded[r.kid]; ok {
			k.alg, k.private, k.public, k.file = lk.alg, lk.private, lk.public, lk.file
		} else {
			if !now.Before(k.signedUntil.Add(kr.grace)) {
				retired = append(retired, r.kid)
				continue
			}
			pub, err := parsePublicJWK(r.publicJWK)
			if err != nil {
				kr.log.Error("stored public key is unusable; withdrawing it", "kid", r.kid, "err", err)
				continue
			}
			k.alg, k.public = jwa.SignatureAlgorithm(r.alg), pub
		}
		next[r.kid] = k
	}
	for kid, k := range next {
		if old, ok := kr.keys[kid]; !ok {
			kr.log.Info("signing key published", "kid", kid, "alg", k.alg.String(), "file", k.file, "active_at", k.firstSeen.Add(kr.delay))
		} else if old.private != nil && k.private == nil {
			kr.log.Info("signing key file removed; key stays published until its tokens expire", "kid", kid, "until", k.signedUntil.Add(kr.grace))
		}
	}
	for kid := range kr.keys {
		if _, ok := next[kid]; !ok {
			kr.log.Info("signing key withdrawn from the JWKS", "kid", kid)
		}
	}
	kr.keys = next
	kr.files = loaded
	kr.digest = digest
	kr.scanned = true
	kr.mu.Unlock()

	// Forgetting retired keys can wait for the next reload if it fails.
	for _, kid := range retired {
		if err := kr.rows.remove(ctx, kid); err != nil {
			return err
		}
	}
	return nil
}

// flush stores in the database how long each key this replica signed
// with must stay published, so other replicas and later restarts keep it.
func (kr *keyring) flush(ctx context.Context) error {
	kr.mu.Lock()
	pending := map[string]time.Time{}
	for kid := range kr.dirty {
		if k := kr.keys[kid]; k != nil {
			pending[kid] = k.signedUntil
		}
	}
	kr.mu.Unlock()
	for kid, t := range pending {
		if err := kr.rows.extendSignedUntil(ctx, kid, t); err != nil {
			return err
		}
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	for kid, t := range pending {
		if k := kr.keys[kid]; k == nil || !k.signedUntil.After(t) {
			delete(kr.dirty, kid)
		}
	}
	return nil
}

// parsePublicJWK parses a stored public key, refusing anything private.
func parsePublicJWK(s string) (jwk.Key, error) {
	k, err := jwk.ParseKey([]byte(s))
	if err != nil {
		return nil, err
	}
	if private, err := jwk.IsPrivateKey(k); err != nil || private {
		return nil, errors.New("not a public key")
	}
	return k, nil
}

// signer returns the key that signs at now.
func (kr *keyring) signer(now time.Time) (*signingKey, error) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	return kr.signerLocked(now)
}

func (kr *keyring) signerLocked(now time.Time) (*signingKey, error) {
	var active, first *signingKey
	for _, k := range kr.keys {
		if k.private == nil || k.alg != kr.alg {
			continue
		}
		if first == nil || k.firstSeen.Before(first.firstSeen) || (k.firstSeen.Equal(first.firstSeen) && k.kid < first.kid) {
			first = k
		}
		if now.Before(k.firstSeen.Add(kr.delay)) {
			continue
		}
		if active == nil || k.firstSeen.After(active.firstSeen) || (k.firstSeen.Equal(active.firstSeen) && k.kid > active.kid) {
			active = k
		}
	}
	early := active == nil && first != nil
	if early {
		active = first
	}
	if active == nil {
		return nil, fmt.Errorf("%w: no %s key in %s", errNoSigningKey, kr.alg, kr.dir)
	}
	if active.kid != kr.signing {
		kr.log.Info("signing with key", "kid", active.kid, "alg", active.alg.String(), "file", active.file,
			"before_activation_delay", early)
		kr.signing = active.kid
	}
	return active, nil
}

// sign returns the key to sign a token that expires at exp, and records
// that it did, so the key outlives the token in the JWKS.
func (kr *keyring) sign(now, exp time.Time) (kid string, alg jwa.SignatureAlgorithm, private jwk.Key, err error) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	k, err := kr.signerLocked(now)
	if err != nil {
		return "", "", nil, err
	}
	if exp.After(k.signedUntil) {
		k.signedUntil = exp
		kr.dirty[k.kid] = true
	}
	return k.kid, k.alg, k.private, nil
}

// published returns the keys in the JWKS at now, oldest first.
func (kr *keyring) publishedLocked(now time.Time) []*signingKey {
	var out []*signingKey
	for _, k := range kr.keys {
		if k.private == nil && !now.Before(k.signedUntil.Add(kr.grace)) {
			continue
		}
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b *signingKey) int {
		if c := a.firstSeen.Compare(b.firstSeen); c != 0 {
			return c
		}
		return strings.Compare(a.kid, b.kid)
	})
	return out
}

// algs returns the algorithms of the published keys.
func (kr *keyring) algs(now time.Time) []string {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	var out []string
	for _, k := range kr.publishedLocked(now) {
		if !slices.Contains(out, k.alg.String()) {
			out = append(out, k.alg.String())
		}
	}
	if !slices.Contains(out, kr.alg.String()) {
		out = append(out, kr.alg.String())
	}
	slices.Sort(out)
	return out
}

// jwks returns the JSON Web Key Set published at now and its strong
// ETag (a hash of the body).
func (kr *keyring) jwks(now time.Time) (body []byte, etag string, err error) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	keys := kr.publishedLocked(now)
	var ids strings.Builder
	for _, k := range keys {
		ids.WriteString(k.kid)
		ids.WriteByte(',')
	}
	if kr.cache.body != nil && kr.cache.kids == ids.String() {
		return kr.cache.body, kr.cache.etag, nil
	}
	set := jwk.NewSet()
	for _, k := range keys {
		if err := set.AddKey(k.public); err != nil {
			return nil, "", fmt.Errorf("build JWKS: %w", err)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if err := enc.Encode(set); err != nil {
		return nil, "", fmt.Errorf("encode JWKS: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	kr.cache = jwksCache{kids: ids.String(), body: buf.Bytes(), etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`}
	return kr.cache.body, kr.cache.etag, nil
}

// counts returns the number of published keys and whether a key can
// sign, for metrics and readiness.
func (kr *keyring) counts(now time.Time) (published int, canSign bool) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	_, err := kr.signerLocked(now)
	return len(kr.publishedLocked(now)), err == nil
}

// poll reloads every interval until ctx ends, logging a failure once
// until it changes or clears.
func (kr *keyring) poll(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, interval*4)
		err := kr.reload(rctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			kr.events("reload_error")
			if err.Error() != lastErr {
				kr.log.Error("reload signing keys; keeping the previous set", "err", err)
				lastErr = err.Error()
			}
		case err == nil && lastErr != "":
			kr.log.Info("signing keys reload recovered")
			lastErr = ""
		}
	}
}
