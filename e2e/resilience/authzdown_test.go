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

// TestAuthzDown kills authz under load, and separately freezes it
// (SIGSTOP: the kernel still accepts its connections, nothing answers,
// so every Check outlives the gateway's ext_authz timeout). In both
// windows no request may reach books or the issuer's /users, which is
// checked on the upstream side (the services' own request counters, and
// the books in the database), every protected request must get the
// filter's status_on_error (503), and the gateway must recover by itself
// once authz is back.
func TestAuthzDown(t *testing.T) {
	res := authzFaults(t, Config{Bin: tollgateBin(t), Dir: t.TempDir()}, true, pick(3*time.Second, 20*time.Second))
	for _, w := range res.windows {
		if w.reached != 0 {
			t.Errorf("authz %s: %d requests reached an upstream unchecked, want 0", w.name, w.reached)
		}
		if w.booksBefore != w.booksAfter {
			t.Errorf("authz %s: books changed from %d to %d while nothing could be checked", w.name, w.booksBefore, w.booksAfter)
		}
		if w.protected == 0 || w.status503 != w.protected {
			t.Errorf("authz %s: %d of %d protected requests answered 503, want all (and some)", w.name, w.status503, w.protected)
		}
		if w.slowest > 5*time.Second {
			t.Errorf("authz %s: a request took %v, want the ext_authz timeout to end it", w.name, w.slowest)
		}
	}
	if n := res.tally.Wrong(Filter{}); n != 0 {
		t.Errorf("%d wrong decisions, want 0", n)
	}
	for _, phase := range []string{"before", "recovered", "thawed"} {
		f := Filter{Phase: phase, Kind: "valid"}
		if all, ok := res.tally.Requests(f), res.tally.Count(f, ExpectAllow, Allowed); all == 0 || ok != all {
			t.Errorf("phase %s: %d of %d valid requests allowed, want all (and some)", phase, ok, all)
		}
	}
	report.Add(Row{
		Scenario:   fmt.Sprintf("authz killed, then frozen past the ext_authz timeout (%v each)", res.window),
		Workers:    res.workers,
		Rate:       res.tally.Rate(),
		Duration:   res.tally.Elapsed,
		Requests:   res.tally.Requests(Filter{}),
		Wrong:      res.tally.Wrong(Filter{}) + res.reached(),
		LostWrites: -1,
		Recovery:   res.recovery,
		Command:    command("TestAuthzDown"),
		Failed:     t.Failed(),
	})
}

// TestAuthzDownCatchesFailOpen runs the authz-killed window against a
// gateway set to failure_mode_allow, to show that the scenario catches a
// stack that fails open: requests reach books unchecked, and a smuggled
// identity header gets through.
func TestAuthzDownCatchesFailOpen(t *testing.T) {
	res := authzFaults(t, Config{Bin: tollgateBin(t), Dir: t.TempDir(), FailureModeAllow: true}, false, 3*time.Second)
	if res.reached() == 0 {
		t.Error("with failure_mode_allow, no request reached an upstream while authz was down; the scenario cannot see a fail-open gateway")
	}
	if res.tally.Wrong(Filter{Phase: "killed"}) == 0 {
		t.Error("with failure_mode_allow, no wrong decision while authz was down; the scenario cannot see a fail-open gateway")
	}
}

type authzWindow struct {
	name                    string
	reached                 int // API requests the upstreams counted in the window
	booksBefore, booksAfter int
	protected, status503    int
	slowest                 time.Duration
}

type authzResult struct {
	tally    *Tally
	workers  int
	window   time.Duration
	windows  []*authzWindow
	recovery time.Duration
}

func (r *authzResult) reached() int {
	n := 0
	for _, w := range r.windows {
		n += w.reached
	}
	return n
}

// authzFaults drives load through a stack while authz is killed for
// window and restarted, then (when frozen is set) paused for window and
// resumed, and measures each window.
func authzFaults(t *testing.T, cfg Config, frozen bool, window time.Duration) *authzResult {
	cfg.TokenTTL = 30 * time.Minute
	s := StartStack(t, cfg)
	keys := &Keys{Bound: s.RefreshBound(), Leeway: s.Config.Leeway}
	pop := newPopulation(t, s, 4, keys)
	ctx := context.Background()
	gatewayPID := s.Gateway.PID()
	booksDirect := NewAPIClient("http://" + s.BooksAddr)

	var mu sync.Mutex
	stats := map[string]*authzWindow{"killed": {name: "killed"}, "frozen": {name: "frozen"}}
	seq := 0
	d := &Driver{
		Workers:     pick(4, 8),
		MaxRequests: pick(300000, 3000000),
		Duration:    pick(90*time.Second, 10*time.Minute),
		Next: func(int) *Request {
			n := rand.IntN(100)
			var r *Request
			switch {
			case n < 50:
				tok := pop.token()
				r = pop.tokenCheck("valid", tok)
			case n < 65:
				tok := pop.token()
				mu.Lock()
				seq++
				b := NewBookInput(seq)
				mu.Unlock()
				req, _ := http.NewRequest(http.MethodPost, s.URL+"/books", jsonBody(b))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+tok.Raw)
				r = &Request{Kind: "write", HTTP: req, Expect: func(sent, done time.Time) Expect { return keys.Expect(tok, sent, done) }}
			case n < 75:
				r = pop.adminCheck()
			default:
				r = pop.attack(pop.admins().Kid)
			}
			r.Done = func(res Result) {
				mu.Lock()
				defer mu.Unlock()
				w := stats[res.Phase]
				if w == nil {
					return
				}
				w.protected++
				if res.Status == http.StatusServiceUnavailable {
					w.status503++
				}
				w.slowest = max(w.slowest, res.Done.Sub(res.Sent))
			}
			return r
		},
	}
	use := sampleUsage(t, s)
	d.SetPhase("before")
	d.Start(ctx)
	sleep(ctx, 2*time.Second)

	// upstream returns the API requests the issuer and books counted,
	// before and after listing the books stored (the listing is itself
	// requests to books), and how many books there are.
	upstream := func() (before, after, stored int) {
		t.Helper()
		count := func() int {
			b, err := APIRequests(ctx, s.MetricsURL(s.Books))
			if err != nil {
				t.Fatal(err)
			}
			i, err := APIRequests(ctx, s.MetricsURL(s.Issuer))
			if err != nil {
				t.Fatal(err)
			}
			return int(b + i)
		}
		before = count()
		all, err := booksDirect.ListAllBooks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return before, count(), len(all)
	}
	var recovery time.Duration
	// settle labels the requests sent from now on with phase, and waits
	// until every request sent before is answered, so each phase's
	// requests are answered under the conditions of that phase.
	settle := func(phase string) {
		t.Helper()
		at := time.Now()
		d.SetPhase(phase)
		if err := d.WaitStartedBefore(ctx, at); err != nil {
			t.Fatal(err)
		}
	}
	// fault runs one window: inject, count what reached the upstreams
	// while requests sent within the window were answered, undo, and time
	// the recovery.
	fault := func(name string, inject, undo func() error) {
		w := stats[name]
		settle("injecting")
		if err := inject(); err != nil {
			t.Fatal(err)
		}
		// A request checked just before the fault may still be on its
		// way upstream: that is not a request that slipped through.
		settle(name)
		_, r0, b0 := upstream()
		sleep(ctx, window)
		settle("undoing")
		r1, _, b1 := upstream()
		w.booksBefore, w.booksAfter = b0, b1
		w.reached = r1 - r0
		start := time.Now()
		if err := undo(); err != nil {
			t.Fatal(err)
		}
		d.SetPhase("recovering")
		tok := pop.token()
		if err := Retry(ctx, 30*time.Second, func() error {
			_, err := pop.gw.do(ctx, http.MethodGet, "/books?limit=1", nil, BearerHeader(tok.Raw), nil, http.StatusOK)
			return err
		}); err != nil {
			t.Fatalf("gateway did not recover after authz %s: %v", name, err)
		}
		rec := time.Since(start)
		recovery = max(recovery, rec)
		t.Logf("authz %s: recovered %v after it was back", name, rec.Round(time.Millisecond))
	}
	fault("killed", s.Authz.Kill, func() error { return s.Authz.Start(ctx) })
	d.SetPhase("recovered")
	sleep(ctx, 2*time.Second)
	if frozen {
		fault("frozen", s.Authz.Pause, s.Authz.Resume)
		d.SetPhase("thawed")
		sleep(ctx, 2*time.Second)
	}
	tally := d.Stop()
	t.Logf("tally:\n%s", tally)
	use.check(t)
	noCrashes(t, s)
	if s.Gateway.PID() != gatewayPID {
		t.Error("the gateway was restarted; recovery must not need it")
	}
	res := &authzResult{tally: tally, workers: d.Workers, window: window, recovery: recovery}
	mu.Lock()
	defer mu.Unlock()
	res.windows = append(res.windows, stats["killed"])
	if frozen {
		res.windows = append(res.windows, stats["frozen"])
	}
	for _, w := range res.windows {
		t.Logf("authz %s: %+v", w.name, *w)
	}
	return res
}
