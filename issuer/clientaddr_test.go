package issuer

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddr(t *testing.T) {
	// The chart's trust: the private ranges, where the gateway pods are,
	// and loopback. Clients in those ranges are the case that matters: a
	// rule that skipped trusted-looking entries would let them choose.
	trusted := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("::1/128"),
	}
	for _, tc := range []struct {
		name, remote string
		hops         int
		xff          []string
		want         string
	}{
		// Straight from the client: the header is the client's own.
		{"direct", "192.0.2.1:1234", 1, nil, "192.0.2.1"},
		{"direct ignores XFF", "192.0.2.1:1234", 1, []string{"198.51.100.1"}, "192.0.2.1"},
		{"direct from an untrusted private address ignores XFF", "172.16.7.7:1234", 1, []string{"198.51.100.1"}, "172.16.7.7"},
		{"unparsable peer", "@", 1, []string{"198.51.100.1"}, "invalid IP"},

		// Behind the gateway (one hop): the entry it appended.
		{"gateway", "10.0.0.5:1", 1, []string{"198.51.100.1"}, "198.51.100.1"},
		{"gateway, no XFF", "10.0.0.5:1", 1, nil, "10.0.0.5"},
		{"client-sent entries left of the gateway's are ignored", "10.0.0.5:1", 1, []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"private client forging XFF keeps its own address", "10.0.0.5:1", 1, []string{"198.51.100.77, 10.1.2.3"}, "10.1.2.3"},
		{"private client forging a trusted-looking chain", "10.0.0.5:1", 1, []string{"203.0.113.9, 10.9.9.9, 192.168.1.1, 10.1.2.3"}, "10.1.2.3"},
		{"VPN client forging loopback", "10.0.0.5:1", 1, []string{"127.0.0.1,192.168.50.3"}, "192.168.50.3"},
		{"several header lines are one list", "10.0.0.5:1", 1, []string{"6.6.6.6", "198.51.100.1"}, "198.51.100.1"},
		{"entry with a port", "10.0.0.5:1", 1, []string{"198.51.100.1:5555"}, "198.51.100.1"},
		{"IPv6 entry", "[::1]:1", 1, []string{"2001:db8::1"}, "2001:db8::1"},
		{"bracketed IPv6 entry with a port", "[::1]:1", 1, []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"4in6 entry", "10.0.0.5:1", 1, []string{"::ffff:198.51.100.1"}, "198.51.100.1"},
		{"4in6 peer", "[::ffff:192.0.2.1]:1", 1, nil, "192.0.2.1"},
		{"spaces and tabs around entries", "10.0.0.5:1", 1, []string{" 6.6.6.6 ,\t198.51.100.1 "}, "198.51.100.1"},
		{"malformed entry the gateway would have written: the peer", "10.0.0.5:1", 1, []string{"198.51.100.1, garbage"}, "10.0.0.5"},
		{"empty header: the peer", "10.0.0.5:1", 1, []string{""}, "10.0.0.5"},
		{"malformed client-sent entries do not matter", "10.0.0.5:1", 1, []string{"garbage, , 198.51.100.1"}, "198.51.100.1"},
		{"zone in an entry is refused", "10.0.0.5:1", 1, []string{"fe80::1%eth0"}, "10.0.0.5"},

		// Behind a load balancer that appends, then the gateway (two hops).
		{"load balancer and gateway", "10.0.0.5:1", 2, []string{"198.51.100.1, 10.2.0.9"}, "198.51.100.1"},
		{"load balancer and gateway, client forged entries", "10.0.0.5:1", 2, []string{"6.6.6.6, 10.3.3.3, 198.51.100.1, 10.2.0.9"}, "198.51.100.1"},
		{"load balancer bypassed: the gateway's entry", "10.0.0.5:1", 2, []string{"10.4.4.4"}, "10.4.4.4"},
		{"malformed load balancer entry: the peer", "10.0.0.5:1", 2, []string{"unknown, 10.2.0.9"}, "10.0.0.5"},
		{"malformed gateway entry: the peer", "10.0.0.5:1", 2, []string{"198.51.100.1, unknown"}, "10.0.0.5"},
		{"two outer proxies bypassed, forged entry: the gateway's entry", "10.0.0.5:1", 3, []string{"6.6.6.6, 10.4.4.4"}, "10.4.4.4"},
		{"three hops", "10.0.0.5:1", 3, []string{"6.6.6.6, 198.51.100.1, 203.0.113.1, 10.2.0.9"}, "198.51.100.1"},

		{"no hops: XFF never read", "10.0.0.5:1", 0, []string{"198.51.100.1"}, "10.0.0.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/login", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientAddr(r, trusted, tc.hops); got.String() != tc.want {
				t.Errorf("clientAddr(%s, %d hops, XFF %q) = %s, want %s", tc.remote, tc.hops, tc.xff, got, tc.want)
			}
		})
	}
}

func TestClientAddrNoTrustedProxies(t *testing.T) {
	r := httptest.NewRequest("POST", "/login", nil)
	r.RemoteAddr = "127.0.0.1:1"
	r.Header.Set("X-Forwarded-For", "198.51.100.1")
	if got := clientAddr(r, []netip.Prefix{}, 1); got.String() != "127.0.0.1" {
		t.Errorf("clientAddr(127.0.0.1, no trusted proxies, XFF 198.51.100.1) = %s, want 127.0.0.1", got)
	}
}

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":            "192.0.2.1",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"invalid":              "unknown",
	} {
		a, _ := netip.ParseAddr(in)
		if got := addrKey(a); got != want {
			t.Errorf("addrKey(%s) = %s, want %s", in, got, want)
		}
	}
}

// FuzzClientAddr: whatever a client puts in X-Forwarded-For, clientAddr
// never panics, and from a trusted proxy it answers the peer or one of
// the last hops entries, never one further left (which only the client
// wrote).
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"198.51.100.1", "6.6.6.6, 10.1.2.3", "", ",", ", ,", "[::1]:80, 2001:db8::1", "a,b,c,d", "::ffff:1.2.3.4", "fe80::1%eth0"} {
		f.Add(s, 1)
		f.Add(s, 2)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, xff string, hops int) {
		if hops < 1 || hops > 64 {
			return // Config refuses < 1
		}
		r := httptest.NewRequest("POST", "/login", nil)
		r.RemoteAddr = "10.0.0.5:1"
		r.Header.Set("X-Forwarded-For", xff)
		got := clientAddr(r, trusted, hops)
		if got == netip.MustParseAddr("10.0.0.5") {
			return
		}
		entries := strings.Split(xff, ",")
		for _, e := range entries[max(len(entries)-hops, 0):] {
			if parseHostAddr(strings.TrimSpace(e)) == got {
				return
			}
		}
		t.Errorf("clientAddr(XFF %q, %d hops) = %s, not the peer nor one of the last %d entries", xff, hops, got, hops)
	})
}
