package local

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testenv"
	"github.com/tollgate-dev/tollgate/issuer"
)

// clientFrom returns an HTTP client whose connections come from the
// loopback address ip, so the gateway sees a different client per
// address. Linux routes all of 127.0.0.0/8 to lo; elsewhere the test
// skips (or fails under TOLLGATE_REQUIRE_ALL=1).
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	local := &net.TCPAddr{IP: net.ParseIP(ip)}
	if l, err := net.ListenTCP("tcp", local); err != nil {
		testenv.Missing(t, fmt.Sprintf("cannot use %s as a client address (%v); this needs 127.0.0.0/8 on the loopback interface", ip, err))
	} else {
		l.Close()
	}
	d := &net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestLoginThrottleForgedForwardedFor logs in through the dev gateway
// running envoy/envoy.yaml, with the issuer's shipped trust settings,
// from clients on several loopback addresses. Like clients on a private
// network in a cluster (the chart trusts the private ranges), they are
// in the range the issuer trusts as proxies, and each sends an
// X-Forwarded-For (and an x-envoy-external-address) of its own choosing.
// The gateway appends the address it saw, as Envoy with
// use_remote_address does; the issuer must throttle by that address,
// whatever the client wrote.
func TestLoginThrottleForgedForwardedFor(t *testing.T) {
	// Two failures per (account, address), then an hour's wait: a third
	// failure from the same client is 429 however fast the machine.
	st := startStack(t, nil, func(c *issuer.Config) {
		c.Throttle.PairLimit, c.Throttle.BaseDelay = 2, time.Hour
	})
	base := st.GatewayURL()
	u := readUser(t)
	register, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/register",
		bytes.NewReader(fmt.Appendf(nil, `{"name":%q,"password":%q}`, u.Name, u.Password)))
	register.Header.Set("Content-Type", "application/json")
	resp, err := clientFrom(t, "127.0.0.1").Do(register)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /register = %d, want 201", resp.StatusCode)
	}

	const guesser = "127.0.0.7"
	for _, step := range []struct {
		name, from, xff, password string
		want                      int
	}{
		{"guess with a forged X-Forwarded-For", guesser, "198.51.100.1", "wrong-guess-1", 401},
		{"guess with another forged X-Forwarded-For", guesser, "198.51.100.2", "wrong-guess-2", 401},
		{"a third forged address does not buy a fresh budget", guesser, "198.51.100.3", "wrong-guess-3", 429},
		{"nor does a chain of trusted-looking addresses", guesser, "203.0.113.9, 10.0.0.1, 127.0.0.99", "wrong-guess-4", 429},
		{"nor an empty list entry", guesser, ", ", "wrong-guess-5", 429},
		{"another client keeps its own budget", "127.0.0.8", "", "wrong-guess-6", 401},
		{"a client naming the guesser's address keeps its own budget", "127.0.0.9", guesser, "wrong-guess-7", 401},
		{"the user logs in from elsewhere", "127.0.0.10", "", u.Password, 200},
	} {
		t.Run(step.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/login", nil)
			req.SetBasicAuth(u.Name, step.password)
			if step.xff != "" {
				req.Header.Set("X-Forwarded-For", step.xff)
				req.Header.Set("X-Envoy-External-Address", step.xff)
			}
			resp, err := clientFrom(t, step.from).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != step.want {
				t.Errorf("POST /login from %s with X-Forwarded-For %q = %d, want %d; body: %s", step.from, step.xff, resp.StatusCode, step.want, body)
			}
		})
	}
}
