package resilience

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// population is the users a scenario drives load with, and every token
// they were given.
type population struct {
	gw     *Client
	keys   *Keys
	forger *Forger

	mu       sync.Mutex
	users    []*User
	admin    *User
	latest   map[*User]*Token
	history  []*Token // of the users, not the admin
	adminTok *Token
}

// newPopulation registers n users through the gateway and logs them and
// the admin in.
func newPopulation(t testing.TB, s *Stack, n int, keys *Keys) *population {
	t.Helper()
	f, err := NewForger()
	if err != nil {
		t.Fatal(err)
	}
	p := &population{
		gw: NewAPIClient(s.URL), keys: keys, forger: f,
		admin:  &User{Name: AdminName, Password: s.AdminPassword},
		latest: map[*User]*Token{},
	}
	ctx := context.Background()
	for i := range n {
		u := NewUser(fmt.Sprintf("user%d", i))
		if err := p.gw.Register(ctx, u); err != nil {
			t.Fatal(err)
		}
		p.users = append(p.users, u)
	}
	if err := p.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// refresh logs every user and the admin in again.
func (p *population) refresh(ctx context.Context) error {
	for _, u := range append(slices.Clone(p.users), p.admin) {
		tok, err := p.gw.Login(ctx, u)
		if err != nil {
			return fmt.Errorf("login %s: %w", u.Name, err)
		}
		if u.ID == "" {
			u.ID = tok.Sub
		}
		p.mu.Lock()
		if u == p.admin {
			p.adminTok = tok
		} else {
			p.latest[u] = tok
			p.history = append(p.history, tok)
		}
		p.mu.Unlock()
	}
	return nil
}

// refreshEvery logs everyone in every d until ctx ends, reporting
// failures to errs (logins may fail while a fault is injected; that is
// counted by the scenario, not here).
func (p *population) refreshEvery(ctx context.Context, d time.Duration, errs func(error)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.refresh(ctx); err != nil && ctx.Err() == nil {
				errs(err)
			}
		}
	}
}

// token returns a user's token: usually the latest of a random user,
// sometimes any a user was ever given (so expired and withdrawn tokens
// keep coming).
func (p *population) token() *Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rand.IntN(10) < 3 {
		return p.history[rand.IntN(len(p.history))]
	}
	return p.latest[p.users[rand.IntN(len(p.users))]]
}

// tokenOf returns u's latest token.
func (p *population) tokenOf(u *User) *Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latest[u]
}

func (p *population) admins() *Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.adminTok
}

func (p *population) victim() *User {
	return p.users[rand.IntN(len(p.users))]
}

// get returns a GET of path through the gateway with hdr.
func (p *population) get(path string, hdr http.Header) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, p.gw.Base+path, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	return req
}

// tokenCheck is a GET /books with tok, judged by the key timeline.
func (p *population) tokenCheck(kind string, tok *Token) *Request {
	return &Request{
		Kind:   kind,
		HTTP:   p.get("/books?limit=1", BearerHeader(tok.Raw)),
		Expect: func(sent, done time.Time) Expect { return p.keys.Expect(tok, sent, done) },
	}
}

func expect(e Expect) func(sent, done time.Time) Expect {
	return func(time.Time, time.Time) Expect { return e }
}

// attack returns one of the requests that must never pass: a token
// signed by a key the issuer never had (under a real kid, or its own),
// an identity header smuggled without a token, and a user's valid token
// on the admin route.
func (p *population) attack(realKid string) *Request {
	switch rand.IntN(4) {
	case 0:
		return &Request{Kind: "forged-kid", HTTP: p.get("/books", BearerHeader(p.forger.Forge(p.victim().ID, realKid))), Expect: expect(ExpectDeny)}
	case 1:
		return &Request{Kind: "forged-key", HTTP: p.get("/users", BearerHeader(p.forger.Forge(p.victim().ID, ""))), Expect: expect(ExpectDeny)}
	case 2:
		return &Request{Kind: "smuggled-id", HTTP: p.get("/books", IdentityHeader(p.victim().ID, "admin", "user")), Expect: expect(ExpectDeny)}
	default:
		tok := p.token()
		return &Request{Kind: "user-on-admin", HTTP: p.get("/users", BearerHeader(tok.Raw)), Expect: expect(ExpectDeny)}
	}
}

// adminCheck is a GET /users with the admin's current token.
func (p *population) adminCheck() *Request {
	tok := p.admins()
	return &Request{
		Kind:   "admin",
		HTTP:   p.get("/users?limit=1", BearerHeader(tok.Raw)),
		Expect: func(sent, done time.Time) Expect { return p.keys.Expect(tok, sent, done) },
	}
}

// usage samples every process's resources at the start of a scenario's
// load, and checks at the end that they stayed bounded.
type usage struct {
	s      *Stack
	before map[*Proc]Usage
}

func sampleUsage(t testing.TB, s *Stack) *usage {
	t.Helper()
	u := &usage{s: s, before: map[*Proc]Usage{}}
	for _, p := range s.Procs() {
		v, err := s.Usage(context.Background(), p)
		if err != nil {
			t.Fatalf("sample %s: %v", p.Name, err)
		}
		u.before[p] = v
	}
	return u
}

// check samples again and fails t when a process's goroutines or
// resident memory more than doubled plus a margin: growth without bound
// shows as that within a soak, while warm-up (caches, connection pools,
// the Go heap finding its size) stays within it.
func (u *usage) check(t testing.TB) {
	t.Helper()
	for _, p := range u.s.Procs() {
		if !p.Running() {
			continue
		}
		after, err := u.s.Usage(context.Background(), p)
		if err != nil {
			t.Errorf("sample %s: %v", p.Name, err)
			continue
		}
		before := u.before[p]
		t.Logf("%s: RSS %d -> %d MiB, goroutines %d -> %d, threads %d -> %d", p.Name,
			before.RSS>>20, after.RSS>>20, before.Goroutines, after.Goroutines, before.Threads, after.Threads)
		if after.RSS > 2*before.RSS+(128<<20) {
			t.Errorf("%s RSS grew from %d to %d MiB", p.Name, before.RSS>>20, after.RSS>>20)
		}
		if before.Goroutines >= 0 && after.Goroutines > 2*before.Goroutines+200 {
			t.Errorf("%s goroutines grew from %d to %d", p.Name, before.Goroutines, after.Goroutines)
		}
	}
}

// waitFor polls cond until it holds or limit passes.
func waitFor(t testing.TB, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// noCrashes fails t if a stack process exited on its own.
func noCrashes(t testing.TB, s *Stack) {
	t.Helper()
	if c := s.Crashes(); len(c) > 0 {
		t.Errorf("processes exited unasked: %v", c)
	}
}
