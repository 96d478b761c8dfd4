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

// TestOverload pushes the stack past what the machine serves, twice: a
// flood of logins (each an argon2id hash, the most expensive request
// there is) and a flood of authorized book requests from many more
// concurrent clients than there are cores. Latency may grow; excess
// logins must be shed with 503 at once rather than queued; no valid
// token may be denied; no process may crash or grow its memory beyond a
// bound; and once the load stops, service must be as before.
func TestOverload(t *testing.T) {
	s := StartStack(t, Config{Bin: tollgateBin(t), Dir: t.TempDir(), TokenTTL: 30 * time.Minute})
	keys := &Keys{Bound: s.RefreshBound(), Leeway: s.Config.Leeway}
	pop := newPopulation(t, s, 8, keys)
	ctx := context.Background()
	flood := pick(5*time.Second, 30*time.Second)
	loginWorkers, bookWorkers := pick(32, 64), pick(64, 256)

	steady := func(kind string) *Request {
		if kind == "login" {
			u := pop.victim()
			return &Request{Kind: "login", HTTP: pop.gw.LoginRequest(u)}
		}
		tok := pop.token()
		return pop.tokenCheck("check", tok)
	}
	normal := func(phase string) *Tally {
		d := &Driver{Workers: 2, Duration: 3 * time.Second, Next: func(int) *Request {
			if rand.IntN(10) == 0 {
				return steady("login")
			}
			return steady("check")
		}}
		d.SetPhase(phase)
		d.Start(ctx)
		return d.Wait()
	}
	base := normal("baseline")
	t.Logf("baseline:\n%s", base)

	// peaks samples every process's RSS while f runs.
	peaks := func(f func()) map[*Proc]int64 {
		out := map[*Proc]int64{}
		var mu sync.Mutex
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			tk := time.NewTicker(100 * time.Millisecond)
			defer tk.Stop()
			for {
				for _, p := range s.Procs() {
					if rss, err := p.RSS(); err == nil {
						mu.Lock()
						out[p] = max(out[p], rss)
						mu.Unlock()
					}
				}
				select {
				case <-stop:
					return
				case <-tk.C:
				}
			}
		})
		f()
		close(stop)
		wg.Wait()
		return out
	}
	before := map[*Proc]int64{}
	for _, p := range s.Procs() {
		rss, err := p.RSS()
		if err != nil {
			t.Fatal(err)
		}
		before[p] = rss
	}
	use := sampleUsage(t, s)

	var logins, books *Tally
	loginPeak := peaks(func() {
		d := &Driver{Workers: loginWorkers, Duration: flood, MaxRequests: 1000000, Next: func(int) *Request { return steady("login") }}
		d.SetPhase("login-flood")
		d.Start(ctx)
		logins = d.Wait()
	})
	t.Logf("login flood:\n%s", logins)
	var seq int
	var seqMu sync.Mutex
	bookPeak := peaks(func() {
		d := &Driver{Workers: bookWorkers, Duration: flood, MaxRequests: 5000000, Next: func(int) *Request {
			if rand.IntN(5) > 0 {
				return steady("check")
			}
			u := pop.victim()
			tok := pop.tokenOf(u)
			seqMu.Lock()
			seq++
			b := NewBookInput(seq)
			seqMu.Unlock()
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/books", jsonBody(b))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok.Raw)
			return &Request{Kind: "write", HTTP: req, Expect: func(sent, done time.Time) Expect { return keys.Expect(tok, sent, done) }}
		}}
		d.SetPhase("request-flood")
		d.Start(ctx)
		books = d.Wait()
	})
	t.Logf("request flood:\n%s", books)

	stopped := time.Now()
	u := pop.victim()
	tok := pop.tokenOf(u)
	if err := Retry(ctx, 30*time.Second, func() error {
		if _, err := pop.gw.Login(ctx, u); err != nil {
			return err
		}
		_, err := pop.gw.do(ctx, http.MethodGet, "/books?limit=1", nil, BearerHeader(tok.Raw), nil, http.StatusOK)
		return err
	}); err != nil {
		t.Fatalf("no normal service after the load: %v", err)
	}
	recovery := time.Since(stopped)
	after := normal("after")
	t.Logf("after:\n%s", after)
	use.check(t)
	noCrashes(t, s)

	for _, tl := range []*Tally{base, logins, books, after} {
		if n := tl.Wrong(Filter{}); n != 0 {
			t.Errorf("%d wrong decisions, want 0:\n%s", n, tl)
		}
		for _, o := range []Outcome{Failed, NoAnswer} {
			if n := tl.Count(Filter{}, -1, o); n != 0 {
				t.Errorf("%d answers %s, want 0", n, o)
			}
		}
	}
	if n := logins.Count(Filter{}, -1, Shed); n == 0 {
		t.Errorf("login flood of %d workers: nothing was shed; the hash limit did not hold", loginWorkers)
	}
	if logins.Count(Filter{}, -1, Allowed) == 0 {
		t.Error("login flood: no login succeeded; shedding must keep serving what fits")
	}
	for name, tl := range map[string]*Tally{"baseline": base, "after": after} {
		if all, ok := tl.Requests(Filter{}), tl.Count(Filter{}, -1, Allowed); ok != all {
			t.Errorf("%s: %d of %d requests succeeded, want all", name, ok, all)
		}
	}
	// Memory: argon2id holds its memory cost per hash in flight, and the
	// hashes in flight are bounded; nothing else grows with load.
	const mib = 1 << 20
	argon2 := int64(s.Config.MaxConcurrentHashes) * 19 * mib
	for _, p := range s.Procs() {
		limit := before[p] + 256*mib
		if p == s.Issuer {
			limit += 2 * argon2
		}
		peak := max(loginPeak[p], bookPeak[p])
		t.Logf("%s: RSS %d MiB before, peak %d MiB in the login flood, %d MiB in the request flood (limit %d MiB)",
			p.Name, before[p]/mib, loginPeak[p]/mib, bookPeak[p]/mib, limit/mib)
		if peak > limit {
			t.Errorf("%s RSS peaked at %d MiB, over %d MiB", p.Name, peak/mib, limit/mib)
		}
	}
	t.Logf("latency p50/p99: check %v/%v before, %v/%v under %d workers, %v/%v after; login %v/%v before, %v/%v under %d workers; %d of %d logins shed",
		base.Percentile("check", 50), base.Percentile("check", 99),
		books.Percentile("check", 50), books.Percentile("check", 99), bookWorkers,
		after.Percentile("check", 50), after.Percentile("check", 99),
		base.Percentile("login", 50), base.Percentile("login", 99),
		logins.Percentile("login", 50), logins.Percentile("login", 99), loginWorkers,
		logins.Count(Filter{}, -1, Shed), logins.Requests(Filter{}))

	total := 0
	wrong := 0
	var elapsed time.Duration
	for _, tl := range []*Tally{base, logins, books, after} {
		total += tl.Requests(Filter{})
		wrong += tl.Wrong(Filter{})
		elapsed += tl.Elapsed
	}
	report.Add(Row{
		Scenario: fmt.Sprintf("Overload: login flood (%d workers, %d%% shed with 503), then book requests from %d workers (p99 %v, was %v)",
			loginWorkers, 100*logins.Count(Filter{}, -1, Shed)/max(1, logins.Requests(Filter{})), bookWorkers,
			books.Percentile("check", 99).Round(time.Millisecond), base.Percentile("check", 99).Round(time.Millisecond)),
		Workers:    bookWorkers,
		Rate:       float64(total) / elapsed.Seconds(),
		Duration:   elapsed,
		Requests:   total,
		Wrong:      wrong,
		LostWrites: -1,
		Recovery:   recovery,
		Command:    command("TestOverload"),
		Failed:     t.Failed(),
	})
}
