package issuer

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// throttles are the implementations of loginThrottle: each scenario must
// behave the same on all of them.
func throttles(t *testing.T, c Throttle) map[string]loginThrottle {
	return map[string]loginThrottle{
		"memory":          memThrottle{newThrottle(c)},
		"shared/sqlite":   sharedThrottle{db: openStore(t, dialects[0].dsn(t)), cfg: c},
		"shared/postgres": sharedThrottle{db: openStore(t, dialects[1].dsn(t)), cfg: c},
	}
}

func TestLoginThrottleImplementations(t *testing.T) {
	ctx := context.Background()
	type step struct {
		op            string // fail, ok, wait
		account, addr string
		at            time.Duration
		want          time.Duration // for wait
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"pair backoff doubles from the limit", []step{
			{"fail", "alain", "a1", 0, 0}, {"fail", "alain", "a1", 0, 0}, {"fail", "alain", "a1", 0, 0}, {"fail", "alain", "a1", 0, 0},
			{"wait", "alain", "a1", 0, 0},
			{"fail", "alain", "a1", 0, 0}, {"wait", "alain", "a1", 0, time.Second},
			{"fail", "alain", "a1", time.Second, 0}, {"wait", "alain", "a1", time.Second, 2 * time.Second},
			{"wait", "alain", "other", time.Second, 0},
		}},
		{"success clears the pair", []step{
			{"fail", "alain", "a1", 0, 0}, {"fail", "alain", "a1", 0, 0}, {"fail", "alain", "a1", 0, 0}, {"fail", "alain", "a1", 0, 0},
			{"ok", "alain", "a1", 0, 0}, {"fail", "alain", "a1", 0, 0}, {"wait", "alain", "a1", 0, 0},
		}},
		{"a quiet hour forgets", []step{
			{"fail", "alain", "a1", 0, 0}, {"fail", "alain", "a1", 0, 0}, {"fail", "alain", "a1", 0, 0}, {"fail", "alain", "a1", 0, 0},
			{"fail", "alain", "a1", time.Hour, 0}, {"wait", "alain", "a1", time.Hour, 0},
		}},
	}
	// The account limit spread over addresses, and the owner's usual
	// address exempt from it.
	spread := []step{{"ok", "alain", "home", 0, 0}}
	for i := range 20 {
		spread = append(spread, step{"fail", "alain", fmt.Sprintf("x%d", i), 0, 0})
	}
	spread = append(spread, step{"wait", "alain", "new", 0, time.Second}, step{"wait", "alain", "home", 0, 0})
	tests = append(tests, struct {
		name  string
		steps []step
	}{"account limit, usual address exempt", spread})

	for _, tt := range tests {
		for name, th := range throttles(t, DefaultThrottle()) {
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				for i, st := range tt.steps {
					now := t0.Add(st.at)
					var err error
					switch st.op {
					case "fail":
						err = th.failure(ctx, st.account, st.addr, now)
					case "ok":
						err = th.success(ctx, st.account, st.addr, now)
					case "wait":
						var w time.Duration
						w, err = th.wait(ctx, st.account, st.addr, now)
						if err == nil && w != st.want {
							t.Fatalf("step %d: wait(%s, %s) = %v, want %v", i, st.account, st.addr, w, st.want)
						}
					}
					if err != nil {
						t.Fatalf("step %d %s: %v", i, st.op, err)
					}
				}
			})
		}
	}
}

// TestThrottleSharedAcrossReplicas: two issuers on one PostgreSQL count
// failures together, so alternating between them buys no extra guesses.
func TestThrottleSharedAcrossReplicas(t *testing.T) {
	dsn := dialects[1].dsn(t)
	a := newEnv(t, func(c *Config) { c.DB = dsn; c.Throttle.PairLimit = 3 })
	b := newEnv(t, func(c *Config) { c.DB = dsn; c.Throttle.PairLimit = 3 })
	a.mustRegister(t, "alain", goodPassword)
	login := func(e *testEnv) int {
		return e.do(t, request{method: "POST", path: "/login", user: "alain", pass: "wrong password!", remote: "192.0.2.9:4000"}).status
	}
	for i, e := range []*testEnv{a, b, a} {
		if got := login(e); got != http.StatusUnauthorized {
			t.Fatalf("failed login %d = %d, want 401", i+1, got)
		}
	}
	for name, e := range map[string]*testEnv{"replica a": a, "replica b": b} {
		if got := login(e); got != http.StatusTooManyRequests {
			t.Errorf("login on %s after 3 failures spread over two replicas = %d, want 429", name, got)
		}
	}
}
