package issuer

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func TestRegisterTutorialUserJSON(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.DB = d.dsn(t) })
			body, err := os.ReadFile("testdata/user.json")
			if err != nil {
				t.Fatal(err)
			}
			res := env.do(t, request{method: "POST", path: "/register", body: string(body)})
			if res.status != http.StatusCreated {
				t.Fatalf("POST /register user.json = %d %s, want 201", res.status, res.body)
			}
			var out struct{ ID, Name string }
			res.json(t, &out)
			if _, err := uuid.Parse(out.ID); err != nil {
				t.Errorf("id %q is not a UUID: %v", out.ID, err)
			}
			if out.Name != "alain" {
				t.Errorf("name = %q, want alain", out.Name)
			}
			if strings.Contains(string(res.body), "argon2") || strings.Contains(string(res.body), "password") {
				t.Errorf("register response %s mentions the password or its hash", res.body)
			}
			if got := env.storedHash(t, "alain"); !strings.HasPrefix(got, "$argon2id$v=19$m=19456,t=2,p=1$") {
				t.Errorf("stored hash %q is not a PHC argon2id string with the configured parameters", got)
			}
			env.mustLogin(t, "alain", "correct-horse-battery")
		})
	}
}

func TestRegisterRules(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "taken.user", goodPassword)
	for _, tc := range []struct {
		name, user, password string
		want                 int
		msg                  string // part of the error message
	}{
		{"minimal name", "abc", goodPassword, 201, ""},
		{"maximal name", strings.Repeat("a", 64), goodPassword, 201, ""},
		{"name with . _ -", "j.doe_2-x", goodPassword, 201, ""},
		{"8 multibyte characters", "unicode.pw", "éééééééé", 201, ""},
		{"1024-byte password", "long.pw", strings.Repeat("x", 1024), 201, ""},
		{"password with spaces kept", "spaces.pw", "  spaced  out  ", 201, ""},
		{"empty name", "", goodPassword, 400, "name is required"},
		{"short name", "ab", goodPassword, 400, "3 to 64"},
		{"long name", strings.Repeat("a", 65), goodPassword, 400, "3 to 64"},
		{"space in name", "a b c", goodPassword, 400, "only ASCII letters"},
		{"colon in name", "a:bc", goodPassword, 400, "only ASCII letters"},
		{"non-ASCII letter", "josé", goodPassword, 400, "only ASCII letters"},
		{"homoglyph", "аlain", goodPassword, 400, "only ASCII letters"}, // Cyrillic а
		{"zero-width space", "ala\u200bin", goodPassword, 400, "only ASCII letters"},
		{"leading dot", ".alain", goodPassword, 400, "start and end"},
		{"trailing dash", "alain-", goodPassword, 400, "start and end"},
		{"empty password", "nopw", "", 400, "password is required"},
		{"7-character password", "shortpw", "abcdefg", 400, "at least 8"},
		{"1025-byte password", "longpw", strings.Repeat("x", 1025), 400, "at most 1024"},
		{"common password", "common1", "password123", 400, "too common"},
		{"common password other case", "common2", "PassWord123", 400, "too common"},
		{"password is the name", "samesame", "SameSame", 400, "user name"},
		{"taken name", "taken.user", goodPassword, 409, "taken"},
		{"taken name other case", "TAKEN.user", goodPassword, 409, "taken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := env.userCount(t)
			res := env.register(t, tc.user, tc.password)
			if res.status != tc.want {
				t.Fatalf("register(%q, %d-byte password) = %d %s, want %d", tc.user, len(tc.password), res.status, res.body, tc.want)
			}
			after := env.userCount(t)
			if tc.want != 201 {
				if msg := res.message(t); !strings.Contains(msg, tc.msg) {
					t.Errorf("message = %q, want it to contain %q", msg, tc.msg)
				}
				if after != before {
					t.Errorf("users %d -> %d after a refused registration", before, after)
				}
			} else if after != before+1 {
				t.Errorf("users %d -> %d after a registration", before, after)
			}
		})
	}
}

// TestRegisterRace registers one name from many goroutines: the unique
// constraint, not the existence check, must decide.
func TestRegisterRace(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.DB = d.dsn(t) })
			const n = 6
			var wg sync.WaitGroup
			codes := make([]int, n)
			for i := range n {
				wg.Go(func() {
					// Different letter case: still one account.
					name := "racer"
					if i%2 == 1 {
						name = "RACER"
					}
					codes[i] = env.register(t, name, goodPassword).status
				})
			}
			wg.Wait()
			count := map[int]int{}
			for _, c := range codes {
				count[c]++
			}
			if diff := cmp.Diff(map[int]int{201: 1, 409: n - 1}, count); diff != "" {
				t.Errorf("status counts of %d concurrent registrations (-want +got):\n%s", n, diff)
			}
			if got := env.userCount(t); got != 1 {
				t.Errorf("users = %d, want 1", got)
			}
		})
	}
}

// TestRegisterRaceConstraint drives the insert directly past the
// existence check, as a lost race does.
func TestRegisterRaceConstraint(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			env := newEnv(t, func(c *Config) { c.DB = d.dsn(t) })
			ctx := context.Background()
			u := user{publicID: uuid.NewString(), name: "dup", passwordHash: "h", created: env.clock.Now()}
			if err := env.svc.users.create(ctx, &u); err != nil {
				t.Fatal(err)
			}
			u2 := user{publicID: uuid.NewString(), name: "DUP", passwordHash: "h", created: env.clock.Now()}
			if err := env.svc.users.create(ctx, &u2); err != errNameTaken {
				t.Fatalf("create(DUP after dup) = %v, want errNameTaken", err)
			}
		})
	}
}

func TestRegistrationDisabled(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.DisableRegistration = true })
	res := env.register(t, "alain", goodPassword)
	if res.status != http.StatusForbidden {
		t.Fatalf("register with registration off = %d %s, want 403", res.status, res.body)
	}
	if msg := res.message(t); !strings.Contains(msg, "registration is disabled") {
		t.Errorf("message = %q, want it to say registration is disabled", msg)
	}
	if n := env.userCount(t); n != 0 {
		t.Errorf("users = %d, want 0", n)
	}
}

func TestLoginToken(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	res := env.login(t, "alain", goodPassword)
	if res.status != http.StatusOK {
		t.Fatalf("login = %d %s, want 200", res.status, res.body)
	}
	var out tokenResponse
	res.json(t, &out)
	if out.Token == "" || out.Token != out.AccessToken {
		t.Errorf("token %q and access_token %q must be the same non-empty JWT", out.Token, out.AccessToken)
	}
	if out.TokenType != "Bearer" || out.ExpiresIn != 2700 {
		t.Errorf("token_type, expires_in = %q, %d; want Bearer, 2700", out.TokenType, out.ExpiresIn)
	}
	if cc := res.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	// Every login gets a new token, even within the same second.
	if again := env.mustLogin(t, "alain", goodPassword); again == out.Token {
		t.Error("second login returned the same token")
	}
	// The name is case-insensitive at login, as it is unique.
	env.mustLogin(t, "ALAIN", goodPassword)
	if strings.Contains(env.logs.String(), goodPassword) || strings.Contains(env.logs.String(), out.Token) ||
		strings.Contains(env.logs.String(), "$argon2id$") {
		t.Error("logs contain the password, the token or a hash")
	}
}

// TestLoginWithGET: the tutorial's clients log in with a plain GET and
// credentials in the URL (curl http://alain:secret@host/login).
func TestLoginWithGET(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	res := env.do(t, request{method: "GET", path: "/login", user: "alain", pass: goodPassword})
	if res.status != http.StatusOK {
		t.Fatalf("GET /login = %d %s, want 200", res.status, res.body)
	}
	var out tokenResponse
	res.json(t, &out)
	if out.Token == "" || res.header.Get("Cache-Control") != "no-store" {
		t.Errorf("GET /login = token %q, Cache-Control %q; want a token, no-store", out.Token, res.header.Get("Cache-Control"))
	}
	if res := env.do(t, request{method: "GET", path: "/login", user: "alain", pass: "wrong password"}); res.status != http.StatusUnauthorized {
		t.Errorf("GET /login with a wrong password = %d, want 401", res.status)
	}
}

// TestLoginEnumerationSafe: an unknown user and a wrong password get the
// same status, body and headers, and both cost one argon2id hash.
func TestLoginEnumerationSafe(t *testing.T) {
	env := newEnv(t)
	env.mustRegister(t, "alain", goodPassword)
	type answer struct {
		Status int
		Body   string
		Header http.Header
		Hashes int64
	}
	try := func(name, password string) answer {
		before := env.hashes.n.Load()
		res := env.login(t, name, password)
		h := res.header.Clone()
		h.Del("X-Request-Id") // unique per request by design
		return answer{res.status, string(res.body), h, env.hashes.n.Load() - before}
	}
	wrong := try("alain", "not the password")
	unknown := try("nobody", "not the password")
	if wrong.Status != http.StatusUnauthorized {
		t.Fatalf("login(wrong password) = %d, want 401", wrong.Status)
	}
	if got := wrong.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="tollgate"`) {
		t.Errorf("WWW-Authenticate = %q, want Basic realm=\"tollgate\"", got)
	}
	if diff := cmp.Diff(wrong, unknown); diff != "" {
		t.Errorf("login(unknown user) differs from login(wrong password) (-wrong +unknown):\n%s", diff)
	}
	if wrong.Hashes != 1 {
		t.Errorf("login(wrong password) ran %d hashes, want 1", wrong.Hashes)
	}
}

func TestLoginWithoutCredentials(t *testing.T) {
	env := newEnv(t)
	for _, tc := range []struct {
		name   string
		header string
	}{
		{"no header", ""},
		{"bearer instead of basic", "Bearer abc"},
		{"not base64", "Basic !!!"},
		{"no colon", "Basic YWxhaW4="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rq := request{method: "POST", path: "/login"}
			if tc.header != "" {
				rq.headers = map[string]string{"Authorization": tc.header}
			}
			res := env.do(t, rq)
			if res.status != http.StatusUnauthorized {
				t.Fatalf("login(%s) = %d %s, want 401", tc.name, res.status, res.body)
			}
			if got := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="tollgate"`) {
				t.Errorf("WWW-Authenticate = %q, want Basic realm=\"tollgate\"", got)
			}
		})
	}
}

// TestRehashOnParameterChange: a hash made with older parameters is
// replaced at the next successful login, and only then.
func TestRehashOnParameterChange(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			clock := newFakeClock()
			cfg := testConfig(t, clock)
			cfg.DB = d.dsn(t)
			old := start(t, cfg, clock)
			old.mustRegister(t, "alain", goodPassword)
			oldHash := old.storedHash(t, "alain")
			old.svc.Close()

			cfg.Argon2 = Argon2Params{Memory: MinArgon2Params.Memory, Iterations: 3, Parallelism: 1}
			env := start(t, cfg, clock)
			if res := env.login(t, "alain", "wrong password"); res.status != http.StatusUnauthorized {
				t.Fatalf("login(wrong password) = %d, want 401", res.status)
			}
			if got := env.storedHash(t, "alain"); got != oldHash {
				t.Fatalf("hash changed after a failed login: %q -> %q", oldHash, got)
			}
			before := env.hashes.n.Load()
			env.mustLogin(t, "alain", goodPassword)
			if n := env.hashes.n.Load() - before; n != 2 {
				t.Errorf("login with stale hash ran %d hashes, want 2 (verify + rehash)", n)
			}
			newHash := env.storedHash(t, "alain")
			if !strings.HasPrefix(newHash, "$argon2id$v=19$m=19456,t=3,p=1$") {
				t.Fatalf("hash after login = %q, want one with t=3", newHash)
			}
			before = env.hashes.n.Load()
			env.mustLogin(t, "alain", goodPassword)
			if n := env.hashes.n.Load() - before; n != 1 {
				t.Errorf("login with current hash ran %d hashes, want 1", n)
			}
			if got := env.storedHash(t, "alain"); got != newHash {
				t.Errorf("current hash was replaced again")
			}
		})
	}
}

// TestHashConcurrencyBound: with every hash slot busy and no room to
// wait, a login gets 503 with Retry-After at once instead of queueing.
func TestHashConcurrencyBound(t *testing.T) {
	env := newEnv(t, func(c *Config) {
		c.MaxConcurrentHashes = 1
		c.MaxQueuedHashes = 0 // no waiting room
	})
	env.mustRegister(t, "alain", goodPassword)
	release := make(chan struct{})
	entered := make(chan struct{})
	env.svc.hasher.derive = func(password, salt []byte, tm, mem uint32, th uint8, kl uint32) []byte {
		entered <- struct{}{}
		<-release
		return env.hashes.derive(password, salt, tm, mem, th, kl)
	}
	var wg sync.WaitGroup
	var first response
	wg.Go(func() { first = env.login(t, "alain", goodPassword) })
	<-entered
	res := env.login(t, "alain", goodPassword)
	close(release)
	wg.Wait()
	if res.status != http.StatusServiceUnavailable {
		t.Fatalf("login while the hasher is full = %d %s, want 503", res.status, res.body)
	}
	if res.header.Get("Retry-After") == "" {
		t.Error("503 has no Retry-After")
	}
	if first.status != http.StatusOK {
		t.Errorf("login holding the slot = %d, want 200", first.status)
	}
}

// TestHashQueueWaits: a request that finds the slots busy but room in
// the queue waits its turn instead of failing.
func TestHashQueueWaits(t *testing.T) {
	l := newLimiter(1, 1, time.Minute)
	release, err := l.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		r, err := l.acquire(context.Background())
		if err == nil {
			r()
		}
		got <- err
	}()
	for l.waiting.Load() == 0 {
		runtime.Gosched()
	}
	// The queue (1) is full now: the next one is refused at once.
	if _, err := l.acquire(context.Background()); err != errBusy {
		t.Errorf("acquire with a full queue = %v, want errBusy", err)
	}
	release()
	if err := <-got; err != nil {
		t.Errorf("queued acquire = %v, want a slot", err)
	}
}

func TestListUsers(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			clock := newFakeClock()
			cfg := testConfig(t, clock)
			cfg.DB = d.dsn(t)
			first := start(t, cfg, clock)
			ids := map[string]string{}
			for _, n := range []string{"carol", "alain", "boss", "bob"} {
				ids[n] = first.mustRegister(t, n, goodPassword+n)
			}
			first.svc.Close()
			// boss registered, then the operator made boss an admin.
			cfg.AdminUsers = []string{"Boss"}
			env := start(t, cfg, clock)
			admin := map[string]string{"X-User-Id": ids["boss"], "X-User-Name": "boss", "X-User-Roles": "admin,user"}
			for _, tc := range []struct {
				name    string
				headers map[string]string
				query   string
				want    int
			}{
				{"no identity", nil, "", 401},
				{"roles but no id", map[string]string{"X-User-Roles": "admin"}, "", 401},
				{"user", map[string]string{"X-User-Id": ids["bob"], "X-User-Roles": "user"}, "", 403},
				{"no roles", map[string]string{"X-User-Id": ids["bob"]}, "", 403},
				{"role that only contains admin", map[string]string{"X-User-Id": ids["bob"], "X-User-Roles": "administrator,user"}, "", 403},
				{"admin", admin, "", 200},
				{"admin with spaces", map[string]string{"X-User-Id": ids["boss"], "X-User-Roles": "user, admin"}, "", 200},
				{"limit 0", admin, "?limit=0", 400},
				{"limit 1001", admin, "?limit=1001", 400},
				{"limit not a number", admin, "?limit=x", 400},
				{"after too long", admin, "?after=" + strings.Repeat("a", 65), 400},
			} {
				t.Run(tc.name, func(t *testing.T) {
					res := env.do(t, request{method: "GET", path: "/users" + tc.query, headers: tc.headers})
					if res.status != tc.want {
						t.Fatalf("GET /users%s as %s = %d %s, want %d", tc.query, tc.name, res.status, res.body, tc.want)
					}
					if tc.want == 401 && !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
						t.Errorf("401 WWW-Authenticate = %q, want Bearer", res.header.Get("WWW-Authenticate"))
					}
				})
			}

			res := env.do(t, request{method: "GET", path: "/users", headers: admin})
			if strings.Contains(string(res.body), "argon2") || strings.Contains(strings.ToLower(string(res.body)), "password") ||
				strings.Contains(strings.ToLower(string(res.body)), "hash") {
				t.Fatalf("GET /users leaks password data: %s", res.body)
			}
			var got struct {
				Users []map[string]any
				Next  string
			}
			res.json(t, &got)
			var names []string
			for _, u := range got.Users {
				keys := make([]string, 0, len(u))
				for k := range u {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				if diff := cmp.Diff([]string{"created_at", "id", "name", "roles"}, keys); diff != "" {
					t.Errorf("user fields (-want +got):\n%s", diff)
				}
				name := u["name"].(string)
				names = append(names, name)
				if u["id"] != ids[name] {
					t.Errorf("%s id = %v, want %s", name, u["id"], ids[name])
				}
				wantRoles := []any{"user"}
				if name == "boss" {
					wantRoles = []any{"admin", "user"}
				}
				if diff := cmp.Diff(wantRoles, u["roles"]); diff != "" {
					t.Errorf("%s roles (-want +got):\n%s", name, diff)
				}
				if _, err := time.Parse(time.RFC3339, u["created_at"].(string)); err != nil {
					t.Errorf("%s created_at: %v", name, err)
				}
			}
			if diff := cmp.Diff([]string{"alain", "bob", "boss", "carol"}, names); diff != "" {
				t.Errorf("users (-want +got):\n%s", diff)
			}

			// Paging: two at a time.
			var paged []string
			after := ""
			for range 5 {
				res := env.do(t, request{method: "GET", path: "/users?limit=2&after=" + after, headers: admin})
				var page userList
				res.json(t, &page)
				for _, u := range page.Users {
					paged = append(paged, u.Name)
				}
				if page.Next == "" {
					break
				}
				after = page.Next
			}
			if diff := cmp.Diff(names, paged); diff != "" {
				t.Errorf("paged users (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAdminFromConfig(t *testing.T) {
	clock := newFakeClock()
	cfg := testConfig(t, clock)
	cfg.AdminName = "root"
	cfg.AdminPassword = "first-admin-password"
	env := start(t, cfg, clock)
	if roles := tokenRoles(t, env, env.mustLogin(t, "root", "first-admin-password")); !slices.Contains(roles, "admin") {
		t.Errorf("configured admin roles = %v, want admin", roles)
	}
	// Nobody can register the admin name, in any case.
	if res := env.register(t, "ROOT", goodPassword); res.status != http.StatusConflict {
		t.Errorf("register(ROOT) = %d, want 409", res.status)
	}
	env.svc.Close()

	// A restart with another password resets it; the account stays.
	cfg.AdminPassword = "second-admin-password"
	env2 := start(t, cfg, clock)
	if res := env2.login(t, "root", "first-admin-password"); res.status != http.StatusUnauthorized {
		t.Errorf("login(root, old password) = %d, want 401", res.status)
	}
	env2.mustLogin(t, "root", "second-admin-password")
	if n := env2.userCount(t); n != 1 {
		t.Errorf("users = %d, want 1", n)
	}

	// A listed admin that does not exist yet cannot be claimed by
	// registering it.
	env3 := newEnv(t, func(c *Config) { c.AdminUsers = []string{"alice"} })
	if res := env3.register(t, "alice", goodPassword); res.status != http.StatusConflict {
		t.Errorf("register(listed admin name) = %d, want 409", res.status)
	}
	env3.mustRegister(t, "bob", goodPassword)
	if roles := tokenRoles(t, env3, env3.mustLogin(t, "bob", goodPassword)); slices.Contains(roles, "admin") {
		t.Errorf("unlisted user roles = %v, want no admin", roles)
	}
}

func TestConfigRejected(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"weak argon2 memory", func(c *Config) { c.Argon2 = Argon2Params{Memory: 1024, Iterations: 2, Parallelism: 1} }},
		{"one argon2 iteration", func(c *Config) { c.Argon2 = Argon2Params{Memory: 19456, Iterations: 1, Parallelism: 1} }},
		{"unknown alg", func(c *Config) { c.SigningAlg = "HS256" }},
		{"relative issuer URL", func(c *Config) { c.IssuerURL = "issuer.test" }},
		{"issuer URL with query", func(c *Config) { c.IssuerURL = "https://issuer.test/?x=1" }},
		{"token TTL too short", func(c *Config) { c.TokenTTL = time.Second }},
		{"bad admin user name", func(c *Config) { c.AdminUsers = []string{"a b"} }},
		{"weak admin password", func(c *Config) { c.AdminPassword = "password" }},
		{"missing key directory", func(c *Config) { c.KeyDir = "/nonexistent/keys" }},
		{"negative trusted hops", func(c *Config) { c.TrustedHops = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			cfg := testConfig(t, clock)
			tc.mod(&cfg)
			svc, err := New(context.Background(), cfg, nil, nil)
			if err == nil {
				svc.Close()
				t.Fatalf("New(%s) succeeded, want an error", tc.name)
			}
		})
	}
}

func ExampleGenerateKeyPEM() {
	pemData, kid, err := GenerateKeyPEM(ES256)
	if err != nil {
		panic(err)
	}
	fmt.Println(strings.HasPrefix(string(pemData), "-----BEGIN PRIVATE KEY-----"), len(kid))
	// Output: true 43
}
