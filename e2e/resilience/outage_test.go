package resilience

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestIssuerOutage kills the issuer under load for longer than authz's
// JWKS refresh interval (several failed refreshes), then starts it
// again. Valid tokens must keep passing from the cached key set, logins
// must fail at once with 503 from the gateway rather than hang, and
// after the restart logins must work again with nothing else restarted.
//
// The long form also freezes the issuer (SIGSTOP) instead: connections
// are accepted but never answered, so a login waits for the gateway's
// route timeout. That is bounded, but it is not "at once"; the test
// measures it rather than asserting 503.
func TestIssuerOutage(t *testing.T) {
	s := StartStack(t, Config{Bin: tollgateBin(t), Dir: t.TempDir(), TokenTTL: 30 * time.Minute})
	keys := &Keys{Bound: s.RefreshBound(), Leeway: s.Config.Leeway}
	pop := newPopulation(t, s, 4, keys)
	outage := pick(4*time.Second, 30*time.Second)
	if outage < 3*s.Config.MaxRefresh {
		t.Fatalf("outage %v is not longer than three refresh intervals (%v)", outage, s.Config.MaxRefresh)
	}
	ctx := context.Background()
	gatewayPID, authzPID := s.Gateway.PID(), s.Authz.PID()

	var mu sync.Mutex
	loginStatus := map[string]map[int]int{} // phase -> status -> count
	var slowestOutageLogin time.Duration
	d := &Driver{
		Workers:     pick(4, 8),
		MaxRequests: pick(300000, 3000000),
		Duration:    pick(90*time.Second, 10*time.Minute),
		Next: func(int) *Request {
			n := rand.IntN(100)
			switch {
			case n < 75:
				tok := pop.token()
				return pop.tokenCheck("valid", tok)
			case n < 85:
				u := pop.users[rand.IntN(len(pop.users))]
				return &Request{Kind: "login", HTTP: pop.gw.LoginRequest(u), Done: func(r Result) {
					mu.Lock()
					defer mu.Unlock()
					if loginStatus[r.Phase] == nil {
						loginStatus[r.Phase] = map[int]int{}
					}
					loginStatus[r.Phase][r.Status]++
					if r.Phase == "outage" {
						slowestOutageLogin = max(slowestOutageLogin, r.Done.Sub(r.Sent))
					}
				}}
			default:
				return pop.attack(pop.admins().Kid)
			}
		},
	}
	use := sampleUsage(t, s)
	d.SetPhase("before")
	d.Start(ctx)
	sleep(ctx, 2*time.Second)

	if err := s.Issuer.Kill(); err != nil {
		t.Fatal(err)
	}
	d.SetPhase("outage")
	sleep(ctx, outage)

	at := time.Now()
	d.SetPhase("restarting")
	if err := d.WaitStartedBefore(ctx, at); err != nil {
		t.Fatal(err)
	}
	d.SetPhase("recovery")
	restart := time.Now()
	if err := s.Issuer.Start(ctx); err != nil {
		t.Fatal(err)
	}
	u := pop.users[0]
	if err := Retry(ctx, 30*time.Second, func() error { _, err := pop.gw.Login(ctx, u); return err }); err != nil {
		t.Fatalf("login after the issuer came back: %v", err)
	}
	recovery := time.Since(restart)
	t.Logf("issuer restart to first login through the gateway: %v", recovery.Round(time.Millisecond))
	d.SetPhase("after")
	sleep(ctx, pick(2*time.Second, 10*time.Second))

	var frozenLogin time.Duration
	var frozenStatus int
	if soak {
		// Frozen issuer: measure how long a login waits, with checks
		// still running. The "after" requests are answered first.
		at = time.Now()
		d.SetPhase("freezing")
		if err := d.WaitStartedBefore(ctx, at); err != nil {
			t.Fatal(err)
		}
		d.SetPhase("frozen")
		if err := s.Issuer.Pause(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/login", nil)
		req.SetBasicAuth(u.Name, u.Password)
		resp, err := pop.gw.HTTP.Do(req)
		frozenLogin = time.Since(start)
		if err != nil {
			t.Errorf("login with the issuer frozen: %v", err)
		} else {
			frozenStatus = resp.StatusCode
			resp.Body.Close()
		}
		t.Logf("login with the issuer frozen: %d after %v", frozenStatus, frozenLogin.Round(time.Millisecond))
		if frozenStatus != http.StatusGatewayTimeout && frozenStatus != http.StatusServiceUnavailable {
			t.Errorf("login with the issuer frozen = %d, want 504 or 503", frozenStatus)
		}
		if err := s.Issuer.Resume(); err != nil {
			t.Fatal(err)
		}
		d.SetPhase("thawed")
		sleep(ctx, 5*time.Second)
	}
	tally := d.Stop()
	t.Logf("tally:\n%s", tally)
	use.check(t)
	noCrashes(t, s)

	if n := tally.Wrong(Filter{}); n != 0 {
		t.Errorf("%d wrong decisions, want 0", n)
	}
	for _, phase := range []string{"before", "outage", "recovery", "after"} {
		f := Filter{Kind: "valid", Phase: phase}
		if all, ok := tally.Requests(f), tally.Count(f, ExpectAllow, Allowed); all == 0 || ok != all {
			t.Errorf("valid tokens in phase %s: %d of %d allowed, want all (and some)", phase, ok, all)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("login statuses by phase: %v; slowest login during the outage %v", loginStatus, slowestOutageLogin.Round(time.Millisecond))
	for status, n := range loginStatus["outage"] {
		if status != http.StatusServiceUnavailable {
			t.Errorf("%d logins during the outage answered %d, want 503", n, status)
		}
	}
	if loginStatus["outage"][http.StatusServiceUnavailable] == 0 {
		t.Error("no login was tried during the outage")
	}
	if slowestOutageLogin > 5*time.Second {
		t.Errorf("a login during the outage took %v to fail, want it to fail at once", slowestOutageLogin)
	}
	for status, n := range loginStatus["after"] {
		if status != http.StatusOK {
			t.Errorf("%d logins after recovery answered %d, want 200", n, status)
		}
	}
	if s.Gateway.PID() != gatewayPID || s.Authz.PID() != authzPID {
		t.Error("the gateway or authz was restarted; recovery must not need it")
	}
	report.Add(Row{
		Scenario:   fmt.Sprintf("Issuer outage (killed for %v, %d JWKS refresh intervals)", outage, outage/s.Config.MaxRefresh),
		Workers:    d.Workers,
		Rate:       tally.Rate(),
		Duration:   tally.Elapsed,
		Requests:   tally.Requests(Filter{}),
		Wrong:      tally.Wrong(Filter{}),
		LostWrites: -1,
		Recovery:   recovery,
		Command:    command("TestIssuerOutage"),
		Failed:     t.Failed(),
	})
}
