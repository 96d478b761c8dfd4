package resilience

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/pgtest"
)

// failoverProxy forwards each request to the first of its targets that
// answers, as a Kubernetes Service in front of issuer replicas would
// once the dead one is out of its endpoints.
type failoverProxy struct {
	mu      sync.Mutex
	targets []string
}

func (f *failoverProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	targets := slices.Clone(f.targets)
	f.mu.Unlock()
	for _, t := range targets {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, "http://"+t+r.URL.RequestURI(), nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			continue
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	w.WriteHeader(http.StatusBadGateway)
}

// session is one logged-in token under load.
type session struct {
	access    string
	revokedAt atomic.Int64 // unix nanoseconds when /revoke answered; 0: never
}

// revocationRun is what a scenario measured.
type revocationRun struct {
	latencies map[string][]time.Duration // per authz: revocation to first refusal
	requests  int
	wrong     []string
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}

// TestRevocationReachesEveryAuthz revokes tokens at random while clients
// use them through the gateway, and measures, for each revocation, the
// time until each authz first refuses the token (probing its
// forward-auth endpoint directly). Nothing revoked may pass after the
// bound (one feed interval plus one fetch), nothing valid may be refused.
// The second case runs two stacks (two issuers, two authz) on one
// PostgreSQL, with the authz following both issuers through a failover
// proxy, kills one issuer in the middle, restarts it and one authz at
// the end, and checks that nothing revoked comes back.
func TestRevocationReachesEveryAuthz(t *testing.T) {
	revocations := 8
	if soak {
		revocations = 60
	}
	for _, tc := range []struct {
		name     string
		postgres bool
	}{
		{"one issuer and one authz, SQLite", false},
		{"two issuers and two authz on PostgreSQL, an issuer killed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runRevocationScenario(t, tc.name, tc.postgres, revocations)
		})
	}
}

func runRevocationScenario(t *testing.T, name string, postgres bool, revocations int) {
	bin := tollgateBin(t)
	dir := t.TempDir()
	proxy := &failoverProxy{}
	var stacks []*Stack
	if postgres {
		db := pgtest.URL(t)
		for _, d := range []string{dir + "/a", dir + "/b"} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		srv := newLoopbackServer(t, proxy)
		a := StartStack(t, Config{Bin: bin, Dir: dir + "/a", IssuerDB: db, RevocationsURL: srv + "/revocations"})
		b := StartStack(t, Config{Bin: bin, Dir: dir + "/b", IssuerDB: db, RevocationsURL: srv + "/revocations", KeyDir: a.KeyDir})
		proxy.targets = []string{a.IssuerAddr, b.IssuerAddr}
		stacks = []*Stack{a, b}
	} else {
		stacks = []*Stack{StartStack(t, Config{Bin: bin, Dir: dir})}
	}
	s := stacks[0]
	bound := s.Config.RevocationsInterval + s.Config.FetchTimeout + 500*time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// Users and sessions: a third of the sessions are never revoked.
	api := NewAPIClient(s.URL)
	u := NewUser("rev")
	if err := api.Register(ctx, u); err != nil {
		t.Fatal(err)
	}
	nSessions := revocations * 3 / 2
	sessions := make([]*session, nSessions)
	for i := range sessions {
		access, err := passwordGrant(ctx, s.URL, u)
		if err != nil {
			t.Fatalf("password grant %d: %v", i, err)
		}
		sessions[i] = &session{access: access}
	}

	client := NewClient(16)
	get := func(base, tok string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", base, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	// Load through every gateway.
	var (
		mu   sync.Mutex
		run  = revocationRun{latencies: map[string][]time.Duration{}}
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	wrong := func(format string, args ...any) {
		mu.Lock()
		run.wrong = append(run.wrong, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	start := time.Now()
	for w := range 4 {
		wg.Go(func() {
			gw := stacks[w%len(stacks)].URL + "/books"
			for {
				select {
				case <-done:
					return
				default:
				}
				i := rand.IntN(len(sessions))
				ss := sessions[i]
				sent := time.Now()
				status, err := get(gw, ss.access)
				if err != nil {
					if ctx.Err() == nil {
						wrong("GET /books(session %d): %v", i, err)
					}
					continue
				}
				mu.Lock()
				run.requests++
				mu.Unlock()
				rev := ss.revokedAt.Load()
				switch {
				case rev == 0 && status != 200:
					wrong("GET /books(valid session %d) = %d, want 200", i, status)
				case rev != 0 && sent.After(time.Unix(0, rev).Add(bound)) && status == 200:
					wrong("GET /books(session %d, revoked %v before) = 200, want 401", i, sent.Sub(time.Unix(0, rev)))
				}
			}
		})
	}

	// The revoker, with a prober per authz for each revocation.
	var probes sync.WaitGroup
	killAt, restartAt := revocations/3, 2*revocations/3
	for r := range revocations {
		sleep(ctx, time.Duration(200+rand.IntN(500))*time.Millisecond)
		if postgres && r == killAt {
			if err := stacks[0].Issuer.Kill(); err != nil {
				t.Fatal(err)
			}
			t.Logf("issuer a killed after %d revocations", r)
		}
		if postgres && r == restartAt {
			if err := stacks[0].Issuer.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("issuer a restarted after %d revocations", r)
		}
		ss := sessions[r]
		via := stacks[r%len(stacks)]
		if !via.Issuer.Running() {
			via = stacks[1]
		}
		if err := revoke(ctx, via.URL, ss.access); err != nil {
			t.Fatalf("revoke %d through %s: %v", r, via.URL, err)
		}
		at := time.Now()
		ss.revokedAt.Store(at.UnixNano())
		for ai, st := range stacks {
			probes.Go(func() {
				name := fmt.Sprintf("authz %c", 'a'+ai)
				for time.Since(at) < 3*bound {
					status, err := forwardAuth(ctx, st.AuthzHTTPAddr, ss.access)
					if err == nil && status == 401 {
						mu.Lock()
						run.latencies[name] = append(run.latencies[name], time.Since(at))
						mu.Unlock()
						return
					}
					sleep(ctx, 10*time.Millisecond)
				}
				wrong("%s never refused revoked session %d within %v", name, r, 3*bound)
			})
		}
	}
	probes.Wait()
	close(done)
	wg.Wait()
	elapsed := time.Since(start)

	if postgres {
		// Nothing revoked comes back: a restarted authz reloads the list
		// from the feed, and both issuers' feeds are complete.
		if err := stacks[0].Authz.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		sleep(ctx, bound)
		for _, st := range stacks {
			for _, issuerAddr := range []string{stacks[0].IssuerAddr, stacks[1].IssuerAddr} {
				n, err := feedSize(ctx, issuerAddr)
				if err != nil || n < revocations {
					wrong("feed of issuer %s lists %d revoked tokens (%v), want at least %d", issuerAddr, n, err, revocations)
				}
			}
			for i, ss := range sessions[:revocations] {
				if status, err := forwardAuth(ctx, st.AuthzHTTPAddr, ss.access); err != nil || status != 401 {
					wrong("after restarts, authz %s: revoked session %d = %d (%v), want 401", st.AuthzHTTPAddr, i, status, err)
				}
			}
		}
	}

	var summary []string
	worst := time.Duration(0)
	for name, ls := range run.latencies {
		summary = append(summary, fmt.Sprintf("%s: p50 %v, p99 %v, max %v (%d revocations)", name,
			percentile(ls, .5).Round(time.Millisecond), percentile(ls, .99).Round(time.Millisecond), percentile(ls, 1).Round(time.Millisecond), len(ls)))
		worst = max(worst, percentile(ls, 1))
		if m := percentile(ls, 1); m > bound {
			wrong("%s: slowest revocation took %v, over the bound %v", name, m, bound)
		}
	}
	slices.Sort(summary)
	t.Logf("revocation to first refusal (feed interval %v, bound %v): %s; %d requests, %d wrong",
		s.Config.RevocationsInterval, bound, strings.Join(summary, "; "), run.requests, len(run.wrong))
	for _, w := range run.wrong[:min(len(run.wrong), 20)] {
		t.Error(w)
	}
	noCrashesExcept(t, stacks, postgres)
	report.Add(Row{
		Scenario: "revocation under load: " + name + " (worst " + worst.Round(time.Millisecond).String() + ")",
		Workers:  4, Rate: float64(run.requests) / elapsed.Seconds(), Duration: elapsed, Requests: run.requests,
		Wrong: len(run.wrong), LostWrites: -1, Recovery: -1,
		Command: "go test ./e2e/resilience -run 'TestRevocationReachesEveryAuthz'", Failed: t.Failed(),
	})
}

// noCrashesExcept fails t for process exits the scenario did not cause
// (the killed issuer's is one it did).
func noCrashesExcept(t *testing.T, stacks []*Stack, killedIssuer bool) {
	t.Helper()
	for i, st := range stacks {
		for _, p := range st.Procs() {
			if killedIssuer && i == 0 && (p == st.Issuer || p == st.Authz) {
				continue
			}
			for _, c := range p.Crashes() {
				t.Errorf("stack %d %s: %s", i, p.Name, c)
			}
		}
	}
}

func newLoopbackServer(t *testing.T, h http.Handler) string {
	t.Helper()
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Addr: addr, Handler: h}
	go srv.ListenAndServe()
	t.Cleanup(func() { srv.Close() })
	waitFor(t, "proxy listening", 5*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return "http://" + addr
}

// passwordGrant logs u in through the gateway's /token.
func passwordGrant(ctx context.Context, base string, u *User) (string, error) {
	form := url.Values{"grant_type": {"password"}, "client_id": {"tollgate-cli"}, "username": {u.Name}, "password": {u.Password}}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	err := Retry(ctx, 30*time.Second, func() error {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("POST /token = %d", resp.StatusCode)
		}
		return json.NewDecoder(resp.Body).Decode(&out)
	})
	return out.AccessToken, err
}

// revoke revokes tok through the gateway's /revoke.
func revoke(ctx context.Context, base, tok string) error {
	form := url.Values{"client_id": {"tollgate-cli"}, "token": {tok}}
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/revoke", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("POST /revoke = %d", resp.StatusCode)
	}
	return nil
}

// forwardAuth asks one authz directly whether tok passes.
func forwardAuth(ctx context.Context, addr, tok string) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/auth", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// feedSize counts the revoked tokens in an issuer's full feed.
func feedSize(ctx context.Context, addr string) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/revocations", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var f struct {
		Tokens []json.RawMessage `json:"tokens"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil {
		return 0, err
	}
	return len(f.Tokens), nil
}
