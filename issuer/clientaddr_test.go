package issuer

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"direct", "192.0.2.1:1234", nil, "192.0.2.1"},
		{"direct ignores XFF", "192.0.2.1:1234", []string{"198.51.100.1"}, "192.0.2.1"},
		{"trusted proxy", "127.0.0.1:1", []string{"198.51.100.1"}, "198.51.100.1"},
		{"trusted proxy, no XFF", "127.0.0.1:1", nil, "127.0.0.1"},
		{"client-supplied entries left of the proxy's are ignored", "127.0.0.1:1", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"chain of trusted proxies", "127.0.0.1:1", []string{"198.51.100.1, 10.1.2.3"}, "198.51.100.1"},
		{"several header lines", "127.0.0.1:1", []string{"6.6.6.6", "198.51.100.1, 10.1.2.3"}, "198.51.100.1"},
		{"malformed entry stops at the last trusted hop", "127.0.0.1:1", []string{"198.51.100.1, garbage"}, "127.0.0.1"},
		{"entry with port", "127.0.0.1:1", []string{"198.51.100.1:5555"}, "198.51.100.1"},
		{"IPv6 entry", "[::1]:1", []string{"2001:db8::1"}, "2001:db8::1"},
		{"all trusted", "127.0.0.1:1", []string{"10.0.0.1"}, "10.0.0.1"},
		{"4in6 peer", "[::ffff:192.0.2.1]:1", nil, "192.0.2.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/login", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientAddr(r, trusted); got.String() != tc.want {
				t.Errorf("clientAddr(%s, XFF %q) = %s, want %s", tc.remote, tc.xff, got, tc.want)
			}
		})
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
