package resilience

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/issuer"
)

// TestKeyRotation rotates the issuer's signing key under load: a new key
// file is added, it becomes the signing key after the activation delay,
// the old file is removed, and then the old key is withdrawn from the
// JWKS while tokens it signed are still unexpired (as after a leak).
//
// No valid token may be denied at any point, and no token of the
// withdrawn key may pass once the withdrawal had the refresh bound to
// reach authz. The withdrawal goes through the stack's JWKSProxy: the
// issuer alone keeps a removed key published until its tokens expired,
// so its own withdrawal could never show a verifier still trusting a
// withdrawn key (see JWKSProxy).
func TestKeyRotation(t *testing.T) {
	const ttl = time.Minute // the issuer's shortest
	rotations := pick(1, 2)
	s := StartStack(t, Config{Bin: tollgateBin(t), Dir: t.TempDir(), TokenTTL: ttl, WithdrawableJWKS: true})
	keys := &Keys{Bound: s.RefreshBound(), Leeway: s.Config.Leeway}
	pop := newPopulation(t, s, 6, keys)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	label := map[string]string{pop.admins().Kid: "key0"}
	kindOf := func(tok *Token) string {
		if keys.IsWithdrawn(tok.Kid) && time.Now().Before(tok.Exp) {
			return "withdrawn-live"
		}
		mu.Lock()
		defer mu.Unlock()
		if l, ok := label[tok.Kid]; ok {
			return l
		}
		return "unknown-kid"
	}
	// The last moment a live token of a withdrawn key was let through,
	// and the first it was refused, as seen by the client.
	var lastAllowed, firstDenied time.Time
	record := func(r Result) {
		mu.Lock()
		defer mu.Unlock()
		switch r.Outcome {
		case Allowed:
			if r.Sent.After(lastAllowed) {
				lastAllowed = r.Sent
			}
		case Denied:
			if firstDenied.IsZero() || r.Sent.Before(firstDenied) {
				firstDenied = r.Sent
			}
		}
	}

	d := &Driver{
		Workers:     pick(4, 8),
		MaxRequests: pick(300000, 3000000),
		Duration:    pick(90*time.Second, 15*time.Minute),
		Next: func(int) *Request {
			n := rand.IntN(100)
			switch {
			case n < 70:
				tok := pop.token()
				r := pop.tokenCheck(kindOf(tok), tok)
				if r.Kind == "withdrawn-live" {
					r.Done = record
				}
				return r
			case n < 80:
				return pop.adminCheck()
			default:
				return pop.attack(pop.admins().Kid)
			}
		},
	}
	loginErrors := 0
	go pop.refreshEvery(ctx, ttl/4, func(err error) {
		mu.Lock()
		loginErrors++
		mu.Unlock()
		t.Logf("refresh: %v", err)
	})
	use := sampleUsage(t, s)
	d.SetPhase("steady")
	d.Start(ctx)
	sleep(ctx, pick(2*time.Second, 10*time.Second))

	oldKid := pop.admins().Kid
	var withdrawals []time.Time
	for r := range rotations {
		d.SetPhase(fmt.Sprintf("publish%d", r+1))
		_, newKid, err := issuer.GenerateKeyFile(s.KeyDir, issuer.ES256)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		label[newKid] = fmt.Sprintf("key%d", r+1)
		mu.Unlock()
		added := time.Now()
		// Log in until the new key signs: after the activation delay.
		waitFor(t, "new key signs", s.Config.KeyActivationDelay+30*time.Second, func() bool {
			if err := pop.refresh(ctx); err != nil {
				t.Logf("refresh: %v", err)
			}
			return pop.admins().Kid == newKid
		})
		// The users logged in before the admin in the pass that saw the
		// switch may still hold old-key tokens: one more pass gives
		// everyone a token of the new key, so the scenario checks them.
		if err := pop.refresh(ctx); err != nil {
			t.Fatalf("log in after the switch: %v", err)
		}
		t.Logf("rotation %d: key %s signs %v after its file appeared", r+1, newKid, time.Since(added).Round(time.Millisecond))
		if time.Since(added) < s.Config.KeyActivationDelay {
			t.Errorf("key %s signed %v after it appeared, before the activation delay %v", newKid, time.Since(added), s.Config.KeyActivationDelay)
		}
		switched := time.Now()

		d.SetPhase(fmt.Sprintf("retire%d", r+1))
		if err := os.Remove(filepath.Join(s.KeyDir, oldKid+".pem")); err != nil {
			t.Fatal(err)
		}
		sleep(ctx, time.Second)

		d.SetPhase(fmt.Sprintf("withdraw%d", r+1))
		w := s.JWKS.Withdraw(oldKid)
		keys.Withdrawn(oldKid, w)
		withdrawals = append(withdrawals, w)
		// Tokens the old key signed last expire a TTL after the switch;
		// until then they keep coming, live, under a withdrawn key.
		sleep(ctx, time.Until(minTime(switched.Add(ttl+time.Second), w.Add(keys.Bound+pick(4*time.Second, 20*time.Second)))))
		oldKid = newKid
	}
	d.SetPhase("after")
	sleep(ctx, pick(time.Second, 5*time.Second))
	tally := d.Stop()
	cancel()
	t.Logf("tally:\n%s", tally)
	use.check(t)
	noCrashes(t, s)

	if n := tally.Wrong(Filter{}); n != 0 {
		t.Errorf("%d wrong decisions, want 0", n)
	}
	for _, o := range []Outcome{Shed, Failed, NoAnswer} {
		if n := tally.Count(Filter{}, ExpectAllow, o); n != 0 {
			t.Errorf("%d valid requests answered %s, want 0", n, o)
		}
	}
	// The scenario must have exercised what it claims.
	for r := 1; r <= rotations; r++ {
		if n := tally.Count(Filter{Kind: fmt.Sprintf("key%d", r)}, ExpectAllow, Allowed); n == 0 {
			t.Errorf("no token of key %d was checked", r)
		}
	}
	if tally.Count(Filter{Kind: "withdrawn-live"}, ExpectDeny, -1) == 0 {
		t.Errorf("no unexpired token of a withdrawn key was checked beyond the bound; the withdrawal was not tested")
	}
	if loginErrors > 0 {
		t.Errorf("%d logins failed during the rotation, want 0", loginErrors)
	}
	mu.Lock()
	if len(withdrawals) > 0 && !lastAllowed.IsZero() && !firstDenied.IsZero() {
		t.Logf("withdrawal reached authz within %v (bound %v); first refusal %v after it",
			lastAllowed.Sub(withdrawals[len(withdrawals)-1]).Round(time.Millisecond), keys.Bound,
			firstDenied.Sub(withdrawals[0]).Round(time.Millisecond))
	}
	mu.Unlock()
	report.Add(Row{
		Scenario:   fmt.Sprintf("Key rotation under load (%d rotation(s), old key withdrawn while its tokens live)", rotations),
		Workers:    d.Workers,
		Rate:       tally.Rate(),
		Duration:   tally.Elapsed,
		Requests:   tally.Requests(Filter{}),
		Wrong:      tally.Wrong(Filter{}),
		LostWrites: -1,
		Recovery:   -1,
		Command:    command("TestKeyRotation"),
		Failed:     t.Failed(),
	})
}
