package issuer

import (
	"net/http"
	"net/netip"
	"strings"
)

// DefaultTrustedProxies are DefaultConfig's TrustedProxies, the proxies
// whose X-Forwarded-For is believed: loopback, where `tollgate up` runs
// the gateway.
var DefaultTrustedProxies = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// DefaultTrustedHops is DefaultConfig's TrustedHops: one proxy, the
// gateway, appends to X-Forwarded-For in front of the issuer.
const DefaultTrustedHops = 1

// clientAddr returns the address of the client that sent r, for login
// throttling.
//
// The TCP peer is the client unless it is a trusted proxy. Behind one,
// X-Forwarded-For is read by position, never by content: each of the
// hops proxies in front of the issuer (Envoy with use_remote_address
// counts as one) appended the address it saw, so the client is the
// hops-th entry from the right, and whatever is left of it is what the
// client sent, ignored even when it names a trusted range. Skipping
// entries because they look like proxies would let a client in such a
// range (a private network, a VPN) pick its own address.
//
// A header with fewer entries than hops comes from a request that did
// not pass every proxy (an outer load balancer was bypassed): its
// right-most entry, written by the nearest proxy, is used. An entry in
// the part that proxies wrote that is not an address means the chain is
// not what the configuration says, and the peer is used.
func clientAddr(r *http.Request, trusted []netip.Prefix, hops int) netip.Addr {
	peer := parseHostAddr(r.RemoteAddr)
	if hops < 1 || !peer.IsValid() || !isTrusted(peer, trusted) {
		return peer
	}
	var xff []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		xff = append(xff, strings.Split(v, ",")...)
	}
	if len(xff) == 0 {
		return peer
	}
	i := len(xff) - hops
	if i < 0 {
		i = len(xff) - 1
	}
	var client netip.Addr
	for j, hop := range xff[i:] {
		a := parseHostAddr(strings.TrimSpace(hop))
		if !a.IsValid() {
			return peer
		}
		if j == 0 {
			client = a
		}
	}
	return client
}

// parseHostAddr parses "ip", "ip:port" or "[ip]:port", returning the zero
// Addr for anything else.
func parseHostAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap()
	}
	return netip.Addr{}
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// addrKey is the throttling key for a client address. An IPv6 client
// usually holds a whole /64, so it is throttled as one.
func addrKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
